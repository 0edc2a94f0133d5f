"""Every command in docs/board.md is checked here: board-setup lines run as dry runs, weld-deploy lines
parse with its own parser, the board profile and soak lines name scripts that exist and answer --help;
the systemctl / journalctl lines name the unit board-setup installs."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from weld_inference.deploy.__main__ import build_parser

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / 'docs' / 'board.md'


def documented_commands() -> list[str]:
    blocks = re.findall(r'```bash\n(.*?)```', DOC.read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_documented_command_is_of_a_checked_kind() -> None:
    commands = documented_commands()
    assert len(commands) >= 10
    for line in commands:
        tokens = shlex.split(line)
        if tokens[0] == 'sudo':
            tokens = tokens[1:]
        if tokens[0] == 'scripts/board-setup':
            done = subprocess.run(
                [str(REPO / tokens[0]), *tokens[1:], '--dry-run'], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, f'{line}: {done.stderr}'
        elif tokens[0] == '.venv/bin/weld-deploy':
            build_parser().parse_args(tokens[1:])
        elif tokens[0] == 'scripts/board-profile':
            assert (REPO / tokens[0]).stat().st_mode & 0o111
        elif tokens[0].endswith('/bin/python') and tokens[1].startswith('bench/'):
            done = subprocess.run(
                [sys.executable, str(REPO / tokens[1]), '--help'], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stderr
            assert all(option in done.stdout for option in tokens[2:] if option.startswith('--'))
        elif tokens[0] in ('systemctl', 'journalctl'):
            assert 'weldvision' in tokens, f'{line}: not the unit board-setup installs'
        else:
            raise AssertionError(f'docs/board.md command of no checked kind: {line}')
