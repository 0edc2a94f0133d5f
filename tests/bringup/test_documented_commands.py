"""Every command in docs/bringup.md is run by a test: weld-scan lines here (as dry runs, --print),
ros2 launch lines by parsing their arguments with the graph (no ROS install here), docker lines
against the Dockerfiles, and ``scripts/demo --quick`` by test_demo.py."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from weld_bringup import graph

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'bringup.md'


def documented_commands() -> list[str]:
    blocks = re.findall(r'```bash\n(.*?)```', DOC.read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_weld_scan_commands_resolve_to_the_graph(repo_root: Path) -> None:
    lines = [line for line in documented_commands() if 'weld-scan' in line]
    assert len(lines) >= 2
    for line in lines:
        tokens = shlex.split(line)
        env = dict(os.environ)
        while '=' in tokens[0] and not tokens[0].startswith(('.', '/')):
            name, _, value = tokens.pop(0).partition('=')
            env[name] = value
        assert tokens[0] == '.venv/bin/weld-scan'
        arguments = [token for token in tokens[1:] if token != '--print']
        run = subprocess.run(
            [sys.executable, '-m', 'weld_bringup', '--print', *arguments],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, f'{line}: {run.stderr}'
        assert run.stdout.count('--ros-args') >= 1


def test_ros2_launch_commands_use_declared_arguments() -> None:
    lines = [line for line in documented_commands() if line.startswith('ros2 launch')]
    assert lines
    for line in lines:
        tokens = shlex.split(line)
        assert tokens[:4] == ['ros2', 'launch', graph.PACKAGE, 'scan.launch.py']
        graph.parse_arguments(tokens[4:])


def test_docker_commands_name_the_dockerfiles(repo_root: Path) -> None:
    lines = [line for line in documented_commands() if line.startswith('docker build')]
    assert len(lines) == 2
    for line in lines:
        tokens = shlex.split(line)
        assert (repo_root / tokens[tokens.index('-f') + 1]).is_file()
        assert tokens[-1] == '.'


def test_demo_commands_exist_and_the_script_answers(repo_root: Path) -> None:
    lines = [line for line in documented_commands() if line.startswith('./scripts/demo')]
    assert './scripts/demo' in lines
    assert any(line.startswith('./scripts/demo --quick') for line in lines)
    # the full and quick loops themselves: test_demo.py runs ./scripts/demo --quick end to end
    help_run = subprocess.run(
        ['./scripts/demo', '--help'], cwd=repo_root, capture_output=True, text=True, check=False
    )
    assert help_run.returncode == 0, help_run.stderr
    for line in lines:
        for option in [token for token in shlex.split(line)[1:] if token.startswith('--')]:
            assert option in help_run.stdout, f'{line}: {option} is not an option of scripts/demo'
