"""scan.launch.py (ROS installs) and weld-scan (pip world) start the same graph.

``launch``/``launch_ros`` are not installable here, so the launch file is checked two ways:
its syntax tree (it takes every node, argument and config from weld_bringup.graph and names no node
itself), and an execution against recording stand-ins for the five launch classes it uses, whose
recorded Node() calls are compared with the runner's command lines for the same arguments. The
stand-ins record calls and nothing more; they prove agreement of our code, not launch's behaviour.
"""

import ast
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from weld_bringup import graph
from weld_bringup.runner import GraphRunner

LAUNCH_FILE = Path(graph.__file__).resolve().parents[1] / 'launch' / 'scan.launch.py'
LAUNCH_CLASSES = {
    'launch': ['LaunchContext', 'LaunchDescription'],
    'launch.actions': ['DeclareLaunchArgument', 'OpaqueFunction'],
    'launch.substitutions': ['LaunchConfiguration'],
    'launch_ros.actions': ['Node'],
    'launch_ros.parameter_descriptions': ['ParameterValue'],
}


def test_launch_file_syntax_takes_everything_from_graph() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert ('weld_bringup', 'graph') in imported
    used = {
        f'{n.value.id}.{n.attr}'
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    assert {'graph.LAUNCH_ARGS', 'graph.resolve', 'graph.config_dir'} <= used
    # no node, package, executable or config file is named in the launch file itself
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for spec in graph.NODES:
        assert not {spec.package, spec.executable, spec.name, spec.config} & literals, spec
    for arg in graph.LAUNCH_ARGS:
        assert arg.name not in literals, arg.name
    # every class it uses is one that Humble's launch / launch_ros provide (the stand-ins below)
    wanted = {(module, name) for module, names in LAUNCH_CLASSES.items() for name in names}
    assert {pair for pair in imported if pair[0] != 'weld_bringup'} <= wanted


class _Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class _LaunchConfiguration(_Recorder):
    def perform(self, context: '_Context') -> str:
        return context.values[self.args[0]]


class _Context:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    for module_name, class_names in LAUNCH_CLASSES.items():
        module = types.ModuleType(module_name)
        for class_name in class_names:
            recorder = (
                _LaunchConfiguration
                if class_name == 'LaunchConfiguration'
                else type(class_name, (_Recorder,), {})
            )
            setattr(module, class_name, recorder)
        monkeypatch.setitem(sys.modules, module_name, module)
    for parent in ('launch', 'launch_ros'):
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    spec = importlib.util.spec_from_file_location('scan_launch', LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launched_nodes(launch_module: types.ModuleType, arguments: dict[str, str]) -> list[_Recorder]:
    description = launch_module.generate_launch_description()
    (actions,) = description.args
    declared = [a for a in actions if type(a).__name__ == 'DeclareLaunchArgument']
    (opaque,) = [a for a in actions if type(a).__name__ == 'OpaqueFunction']
    values = {a.args[0]: a.kwargs['default_value'] for a in declared}
    values.update(arguments)
    return opaque.kwargs['function'](_Context(values))


def test_launch_file_declares_exactly_the_graph_arguments(launch_module: types.ModuleType) -> None:
    description = launch_module.generate_launch_description()
    declared = [a for a in description.args[0] if type(a).__name__ == 'DeclareLaunchArgument']
    assert [(a.args[0], a.kwargs['default_value'], a.kwargs['description']) for a in declared] == [
        (arg.name, arg.default, arg.description) for arg in graph.LAUNCH_ARGS
    ]


@pytest.mark.parametrize(
    'arguments',
    [
        {},
        {'nodes': 'camera,inference', 'source': 'replay', 'models_dir': '/srv/models'},
        {'recording_dir': '/data/s'},
    ],
)
def test_launch_nodes_equal_runner_commands(
    launch_module: types.ModuleType, arguments: dict[str, str], tmp_path: Path
) -> None:
    layer = tmp_path / 'site.yaml'
    layer.write_text('weld_camera:\n  ros__parameters:\n    rate_hz: 5.0\n')
    arguments = {**arguments, 'params_file': str(layer)}
    nodes = _launched_nodes(launch_module, arguments)
    launches = graph.resolve(arguments, graph.config_dir())
    runner = GraphRunner(launches, env={}, work_dir=tmp_path / 'run', echo=None)
    commands = runner.commands()
    assert len(nodes) == len(commands) == len(launches)
    modules = {spec.executable: spec.module for spec in graph.NODES}
    for node, command in zip(nodes, commands, strict=True):
        kwargs = node.kwargs
        assert command[1:3] == ['-m', modules[kwargs['executable']]]
        assert f'__node:={kwargs["name"]}' in command
        *files, overrides = kwargs['parameters']
        params_files = [command[i + 1] for i, token in enumerate(command) if token == '--params-file']
        launch_overrides = {name: value.args[0] for name, value in overrides.items()}
        for value in overrides.values():
            assert value.kwargs == {'value_type': str}
        if launch_overrides:
            *site_files, overrides_file = params_files
            (runner_overrides,) = [
                v['ros__parameters'] for v in yaml.safe_load(Path(overrides_file).read_text()).values()
            ]
            assert runner_overrides == launch_overrides
        else:
            site_files = params_files
        assert files == site_files
        assert files[-1] == str(layer)
