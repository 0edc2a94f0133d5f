"""The console's README documents every declared parameter and its default."""

from pathlib import Path

from weld_console.console_node import PARAMETERS

README = Path(__file__).resolve().parents[2] / 'ros2_ws' / 'src' / 'weld_console' / 'README.md'


def test_readme_lists_every_parameter_with_its_default() -> None:
    text = README.read_text()
    for name, (default, _) in PARAMETERS.items():
        assert f'| `{name}` | `{default}` |' in text, f'{name} missing from the README table'
