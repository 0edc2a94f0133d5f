"""weld_camera node: publishes rgb + depth frame pairs (one stamp) with camera infos, from a source.

Lifecycle: configure validates the parameters and opens the source (simulator, device, bag),
activate starts publishing, deactivate stops it, cleanup releases the source. With ``autostart``
(default) the node configures and activates itself, so a plain run publishes at once; a start-up
that fails (bad parameters, no device, unreadable bag) exits with code 1 and says why.

The node only wires parameters, topics and threads: frames come ready-encoded from
weld_camera.sources, pacing from weld_camera.pacing.
"""

import sys
import threading
import time
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from weld_camera.errors import CameraConfigError, SourceError
from weld_camera.frames import CameraFrame, Intrinsics
from weld_camera.pacing import Pacer
from weld_camera.settings import PARAMETER_SPECS, CameraSettings, ParameterSpec, settings_from_values
from weld_camera.sources import DeviceSource, RelayPairer, ReplaySource, SimSource
from weld_core.stamps import ns_to_sec_nanosec, stamp_to_ns
from weld_interfaces.msg import DefectLabel

NODE_NAME = 'weld_camera'
IMAGE_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)
EVENT_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)
RELIABLE_INPUT_QOS = IMAGE_QOS
DIAGNOSTICS_PERIOD_S = 1.0
WARN_THROTTLE_S = 5.0

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        name=spec.name, type=_PARAMETER_TYPES[type(spec.default)], description=spec.description
    )
    if spec.any_type:
        descriptor.dynamic_typing = True
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.min_value is not None and spec.max_value is not None:
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)
            ]
        else:
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
            ]
    return descriptor


def _image_type(topic: str, compressed_suffixes: tuple[str, ...]) -> type:
    return CompressedImage if topic.endswith(compressed_suffixes) else Image


