"""The board image runs the workspace on ROS 2 Humble's Python 3.10 (Ubuntu 22.04), not this venv's 3.11.

This checks the syntax only (ast with feature_version 3.10), not library names that are new in 3.11.
"""

import ast
from pathlib import Path

import pytest

WORKSPACE = Path(__file__).resolve().parents[2] / 'ros2_ws' / 'src'
SOURCES = sorted(path for path in WORKSPACE.glob('*/**/*.py') if 'build' not in path.parts)


@pytest.mark.parametrize('path', SOURCES, ids=lambda path: str(path.relative_to(WORKSPACE)))
def test_workspace_sources_parse_as_python_3_10(path: Path) -> None:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
