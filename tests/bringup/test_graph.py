"""graph.py: the one declared node list, launch arguments, overrides and params-file layering."""

from pathlib import Path

import pytest
import yaml

from weld_bringup import graph
from weld_bringup.runner import node_command, overrides_yaml
from weld_core.ros_env import DOMAIN_RANGE, exclusive_domain


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    for spec in graph.NODES:
        (tmp_path / spec.config).write_text(yaml.safe_dump({spec.name: {'ros__parameters': {}}}))
    return tmp_path


def test_defaults_start_every_node_with_its_site_config_and_no_overrides(config_dir: Path) -> None:
    launches = graph.resolve({}, config_dir)
    assert [launch.spec.key for launch in launches] == ['camera', 'labeler', 'inference', 'console']
    assert [launch.spec.name for launch in launches] == [
        'weld_camera',
        'weld_labeler',
        'weld_inference',
        'weld_console',
    ]
    for launch in launches:
        assert launch.params_files == (config_dir / launch.spec.config,)
        assert launch.overrides == {}


def test_each_argument_overrides_its_parameters_and_folders_stay_shared(config_dir: Path) -> None:
    arguments = {
        'source': 'replay',
        'models_dir': '/tmp/m',
        'recording_dir': '/tmp/s',
        'console_host': '0.0.0.0',
    }
    by_key = {launch.spec.key: launch for launch in graph.resolve(arguments, config_dir)}
    assert by_key['camera'].overrides == {'source': 'replay'}
    assert by_key['inference'].overrides == {'models_dir': '/tmp/m'}
    assert by_key['labeler'].overrides == {'recording_dir': '/tmp/s'}
    # the console manages the inference node's models folder and reads the labeler's sessions
    assert by_key['console'].overrides == {
        'models_dir': '/tmp/m',
        'recording_dir': '/tmp/s',
        'host': '0.0.0.0',
    }


def test_node_selection_keeps_graph_order_and_rejects_unknown_or_empty(config_dir: Path) -> None:
    launches = graph.resolve({'nodes': 'inference, camera'}, config_dir)
    assert [launch.spec.key for launch in launches] == ['camera', 'inference']
    with pytest.raises(graph.BringupError, match="unknown node 'lidar'"):
        graph.resolve({'nodes': 'camera,lidar'}, config_dir)
    with pytest.raises(graph.BringupError, match='selects no node'):
        graph.resolve({'nodes': ' , '}, config_dir)


def test_params_file_layer_comes_after_the_site_config(config_dir: Path, tmp_path: Path) -> None:
    layer = tmp_path / 'layer.yaml'
    layer.write_text('weld_camera:\n  ros__parameters:\n    rate_hz: 5.0\n')
    for launch in graph.resolve({'params_file': str(layer)}, config_dir):
        assert launch.params_files == (config_dir / launch.spec.config, layer)
    with pytest.raises(graph.BringupError, match='is not a file'):
        graph.resolve({'params_file': str(tmp_path / 'missing.yaml')}, config_dir)


def test_missing_site_config_is_a_clear_error(config_dir: Path) -> None:
    (config_dir / 'labeler.yaml').unlink()
    with pytest.raises(
        graph.BringupError, match=r'site config .*labeler\.yaml for node weld_labeler is missing'
    ):
        graph.resolve({}, config_dir)
    assert [launch.spec.key for launch in graph.resolve({'nodes': 'camera'}, config_dir)] == ['camera']


@pytest.mark.parametrize(
    ('tokens', 'message'),
    [
        (['source=sim'], 'name:=value'),
        ([':=sim'], 'name:=value'),
        (['camera_source:=sim'], 'unknown launch argument'),
    ],
)
def test_bad_argument_tokens_are_refused(tokens: list[str], message: str) -> None:
    with pytest.raises(graph.BringupError, match=message):
        graph.parse_arguments(tokens)


def test_every_launch_argument_targets_a_declared_node() -> None:
    names = [arg.name for arg in graph.LAUNCH_ARGS]
    assert len(names) == len(set(names))
    for arg in graph.LAUNCH_ARGS:
        assert (arg.node is None) == (arg.parameter is None), arg
        for node, _parameter in arg.targets():
            graph.node_spec(node)


def test_runner_command_layers_site_config_then_overrides(config_dir: Path, tmp_path: Path) -> None:
    (launch,) = graph.resolve({'nodes': 'camera', 'source': '0042'}, config_dir)
    overrides_file = tmp_path / 'o.yaml'
    overrides_file.write_text(overrides_yaml(launch))
    command = node_command(launch, overrides_file, python='py')
    assert command == [
        'py', '-m', 'weld_camera.camera_node', '--ros-args', '-r', '__node:=weld_camera',
        '--params-file', str(config_dir / 'camera.yaml'), '--params-file', str(overrides_file),
    ]  # fmt: skip
    # a launch argument is text: '0042' must stay a string, not become the integer 42
    assert yaml.safe_load(overrides_file.read_text()) == {
        'weld_camera': {'ros__parameters': {'source': '0042'}}
    }


def test_site_configs_are_keyed_by_the_node_names_of_the_graph() -> None:
    folder = graph.source_config_dir()
    for spec in graph.NODES:
        path = folder / spec.config
        if not path.is_file():
            pytest.fail(f'{path} is missing')
        content = yaml.safe_load(path.read_text())
        assert list(content) == [spec.name], path
        assert isinstance(content[spec.name]['ros__parameters'], dict), path


def test_exclusive_domains_are_distinct_and_a_free_preferred_id_is_honoured() -> None:
    with exclusive_domain() as first, exclusive_domain(preferred=first) as second:
        assert first != second
        assert first in DOMAIN_RANGE and second in DOMAIN_RANGE
    with exclusive_domain(preferred=first) as again:
        assert again == first
