"""The camera's parameters: one table of specs (declared by the node) and their validation, ROS-free.

The node declares every entry of :data:`PARAMETER_SPECS` with a ParameterDescriptor built from it
(type, description, range), so ranges are enforced by rclpy itself; :func:`settings_from_values`
checks what a range cannot express (choices, topic names, combinations) and builds the typed
:class:`CameraSettings` the sources are made from.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weld_camera.errors import CameraConfigError
from weld_core.classes import DEFAULT_CLASSES

SOURCES = ('sim', 'device', 'relay', 'replay')
DEPTH_ENCODINGS = ('32FC1', '16UC1')
RECORDED_RATE = 'recorded'


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: name, default (its Python type is the parameter type), description, range."""

    name: str
    default: Any
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()
    any_type: bool = False  # the value may come as a number or a string (declared with dynamic typing)


PARAMETER_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        'source',
        'sim',
        'frame source: sim (weld-scene simulator), device (OpenCV colour camera + '
        "depth topic), relay (another driver's colour + aligned depth topics), replay (rosbag2)",
        choices=SOURCES,
    ),
    ParameterSpec(
        'rate_hz', 30.0, 'frame pairs per second (sim, device, replay with a fixed rate)', 0.1, 1000.0
    ),
    ParameterSpec('width', 640, 'image width in pixels (sim renders it, device requests it)', 32, 4096),
    ParameterSpec('height', 480, 'image height in pixels (sim renders it, device requests it)', 32, 4096),
    ParameterSpec(
        'depth_encoding',
        '32FC1',
        'published depth encoding: 32FC1 metres or 16UC1 millimetres',
        choices=DEPTH_ENCODINGS,
    ),
    ParameterSpec('frame_id', 'weld_camera_optical_frame', 'header.frame_id of both images and camera infos'),
    ParameterSpec('rgb_topic', '/weld/rgb/image_raw', 'colour image topic (rgb8)'),
    ParameterSpec('depth_topic', '/weld/depth/image_raw', 'registered depth image topic'),
    ParameterSpec('rgb_info_topic', '/weld/rgb/camera_info', 'colour CameraInfo topic'),
    ParameterSpec('depth_info_topic', '/weld/depth/camera_info', 'depth CameraInfo topic'),
    ParameterSpec(
        'ground_truth_topic',
        '/weld/sim/ground_truth',
        'DefectLabel of every simulated (or labelled replayed) frame pair, stamped like the pair',
    ),
    ParameterSpec('publish_ground_truth', True, 'publish the ground truth topic (sim and labelled bags)'),
    ParameterSpec('seed', 0, 'simulator seed: the same seed gives the same frames', 0, 2**31 - 1),
    ParameterSpec(
        'sim_class_mix',
        '',
        'simulated class frequencies as class:weight pairs, e.g. "good:0.3,porosity:0.2,'
        'spatter:0.2,gap:0.15,undercut:0.15"; empty = the simulator\'s default mix',
    ),
    ParameterSpec(
        'sim_prefetch_frames', 3, 'frames rendered (or read from a bag) ahead of publication', 1, 30
    ),
    ParameterSpec(
        'sim_render_workers',
        0,
        'simulator render processes: 0 = one render thread in the node process; N = N processes '
        '(the same frames, N cores)',
        0,
        16,
    ),
    ParameterSpec('device_index', 0, 'OpenCV VideoCapture index of the colour camera (/dev/videoN)', 0, 63),
    ParameterSpec('relay_rgb_topic', '/camera/color/image_raw', "relay: the driver's colour image topic"),
    ParameterSpec(
        'relay_depth_topic',
        '/camera/aligned_depth_to_color/image_raw',
        "relay and device: the driver's depth topic, registered to the colour image "
        '(device: empty = no depth sensor, depth published as 0 = no data)',
    ),
    ParameterSpec(
        'relay_rgb_info_topic',
        '/camera/color/camera_info',
        "relay and device: the driver's colour CameraInfo (republished for rgb and depth)",
    ),
    ParameterSpec(
        'relay_slop_ms', 15.0, 'relay and device: largest rgb/depth stamp difference of a pair', 0.0, 1000.0
    ),
    ParameterSpec(
        'relay_reliable',
        False,
        'relay and device: subscribe RELIABLE instead of sensor-data (BEST_EFFORT) QoS',
    ),
    ParameterSpec('bag_path', '', 'replay: rosbag2 directory (metadata.yaml + .mcap or .db3)'),
    ParameterSpec(
        'replay_rate',
        RECORDED_RATE,
        'replay: "recorded" (the bag\'s own timing) or a fixed rate in Hz, e.g. 10',
        any_type=True,
    ),
    ParameterSpec('loop', False, 'replay: start again at the end of the bag'),
    ParameterSpec(
        'replay_restamp', True, 'replay: stamp pairs with the current time (false: recorded stamps)'
    ),
    ParameterSpec(
        'autostart', True, 'configure and activate at start-up (false: wait for lifecycle transitions)'
    ),
)

