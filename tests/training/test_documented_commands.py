"""Every `weld-train` line of the README and docs/training.md parses with that command's own parser."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from training.cli import COMMANDS
from training.config import config_arguments

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / 'README.md', REPO / 'docs' / 'training.md')


def documented(path: Path) -> list[str]:
    blocks = re.findall(r'```bash\n(.*?)```', path.read_text(), re.DOTALL)
    lines = [line.split('#')[0].strip() for block in blocks for line in block.splitlines()]
    return [
        line for line in lines if 'weld-train' in line.split()[:1] or line.startswith('.venv/bin/weld-train')
    ]


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_documented_weld_train_lines_parse(doc: Path) -> None:
    lines = documented(doc)
    if doc.name == 'training.md':
        assert len(lines) >= 7
    for line in lines:
        tokens = shlex.split(line)[1:]
        assert tokens and tokens[0] in COMMANDS, line
        parser = importlib.import_module(f'training.{tokens[0]}').build_parser()
        try:
            parser.parse_args(config_arguments(tokens[1:]))
        except SystemExit as exc:
            raise AssertionError(f'{doc.name}: {line!r} does not parse') from exc
