"""The node's parameters, its default parameters file and its README table say the same thing."""

import re
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import ParameterType

from weld_inference.inference_node import NODE_NAME, parameter_declarations

PACKAGE = Path(__file__).resolve().parents[2] / 'ros2_ws' / 'src' / 'weld_inference'

UNITS = ('_dir', '_topic', '_s', '_ms', '_hz', '_threads', '_names', '_transport', '_reliable', '_pair')


def test_every_parameter_has_a_described_type_and_a_unit_or_kind_in_its_name() -> None:
    names = set()
    for name, default, descriptor in parameter_declarations():
        assert name not in names, f'{name} declared twice'
        names.add(name)
        assert descriptor.type != ParameterType.PARAMETER_NOT_SET and descriptor.description
        assert descriptor.read_only
        assert name.endswith(UNITS), name
        if descriptor.floating_point_range:
            span = descriptor.floating_point_range[0]
            assert span.from_value <= default <= span.to_value, name
        if descriptor.integer_range:
            span = descriptor.integer_range[0]
            assert span.from_value <= default <= span.to_value, name


def test_params_file_holds_every_default() -> None:
    config = yaml.safe_load((PACKAGE / 'config' / 'weld_inference.yaml').read_text())
    values = config[NODE_NAME]['ros__parameters']
    declared = {name: default for name, default, _ in parameter_declarations()}
    assert values == declared


def test_readme_table_lists_every_parameter() -> None:
    readme = (PACKAGE / 'README.md').read_text()
    listed = set(re.findall(r'^\| `([a-z_]+)` \|', readme, flags=re.MULTILINE))
    assert listed == {name for name, _, _ in parameter_declarations()}


@pytest.mark.ros
def test_a_bad_parameter_stops_the_node_with_one_clear_line(spawn_node, tmp_path: Path) -> None:
    for override, expected in (
        ('max_rate_hz:=-1.0', 'max_rate_hz'),
        ('image_transport:=jpeg', "image_transport must be 'raw' or 'compressed'"),
        ("class_names:=['good','good']", 'repeats a name'),
    ):
        node = spawn_node(
            [
                '-m',
                'weld_inference.inference_node',
                '--ros-args',
                '-p',
                f'models_dir:={tmp_path}',
                '-p',
                override,
            ]
        )
        node.process.wait(timeout=60)
        assert node.process.returncode == 2, node.output
        assert 'weld_inference: cannot start' in node.output and expected in node.output, node.output
        assert 'Traceback' not in node.output