SPECS_BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETER_SPECS}


@dataclass(frozen=True)
class CameraSettings:
    source: str
    rate_hz: float
    width: int
    height: int
    depth_encoding: str
    frame_id: str
    rgb_topic: str
    depth_topic: str
    rgb_info_topic: str
    depth_info_topic: str
    ground_truth_topic: str
    publish_ground_truth: bool
    seed: int
    sim_class_mix: dict[str, float] | None
    sim_prefetch_frames: int
    sim_render_workers: int
    device_index: int
    relay_rgb_topic: str
    relay_depth_topic: str
    relay_rgb_info_topic: str
    relay_slop_ms: float
    relay_reliable: bool
    bag_path: Path | None
    replay_rate_hz: float | None  # None: the bag's recorded timing
    loop: bool
    replay_restamp: bool
    autostart: bool

    @property
    def relay_slop_ns(self) -> int:
        return round(self.relay_slop_ms * 1e6)


def parse_class_mix(text: str, classes: tuple[str, ...] = DEFAULT_CLASSES) -> dict[str, float] | None:
    """'good:0.3,porosity:0.2' -> {'good': 0.3, 'porosity': 0.2}; '' -> None (simulator default).

    Weights are relative (they need not sum to 1); a class left out is never drawn.
    """
    text = text.strip()
    if not text:
        return None
    mix: dict[str, float] = {}
    for item in text.split(','):
        name, sep, weight_text = item.partition(':')
        name = name.strip()
        if not sep:
            raise CameraConfigError(
                f'sim_class_mix item {item.strip()!r} is not class:weight (e.g. "good:0.3")'
            )
        if name not in classes:
            raise CameraConfigError(f'sim_class_mix names unknown class {name!r}: use {", ".join(classes)}')
        if name in mix:
            raise CameraConfigError(f'sim_class_mix names {name!r} twice')
        try:
            weight = float(weight_text)
        except ValueError:
            raise CameraConfigError(
                f'sim_class_mix weight of {name!r} is not a number: {weight_text.strip()!r}'
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise CameraConfigError(
                f'sim_class_mix weight of {name!r} must be a finite number >= 0, got {weight}'
            )
        mix[name] = weight
    if sum(mix.values()) <= 0:
        raise CameraConfigError('sim_class_mix weights sum to 0: give at least one class a positive weight')
    return mix


def parse_replay_rate(text: str) -> float | None:
    """'recorded' -> None (the bag's timing); '10' or '10.0' -> 10.0 Hz."""
    text = text.strip().lower()
    if text == RECORDED_RATE:
        return None
    try:
        rate = float(text)
    except ValueError:
        raise CameraConfigError(f'replay_rate must be "recorded" or a rate in Hz, got {text!r}') from None
    if not math.isfinite(rate) or not 0.1 <= rate <= 1000.0:
        raise CameraConfigError(f'replay_rate must be between 0.1 and 1000 Hz, got {rate}')
    return rate


def _check_topic(name: str, value: str, allow_empty: bool = False) -> list[str]:
    if not value:
        return [] if allow_empty else [f'{name} is empty: give a topic name such as "/weld/rgb/image_raw"']
    bad = [c for c in value if not (c.isalnum() or c in '/_~{}')]
    if bad or '//' in value or value.endswith('/') or value[0].isdigit():
        return [f'{name} {value!r} is not a valid ROS topic name']
    return []


def _check_spec(spec: ParameterSpec, value: Any) -> list[str]:
    """Type, range and choices, for values that did not come through rclpy's descriptors."""
    if spec.any_type:
        return []
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        return [f'{spec.name} must be a {expected.__name__}, got {value!r}']
    if spec.min_value is not None and value < spec.min_value:
        return [f'{spec.name} must be >= {spec.min_value}, got {value}']
    if spec.max_value is not None and value > spec.max_value:
        return [f'{spec.name} must be <= {spec.max_value}, got {value}']
    if spec.choices and value not in spec.choices:
        return [f'{spec.name} must be one of {", ".join(spec.choices)}, got {value!r}']
    return []


def settings_from_values(values: Mapping[str, Any]) -> CameraSettings:
    """Parameter values (missing ones take their default) -> settings; every problem in one error."""
    unknown = sorted(set(values) - set(SPECS_BY_NAME))
    problems: list[str] = [f'unknown parameter {name!r}' for name in unknown]
    merged = {spec.name: values.get(spec.name, spec.default) for spec in PARAMETER_SPECS}
    for spec in PARAMETER_SPECS:
        problems += _check_spec(spec, merged[spec.name])
    if problems:
        raise CameraConfigError('invalid camera parameters: ' + '; '.join(problems))

    for name in ('rgb_topic', 'depth_topic', 'rgb_info_topic', 'depth_info_topic', 'ground_truth_topic'):
        problems += _check_topic(name, merged[name])
    if not merged['frame_id'].strip():
        problems.append(
            'frame_id is empty: give the optical frame of the camera, e.g. weld_camera_optical_frame'
        )
    contract_topics = [
        merged[name] for name in ('rgb_topic', 'depth_topic', 'rgb_info_topic', 'depth_info_topic')
    ]
    if len(set(contract_topics)) != len(contract_topics):
        problems.append(f'rgb/depth image and info topics must differ, got {contract_topics}')

    class_mix = None
    replay_rate_hz = None
    bag_path = None
    source = merged['source']
    try:
        class_mix = parse_class_mix(merged['sim_class_mix'])
    except CameraConfigError as exc:
        problems.append(str(exc))
    if source in ('relay', 'device'):
        problems += _check_topic(
            'relay_depth_topic', merged['relay_depth_topic'], allow_empty=source == 'device'
        )
        problems += _check_topic('relay_rgb_info_topic', merged['relay_rgb_info_topic'], allow_empty=True)
    if source == 'relay':
        problems += _check_topic('relay_rgb_topic', merged['relay_rgb_topic'])
        if merged['relay_rgb_topic'] in (merged['rgb_topic'], merged['depth_topic']):
            problems.append(
                f'relay_rgb_topic {merged["relay_rgb_topic"]!r} is one of the output topics: '
                'the relay would hear itself'
            )
        if merged['relay_depth_topic'] in (merged['rgb_topic'], merged['depth_topic']):
            problems.append(
                f'relay_depth_topic {merged["relay_depth_topic"]!r} is one of the output topics: '
                'the relay would hear itself'
            )
    if source == 'replay':
        try:
            replay_rate_hz = parse_replay_rate(str(merged['replay_rate']))
        except CameraConfigError as exc:
            problems.append(str(exc))
        if not merged['bag_path'].strip():
            problems.append('source replay needs bag_path: the rosbag2 directory to play')
        else:
            bag_path = Path(merged['bag_path']).expanduser()
            if not bag_path.exists():
                problems.append(f'bag_path {str(bag_path)!r} does not exist')
            elif not (bag_path / 'metadata.yaml').is_file():
                problems.append(f'bag_path {str(bag_path)!r} is not a rosbag2 directory (no metadata.yaml)')
    if problems:
        raise CameraConfigError('invalid camera parameters: ' + '; '.join(problems))

    return CameraSettings(
        source=source,
        rate_hz=float(merged['rate_hz']),
        width=merged['width'],
        height=merged['height'],
        depth_encoding=merged['depth_encoding'],
        frame_id=merged['frame_id'].strip(),
        rgb_topic=merged['rgb_topic'],
        depth_topic=merged['depth_topic'],
        rgb_info_topic=merged['rgb_info_topic'],
        depth_info_topic=merged['depth_info_topic'],
        ground_truth_topic=merged['ground_truth_topic'],
        publish_ground_truth=merged['publish_ground_truth'],
        seed=merged['seed'],
        sim_class_mix=class_mix,
        sim_prefetch_frames=merged['sim_prefetch_frames'],
        sim_render_workers=merged['sim_render_workers'],
        device_index=merged['device_index'],
        relay_rgb_topic=merged['relay_rgb_topic'],
        relay_depth_topic=merged['relay_depth_topic'],
        relay_rgb_info_topic=merged['relay_rgb_info_topic'],
        relay_slop_ms=float(merged['relay_slop_ms']),
        relay_reliable=merged['relay_reliable'],
        bag_path=bag_path,
        replay_rate_hz=replay_rate_hz,
        loop=merged['loop'],
        replay_restamp=merged['replay_restamp'],
        autostart=merged['autostart'],
    )
