"""The weldvision node graph, declared once.

Both ways of bringing the graph up read this module: ``launch/scan.launch.py`` (ROS installs, where
``launch``/``launch_ros`` exist) and :mod:`weld_bringup.runner` (the pip world, which has no
``launch``). Each turns the same :func:`resolve` answer into its own process description, so the two
cannot start different nodes, names, configs or parameter overrides.

Launch arguments use the ``name:=value`` form of ``ros2 launch`` in both worlds. An argument left
empty keeps the value of the site config (``config/<node>.yaml``), which is the one home of
parameters; a non-empty value overrides one parameter of one node.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weld_core.errors import WeldError

PACKAGE = 'weld_bringup'


class BringupError(WeldError, ValueError):
    """A launch argument, node selection or config file the graph cannot use."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: where its code lives, what it is called, which site config it reads."""

    key: str  # short name used by the ``nodes`` argument and as the output prefix
    package: str
    executable: str  # console script, also what ``ros2 run <package>`` starts
    module: str  # ``python -m <module>`` in the pip world
    name: str  # node name; its config file is keyed by it
    config: str  # file name in weld_bringup's config/ folder


@dataclass(frozen=True)
class LaunchArg:
    """A launch argument; ``node``/``parameter`` name the parameter it overrides (if any), ``also``
    further (node, parameter) pairs that must hold the same value (one folder seen by two nodes)."""

    name: str
    description: str
    default: str = ''
    node: str | None = None
    parameter: str | None = None
    also: tuple[tuple[str, str], ...] = ()

    def targets(self) -> tuple[tuple[str, str], ...]:
        """Every (node key, parameter) this argument sets."""
        first = ((self.node, self.parameter),) if self.node and self.parameter else ()
        return (*first, *self.also)


NODES: tuple[NodeSpec, ...] = (
    NodeSpec('camera', 'weld_camera', 'camera_node', 'weld_camera.camera_node', 'weld_camera', 'camera.yaml'),
    NodeSpec(
        'labeler', 'weld_labeler', 'labeler_node', 'weld_labeler.labeler_node', 'weld_labeler', 'labeler.yaml'
    ),
    NodeSpec(
        'inference',
        'weld_inference',
        'inference_node',
        'weld_inference.inference_node',
        'weld_inference',
        'inference.yaml',
    ),
    NodeSpec(
        'console', 'weld_console', 'console_node', 'weld_console.console_node', 'weld_console', 'console.yaml'
    ),
)
NODE_KEYS: tuple[str, ...] = tuple(spec.key for spec in NODES)

NODES_ARG = 'nodes'
PARAMS_FILE_ARG = 'params_file'
LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg(
        NODES_ARG,
        'comma-separated nodes to start, of: ' + ', '.join(NODE_KEYS),
        default=','.join(NODE_KEYS),
    ),
    LaunchArg(
        PARAMS_FILE_ARG,
        "extra ROS 2 params file (node-name keyed) applied to every node after its site config ('' = none)",
    ),
    LaunchArg(
        'source',
        "camera source: sim, device, relay or replay ('' = config/camera.yaml)",
        node='camera',
        parameter='source',
    ),
    LaunchArg(
        'models_dir',
        'folder the inference node loads ONNX models from and watches, and the console manages '
        "('' = config/inference.yaml, config/console.yaml)",
        node='inference',
        parameter='models_dir',
        also=(('console', 'models_dir'),),
    ),
    LaunchArg(
        'recording_dir',
        "folder the labeler records session bags into, and the console reads ('' = config/labeler.yaml)",
        node='labeler',
        parameter='recording_dir',
        also=(('console', 'recording_dir'),),
    ),
    LaunchArg(
        'console_host',
        "address the operator console listens on: 127.0.0.1 or 0.0.0.0 (token) ('' = config/console.yaml)",
        node='console',
        parameter='host',
    ),
)


@dataclass(frozen=True)
class NodeLaunch:
    """A node as it will be started: its params files (later ones win) and the parameters overridden."""

    spec: NodeSpec
    params_files: tuple[Path, ...]
    overrides: dict[str, str] = field(default_factory=dict)


def node_spec(key: str) -> NodeSpec:
    for spec in NODES:
        if spec.key == key:
            return spec
    raise BringupError(f'unknown node {key!r}: choose from {", ".join(NODE_KEYS)}')


def launch_arg(name: str) -> LaunchArg:
    for arg in LAUNCH_ARGS:
        if arg.name == name:
            return arg
    raise BringupError(
        f'unknown launch argument {name!r}: choose from {", ".join(a.name for a in LAUNCH_ARGS)}'
    )


def parse_arguments(tokens: Iterable[str]) -> dict[str, str]:
    """``['source:=sim', 'nodes:=camera']`` -> ``{'source': 'sim', 'nodes': 'camera'}``, checked."""
    arguments: dict[str, str] = {}
    for token in tokens:
        name, separator, value = token.partition(':=')
        if not separator or not name:
            raise BringupError(f'launch arguments are written name:=value, got {token!r}')
        launch_arg(name)
        arguments[name] = value
    return arguments


def selected_nodes(value: str) -> list[NodeSpec]:
    """The specs named in a ``nodes`` value, in graph order; an empty selection is an error."""
    keys = [part.strip() for part in value.split(',') if part.strip()]
    for key in keys:
        node_spec(key)
    if not keys:
        raise BringupError(f'{NODES_ARG}:= selects no node: name at least one of {", ".join(NODE_KEYS)}')
    return [spec for spec in NODES if spec.key in keys]


def resolve(arguments: Mapping[str, str], config_dir: Path) -> list[NodeLaunch]:
    """What to start for these launch arguments: one :class:`NodeLaunch` per selected node."""
    values = {arg.name: arg.default for arg in LAUNCH_ARGS}
    for name, value in arguments.items():
        launch_arg(name)
        values[name] = value
    extra: tuple[Path, ...] = ()
    if values[PARAMS_FILE_ARG]:
        extra = (Path(values[PARAMS_FILE_ARG]).expanduser(),)
        if not extra[0].is_file():
            raise BringupError(f'{PARAMS_FILE_ARG}:={values[PARAMS_FILE_ARG]} is not a file')
    launches: list[NodeLaunch] = []
    for spec in selected_nodes(values[NODES_ARG]):
        site_config = Path(config_dir) / spec.config
        if not site_config.is_file():
            raise BringupError(f'site config {site_config} for node {spec.name} is missing')
        overrides = {
            parameter: values[arg.name]
            for arg in LAUNCH_ARGS
            for node, parameter in arg.targets()
            if node == spec.key and values[arg.name] != ''
        }
        launches.append(NodeLaunch(spec, (site_config, *extra), overrides))
    return launches


def config_dir() -> Path:
    """The site configs: the package's share/ (ROS installs, the venv's ament index), else the source."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return source_config_dir()
    try:
        installed = Path(get_package_share_directory(PACKAGE)) / 'config'
    except PackageNotFoundError:
        return source_config_dir()
    return installed if installed.is_dir() else source_config_dir()


def source_config_dir() -> Path:
    return Path(__file__).resolve().parents[1] / 'config'


def argument_help(args: Sequence[LaunchArg] = LAUNCH_ARGS) -> str:
    return '\n'.join(f'  {arg.name}:=  {arg.description} (default {arg.default!r})' for arg in args)