class CameraNode(LifecycleNode):
    """Lifecycle node around one frame source; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETER_SPECS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.autostart = bool(self.get_parameter('autostart').value)
        self.settings: CameraSettings | None = None
        self.last_error = ''
        self._state = 'unconfigured'
        self._source: Any = None
        self._pacer: Pacer | None = None
        self._relay: RelayPairer | None = None
        self._inputs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._info_cache: dict[Intrinsics, CameraInfo] = {}
        self._restamp = True
        self._publish_lock = threading.Lock()
        self._published = 0
        self._ground_truth_published = 0
        self._missing_info = 0
        self._publish_errors = 0
        self._warned_drops = 0
        self._finished = False
        self._rate_window: tuple[float, int] = (time.monotonic(), 0)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', EVENT_QOS)
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    # parameters -----------------------------------------------------------------------------------
    def _parameter_values(self) -> dict[str, Any]:
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETER_SPECS}
        declared = {spec.name for spec in PARAMETER_SPECS} | {
            'use_sim_time',
            'start_type_description_service',
        }
        overrides = getattr(self, '_parameter_overrides', {})
        for name in overrides:
            if name not in declared and not name.startswith('qos_overrides.'):
                values[name] = overrides[name].value  # reported as unknown: a typo must not pass silently
        return values

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        if self._state == 'unconfigured':
            return SetParametersResult(successful=True)
        names = ', '.join(p.name for p in parameters)
        return SetParametersResult(
            successful=False,
            reason=f'{names}: camera parameters take effect at configure; deactivate and clean up the node '
            f'first (it is {self._state})',
        )

    # lifecycle --------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Configure and activate; False (reason logged and in last_error) when either fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = settings_from_values(self._parameter_values())
            self._source = self._open_source(settings)
        except (CameraConfigError, SourceError) as exc:
            return self._fail('configure', exc)
        except Exception as exc:  # never leave a half-open source behind an unexpected error
            return self._fail('configure', exc, unexpected=True)
        self.settings = settings
        self._warned_drops = 0
        self._restamp = settings.source == 'sim' or (settings.source == 'replay' and settings.replay_restamp)
        self._outputs = {
            'rgb': self.create_publisher(Image, settings.rgb_topic, IMAGE_QOS),
            'depth': self.create_publisher(Image, settings.depth_topic, IMAGE_QOS),
            'rgb_info': self.create_publisher(CameraInfo, settings.rgb_info_topic, IMAGE_QOS),
            'depth_info': self.create_publisher(CameraInfo, settings.depth_info_topic, IMAGE_QOS),
        }
        if settings.publish_ground_truth and settings.source in ('sim', 'replay'):
            self._outputs['ground_truth'] = self.create_publisher(
                DefectLabel, settings.ground_truth_topic, EVENT_QOS
            )
        self._state = 'inactive'
        self.last_error = ''
        self.get_logger().info(self._describe(settings))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self.settings
        if settings is None:
            return self._fail('activate', SourceError('not configured'))
        try:
            self._finished = False
            if settings.source in ('sim', 'replay'):
                period_ns = (
                    None
                    if settings.source == 'replay' and settings.replay_rate_hz is None
                    else round(1e9 / (settings.replay_rate_hz or settings.rate_hz))
                )
                self._source.start()
                self._pacer = Pacer(
                    self._source, self._emit, period_ns, on_end=self._on_end, on_error=self._on_source_error
                )
                self._pacer.start()
            else:
                self._subscribe(settings)
                if settings.source == 'device':
                    self._source.start()
        except Exception as exc:
            self._stop_publishing()
            return self._fail('activate', exc, unexpected=not isinstance(exc, SourceError))
        self._state = 'active'
        self.get_logger().info(
            f'publishing {settings.source} frame pairs on {settings.rgb_topic} + {settings.depth_topic}'
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_publishing()
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_source()
        self._state = 'unconfigured'
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._state = 'finalized'
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured, ready to be configured again

    def release(self) -> None:
        """Stop publishing and release the source, whatever state the node is in (idempotent)."""
        self._stop_publishing()
        self._release_source()
        self._state = 'unconfigured'

    def _fail(
        self, transition: str, exc: BaseException, unexpected: bool = False
    ) -> TransitionCallbackReturn:
        what = f'{type(exc).__name__}: {exc}' if unexpected else str(exc)
        self.last_error = f'cannot {transition}: {what}'
        self.get_logger().error(self.last_error)
        self._release_source()
        return TransitionCallbackReturn.FAILURE

    def _open_source(self, settings: CameraSettings) -> Any:
        if settings.source == 'sim':
            return SimSource(
                settings.width,
                settings.height,
                settings.seed,
                settings.depth_encoding,
                settings.sim_class_mix,
                settings.sim_prefetch_frames,
                settings.sim_render_workers,
            )
        if settings.source == 'replay':
            if settings.bag_path is None:
                raise CameraConfigError('source replay needs bag_path')
            return ReplaySource(
                settings.bag_path,
                settings.depth_encoding,
                settings.replay_rate_hz,
                settings.loop,
                settings.relay_slop_ns,
                settings.sim_prefetch_frames,
            )
        self._relay = RelayPairer(settings.depth_encoding, settings.relay_slop_ns)
        self._relay.on_reject = self._warn_rejected
        if settings.source == 'device':
            return DeviceSource(
                settings.device_index,
                settings.width,
                settings.height,
                settings.rate_hz,
                self._relay,
                with_depth=bool(settings.relay_depth_topic),
                emit=self._emit,
                on_error=self._on_source_error,
            )
        return self._relay

    def _subscribe(self, settings: CameraSettings) -> None:
        qos = RELIABLE_INPUT_QOS if settings.relay_reliable else qos_profile_sensor_data
        if settings.source == 'relay':
            self._inputs.append(
                self.create_subscription(
                    _image_type(settings.relay_rgb_topic, ('/compressed',)),
                    settings.relay_rgb_topic,
                    self._on_relay_rgb,
                    qos,
                )
            )
        if settings.relay_depth_topic:
            self._inputs.append(
                self.create_subscription(
                    _image_type(settings.relay_depth_topic, ('/compressed', '/compressedDepth')),
                    settings.relay_depth_topic,
                    self._on_relay_depth,
                    qos,
                )
            )
        if settings.relay_rgb_info_topic:
            self._inputs.append(
                self.create_subscription(CameraInfo, settings.relay_rgb_info_topic, self._on_relay_info, qos)
            )

    def _stop_publishing(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()
            self._pacer = None
        if self._source is not None and hasattr(self._source, 'stop'):
            self._source.stop()
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._relay is not None:  # frames waiting for a partner belong to the stream just stopped
            self._relay.pairer.clear()

    def _release_source(self) -> None:
        if self._source is not None and hasattr(self._source, 'close'):
            self._source.close()
        self._source = None
        self._relay = None
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        self._info_cache = {}
        self.settings = None

    # publishing -------------------------------------------------------------------------------------
    def _camera_info(self, intrinsics: Intrinsics, header: Header) -> CameraInfo:
        info = self._info_cache.get(intrinsics)
        if info is None:
            info = CameraInfo(**intrinsics.as_kwargs())
            self._info_cache[intrinsics] = info
        info.header = header
        return info

    def _emit(self, frame: CameraFrame) -> None:
        """Publish one pair: both images, both infos and the ground truth share one header."""
        settings = self.settings
        publishers = self._outputs
        if settings is None or not publishers:
            return
        with self._publish_lock:
            if frame.stamp_ns is None or self._restamp:
                stamp_ns = self.get_clock().now().nanoseconds
            else:
                stamp_ns = frame.stamp_ns
            sec, nanosec = ns_to_sec_nanosec(stamp_ns)
            header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=settings.frame_id)
            try:
                publishers['rgb'].publish(Image(header=header, **frame.rgb.as_kwargs()))
                publishers['depth'].publish(Image(header=header, **frame.depth.as_kwargs()))
                if frame.intrinsics is not None:
                    publishers['rgb_info'].publish(self._camera_info(frame.intrinsics, header))
                    depth_intrinsics = frame.depth_intrinsics or frame.intrinsics
                    publishers['depth_info'].publish(self._camera_info(depth_intrinsics, header))
                else:
                    self._missing_info += 1
                ground_truth = publishers.get('ground_truth')
                if ground_truth is not None and frame.label:
                    ground_truth.publish(
                        DefectLabel(header=header, label=frame.label, session_id='', note=frame.note)
                    )
                    self._ground_truth_published += 1
            except Exception as exc:  # a publish racing with shutdown; anything else is reported
                if rclpy.ok(context=self.context):
                    self._publish_errors += 1
                    self.get_logger().error(
                        f'publishing failed: {exc}', throttle_duration_sec=WARN_THROTTLE_S
                    )
                return
            self._published += 1

    def _on_end(self) -> None:
        self._finished = True
        self.get_logger().info(f'replay finished after {self._published} frame pairs (loop is off)')

    def _on_source_error(self, exc: BaseException) -> None:
        self.last_error = f'source stopped: {exc}'
        if rclpy.ok(context=self.context):
            self.get_logger().error(self.last_error)

    # relay and device input ---------------------------------------------------------------------------
    def _on_relay_rgb(self, msg: Any) -> None:
        if self._relay is None:
            return
        for frame in self._relay.add_rgb(stamp_to_ns(msg.header.stamp), msg):
            self._emit(frame)
        self._warn_dropped()

    def _on_relay_depth(self, msg: Any) -> None:
        if isinstance(self._source, DeviceSource):
            self._source.add_depth(stamp_to_ns(msg.header.stamp), msg)
        elif self._relay is not None:
            for frame in self._relay.add_depth(stamp_to_ns(msg.header.stamp), msg):
                self._emit(frame)
        self._warn_dropped()

    def _on_relay_info(self, msg: CameraInfo) -> None:
        if self._relay is not None:
            self._relay.intrinsics = Intrinsics.from_msg(msg)

    def _warn_dropped(self) -> None:
        relay = self._relay
        if relay is None or relay.dropped <= self._warned_drops:
            return
        stats = relay.pairer.stats
        self.get_logger().warning(
            f'relay: {stats.dropped} unpairable frames dropped so far ({stats.dropped_rgb} rgb, '
            f'{stats.dropped_depth} depth; no partner within {relay.pairer.slop_ns / 1e6:g} ms)',
            throttle_duration_sec=WARN_THROTTLE_S,
        )
        self._warned_drops = relay.dropped

    def _warn_rejected(self, reason: str) -> None:
        self.get_logger().warning(
            f'relay: frame pair rejected: {reason}', throttle_duration_sec=WARN_THROTTLE_S
        )

    # diagnostics ------------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        now = time.monotonic()
        since, published_then = self._rate_window
        rate_hz = (self._published - published_then) / max(now - since, 1e-6)
        self._rate_window = (now, self._published)
        values: dict[str, Any] = {
            'state': self._state,
            'source': self.settings.source if self.settings else str(self.get_parameter('source').value),
            'pairs_published': self._published,
            'publish_rate_hz': round(rate_hz, 2),
            'ground_truth_published': self._ground_truth_published,
            'pairs_without_camera_info': self._missing_info,
            'publish_errors': self._publish_errors,
            'process_cpu_s': round(time.process_time(), 4),
        }
        if self._pacer is not None:
            stats = self._pacer.stats
            values.update(
                {
                    'late_pairs': stats.late,
                    'schedule_reanchored': stats.reanchored,
                    'publish_thread_cpu_s': round(stats.cpu_s, 4),
                    'waiting_for_frames_s': round(stats.waiting_for_frames_s, 3),
                }
            )
        source = self._source
        if source is not None and hasattr(source, 'counters'):
            values.update(source.counters())
        if self._finished:
            values['finished'] = True
        if self.last_error:
            values['last_error'] = self.last_error
        return values

    def _publish_diagnostics(self) -> None:
        values = self.counters()
        if self.last_error:
            level, message = DiagnosticStatus.ERROR, self.last_error
        elif values.get('dropped_unpaired', 0) or values.get('rejected', 0):
            level, message = DiagnosticStatus.WARN, f'{values["state"]}; unpairable or rejected input frames'
        else:
            level, message = DiagnosticStatus.OK, str(values['state'])
        status = DiagnosticStatus(
            level=level,
            name=f'{self.get_name()}: camera',
            message=message,
            hardware_id=str(values['source']),
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    @staticmethod
    def _describe(settings: CameraSettings) -> str:
        if settings.source == 'sim':
            detail = f'{settings.width}x{settings.height} at {settings.rate_hz:g} Hz, seed {settings.seed}'
        elif settings.source == 'replay':
            rate = 'recorded rate' if settings.replay_rate_hz is None else f'{settings.replay_rate_hz:g} Hz'
            detail = f'{settings.bag_path} at {rate}{", looped" if settings.loop else ""}'
        elif settings.source == 'device':
            detail = (
                f'/dev/video{settings.device_index}, depth from {settings.relay_depth_topic or "nowhere (0)"}'
            )
        else:
            topics = f'{settings.relay_rgb_topic} + {settings.relay_depth_topic}'
            detail = f'{topics}, slop {settings.relay_slop_ms:g} ms'
        return f'configured: source {settings.source} ({detail}), depth {settings.depth_encoding}'


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    exit_code = 0
    node: CameraNode | None = None
    try:
        node = CameraNode()
        if node.autostart and not node.start():
            print(f'weld_camera: {node.last_error}', file=sys.stderr)
            exit_code = 1
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        hint = (
            ' (write doubles with a decimal point, e.g. 30.0)'
            if "expecting type 'DOUBLE'" in str(exc)
            else ''
        )
        print(f'weld_camera: invalid parameter: {exc}{hint}', file=sys.stderr)
        exit_code = 1
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        sys.exit(exit_code)


if __name__ == '__main__':
    main()
