"""docker/: the board and training images cannot be built here (no Docker engine), so they are linted:
instructions parse, every COPY source exists and survives the image's .dockerignore, the commands
they run name files and entry points that exist."""

import fnmatch
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / 'docker'
IMAGES = ['board', 'train']
INSTRUCTIONS = {
    'FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR',
    'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL',
}  # fmt: skip


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ''
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith('#')):
            continue
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        joined.append(pending + stripped)
        pending = ''
    if pending:
        pytest.fail(f'{path.name}: the last instruction ends with a line continuation')
    parsed = []
    for entry in joined:
        keyword, _, arguments = entry.partition(' ')
        parsed.append((keyword.upper(), arguments.strip()))
    return parsed


def included(relative: str, ignore_file: Path) -> bool:
    """Whether a context path survives a .dockerignore (last matching pattern wins, as Docker does)."""
    keep = True
    for raw in ignore_file.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith('#'):
            continue
        negate = pattern.startswith('!')
        pattern = pattern.lstrip('!').rstrip('/')
        parts = relative.split('/')
        prefixes = ['/'.join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes) or fnmatch.fnmatch(
            relative, pattern.replace('**/', '*')
        ):
            keep = negate
    return keep


@pytest.mark.parametrize('image', IMAGES)
def test_dockerfile_parses_and_starts_from_a_base(image: str) -> None:
    parsed = instructions(DOCKER / f'{image}.Dockerfile')
    assert {keyword for keyword, _ in parsed} <= INSTRUCTIONS
    first = next(keyword for keyword, _ in parsed if keyword != 'ARG')
    assert first == 'FROM'
    for keyword, arguments in parsed:
        if keyword in ('CMD', 'ENTRYPOINT', 'SHELL'):
            assert isinstance(json.loads(arguments), list), (
                f'{keyword} {arguments} is not the exec (JSON) form'
            )


@pytest.mark.parametrize('image', IMAGES)
def test_every_copy_source_exists_and_is_in_the_build_context(image: str) -> None:
    ignore_file = DOCKER / f'{image}.Dockerfile.dockerignore'
    assert ignore_file.is_file(), 'without it the context would carry .venv and data'
    copies = [
        args for keyword, args in instructions(DOCKER / f'{image}.Dockerfile') if keyword in ('COPY', 'ADD')
    ]
    assert copies
    for arguments in copies:
        *sources, _ = [token for token in shlex.split(arguments) if not token.startswith('--')]
        for source in sources:
            assert (REPO / source).exists(), f'{image}: COPY {source} does not exist'
            assert included(source, ignore_file), f'{image}: COPY {source} is excluded by {ignore_file.name}'
    assert not included('.venv/bin/python', ignore_file)
    assert not included('runs/demo-1/models/model.onnx', ignore_file)


def test_board_image_builds_the_workspace_and_launches_the_graph() -> None:
    parsed = instructions(DOCKER / 'board.Dockerfile')
    text = ' '.join(arguments for _, arguments in parsed)
    assert parsed[0] == ('FROM', 'ros:humble-ros-base')
    assert 'colcon build' in text
    cmd = json.loads(dict(parsed)['CMD'])
    assert cmd[:3] == ['ros2', 'launch', 'weld_bringup']
    assert (REPO / 'ros2_ws/src/weld_bringup/launch' / cmd[3]).is_file()
    assert re.search(
        r'^onnxruntime==', (REPO / 'requirements/board-pip-nodeps.txt').read_text(), re.MULTILINE
    )
    assert 'rosdep install' in text and '--no-deps -r /tmp/requirements/board-pip-nodeps.txt' in text
    assert dict(parsed)['USER'] != 'root', 'the graph runs as a service user'
    params = [arg for arg in cmd if arg.startswith('params_file:=')]
    assert params and Path(params[0].split(':=', 1)[1]).name.startswith('board_'), 'a real camera layer'
    assert (REPO / 'ros2_ws/src/weld_bringup/config' / Path(params[0].split(':=', 1)[1]).name).is_file()
    entrypoint = DOCKER / 'board-entrypoint.sh'
    assert subprocess.run(['bash', '-n', str(entrypoint)], check=False).returncode == 0
    assert entrypoint.stat().st_mode & 0o111, 'the entrypoint must be executable'


def test_training_image_installs_pinned_libraries_that_exist_in_requirements() -> None:
    parsed = instructions(DOCKER / 'train.Dockerfile')
    run = next(arguments for keyword, arguments in parsed if keyword == 'RUN' and 'grep' in arguments)
    pattern = re.search(r"grep -E '([^']+)'", run)
    assert pattern is not None
    names = re.search(r'\(([^)]+)\)', pattern.group(1))
    assert names is not None
    ros_requirements = (REPO / 'requirements/ros.txt').read_text().splitlines()
    for name in names.group(1).split('|'):
        assert any(line.startswith(f'{name}==') for line in ros_requirements), (
            f'{name} is not pinned in ros.txt'
        )
    cmd = json.loads(dict(parsed)['CMD'])
    assert cmd[:2] == ['python', '-m']
    module = cmd[2].replace('.', '/')
    assert (REPO / f'{module}.py').is_file() or (REPO / module / '__main__.py').is_file(), cmd
