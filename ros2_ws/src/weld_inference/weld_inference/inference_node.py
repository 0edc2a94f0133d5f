"""ROS 2 adapter of the inference: pairs rgb/depth, hands the newest pair to a worker, publishes results.

The algorithms live in ROS-free modules: :mod:`weld_inference.model_manager` (which model runs, hot
swap), :mod:`weld_inference.engine` (model or rules for one pair), :mod:`weld_inference.worker`
(latest-frame-wins, rate limit), :mod:`weld_inference.rules` (the rule-based detector).

Every pair the worker takes gets exactly one DefectResult on ``defects_topic``. Pairs that cannot be
classified at all (undecodable image, unsupported encoding, empty data, rgb and depth of different
sizes) are not handled: they are counted (``rejected_frames`` in /diagnostics) and warned about at
most every few seconds, and get no result. Pairs replaced in the latest-frame slot before the worker
took them are counted as ``skipped`` and get no result either.
"""

import sys
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from weld_core.classes import DEFAULT_CLASSES, check_class_list
from weld_core.errors import ImageFormatError, WeldError
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.pairing import FramePair, FramePairer
from weld_core.stamps import stamp_to_ns
from weld_inference.engine import InferenceEngine
from weld_inference.model_manager import ModelManager
from weld_inference.rules import RuleConfig, RuleDetector
from weld_inference.stats import InferenceStats
from weld_inference.worker import LatestFrameWorker
from weld_interfaces.msg import DefectResult

NODE_NAME = 'weld_inference'
WARN_PERIOD_S = 5.0
RESULT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
MEASUREMENT_STATUS = 'weld_inference: rule measurements'
STATUS_NAME = 'weld_inference: inference'


@dataclass(frozen=True)
class Job:
    pair: FramePair[Any]  # the rgb and depth messages
    paired_ns: int  # time.perf_counter_ns() when the pair was complete: latency starts here


@dataclass(frozen=True)
class Intrinsics:
    """The last camera_info's focal lengths and principal point, for images of its size."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def for_size(self, height: int, width: int) -> dict[str, float]:
        """Scaled to an image of another resolution (a driver may publish info for the full sensor)."""
        sx, sy = width / self.width, height / self.height
        return {'fx': self.fx * sx, 'fy': self.fy * sy, 'cx': self.cx * sx, 'cy': self.cy * sy}


def _descriptor(kind: int, description: str, **ranges: Any) -> ParameterDescriptor:
    return ParameterDescriptor(type=kind, description=description, read_only=True, **ranges)


def _float_range(low: float, high: float) -> dict[str, list[FloatingPointRange]]:
    return {'floating_point_range': [FloatingPointRange(from_value=low, to_value=high, step=0.0)]}


def _int_range(low: int, high: int) -> dict[str, list[IntegerRange]]:
    return {'integer_range': [IntegerRange(from_value=low, to_value=high, step=1)]}


def parameter_declarations() -> list[tuple[str, Any, ParameterDescriptor]]:
    """Every parameter of the node: (name, default, descriptor); config/weld_inference.yaml mirrors it."""
    string, double, integer = (
        ParameterType.PARAMETER_STRING,
        ParameterType.PARAMETER_DOUBLE,
        ParameterType.PARAMETER_INTEGER,
    )
    boolean, strings = ParameterType.PARAMETER_BOOL, ParameterType.PARAMETER_STRING_ARRAY
    declared: list[tuple[str, Any, ParameterDescriptor]] = [
        (
            'models_dir',
            '/opt/weldvision/models/',
            _descriptor(
                string,
                'Folder of *.onnx models; the newest valid file runs (touch one to select it). A '
                'new file is validated and swapped in without a restart; an invalid one is rejected and '
                'the running model stays; deleting the running file withdraws it (next valid model, else '
                'the rules). Optional <model>.onnx.sha256 sidecar is checked.',
            ),
        ),
        (
            'model_poll_interval_s',
            2.0,
            _descriptor(
                double,
                'How often the models folder is checked for changes; 0 checks only at start-up.',
                **_float_range(0.0, 3600.0),
            ),
        ),
        ('rgb_topic', '/weld/rgb/image_raw', _descriptor(string, 'Colour image topic (rgb8/bgr8).')),
        (
            'depth_topic',
            '/weld/depth/image_raw',
            _descriptor(
                string, 'Depth image topic registered to the colour image (32FC1 m, 16UC1/mono16 mm).'
            ),
        ),
        (
            'camera_info_topic',
            '/weld/rgb/camera_info',
            _descriptor(
                string,
                'Intrinsics for the rules (mm measurements); without it the rules use their defaults.',
            ),
        ),
        (
            'image_transport',
            'raw',
            _descriptor(
                string, "'raw' (Image) or 'compressed' (<rgb>/compressed and <depth>/compressedDepth)."
            ),
        ),
        (
            'image_qos_reliable',
            False,
            _descriptor(boolean, 'Subscribe to images RELIABLE instead of sensor-data BEST_EFFORT.'),
        ),
        (
            'defects_topic',
            '/weld/defects',
            _descriptor(string, 'DefectResult output, one per handled pair.'),
        ),
        (
            'measurements_topic',
            '/weld/rule_measurements',
            _descriptor(
                string,
                "DiagnosticArray with the rules' measurements (mm) of each pair they measured, "
                'stamped like the pair.',
            ),
        ),
        (
            'slop_ms',
            15.0,
            _descriptor(
                double, 'Largest rgb/depth stamp difference still paired.', **_float_range(0.0, 1000.0)
            ),
        ),
        (
            'max_rate_hz',
            10.0,
            _descriptor(
                double,
                'Most pairs classified per second; newer pairs replace waiting ones (counted as '
                'skipped). 0 = as fast as inference goes.',
                **_float_range(0.0, 1000.0),
            ),
        ),
        (
            'ort_intra_op_num_threads',
            2,
            _descriptor(integer, 'ONNX Runtime threads inside one operator.', **_int_range(1, 64)),
        ),
        (
            'ort_inter_op_num_threads',
            1,
            _descriptor(
                integer,
                'ONNX Runtime threads across operators (>1 runs the graph in parallel mode).',
                **_int_range(1, 64),
            ),
        ),
        (
            'model_budget_ms',
            250.0,
            _descriptor(
                double,
                'Longest a model call (preprocessing included) may take; past it the call is '
                'cancelled and the rules answer that pair.',
                **_float_range(1.0, 60000.0),
            ),
        ),
        (
            'class_names',
            list(DEFAULT_CLASSES),
            _descriptor(strings, 'Classes the rules answer with (a model uses the list in its metadata).'),
        ),
        (
            'rules_on_every_pair',
            False,
            _descriptor(
                boolean,
                'Also run the rules after a model answer (off the latency path) to publish their '
                'measurements for every pair.',
            ),
        ),
        (
            'diagnostics_period_s',
            1.0,
            _descriptor(double, 'Period of /diagnostics.', **_float_range(0.1, 60.0)),
        ),
    ]
    return declared


class InferenceNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = self._declare_parameters()
        self.stats = InferenceStats()
        self.pairer: FramePairer[Any] = FramePairer(slop_ns=int(p['slop_ms'] * 1e6))
        self._intrinsics: Intrinsics | None = None
        self._last_measurements: dict[str, float] = {}
        self._rules_on_every_pair = bool(p['rules_on_every_pair'])

        self.manager = ModelManager(
            p['models_dir'], p['ort_intra_op_num_threads'], p['ort_inter_op_num_threads'], self._model_event
        )
        class_names = check_class_list(p['class_names'])
        self.engine = InferenceEngine(
            self.manager.current,
            RuleDetector(RuleConfig(), class_names=class_names),
            class_names,
            p['model_budget_ms'],
        )
        self.manager.start(p['model_poll_interval_s'])

        self.result_pub = self.create_publisher(DefectResult, p['defects_topic'], RESULT_QOS)
        self.measurement_pub = self.create_publisher(DiagnosticArray, p['measurements_topic'], RESULT_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', RESULT_QOS)
        self.worker: LatestFrameWorker[Job] = LatestFrameWorker(
            self._handle, p['max_rate_hz'], lambda _job: self.stats.record_skipped(), self._worker_error
        )
        self.worker.start()

        image_qos = qos_profile_sensor_data
        if p['image_qos_reliable']:
            image_qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        if p['image_transport'] == 'compressed':
            rgb_type, rgb_topic = CompressedImage, p['rgb_topic'] + '/compressed'
            depth_type, depth_topic = CompressedImage, p['depth_topic'] + '/compressedDepth'
        else:
            rgb_type, rgb_topic = Image, p['rgb_topic']
            depth_type, depth_topic = Image, p['depth_topic']
        self.create_subscription(rgb_type, rgb_topic, self._on_rgb, image_qos)
        self.create_subscription(depth_type, depth_topic, self._on_depth, image_qos)
        self.create_subscription(
            CameraInfo, p['camera_info_topic'], self._on_camera_info, qos_profile_sensor_data
        )
        self.create_timer(p['diagnostics_period_s'], self._publish_diagnostics)
        self.get_logger().info(
            f'classifying {rgb_topic} + {depth_topic} -> {p["defects_topic"]}; models from {p["models_dir"]}'
        )

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, default, descriptor in parameter_declarations():
            values[name] = self.declare_parameter(name, default, descriptor).value
        if values['image_transport'] not in ('raw', 'compressed'):
            raise ValueError(
                f"image_transport must be 'raw' or 'compressed', got {values['image_transport']!r}"
            )
        return values

    # --- subscriptions: cheap, never wait for inference ------------------------------------------
    def _on_rgb(self, msg: Any) -> None:
        for pair in self.pairer.add_rgb(stamp_to_ns(msg.header.stamp), msg):
            self.worker.submit(Job(pair, time.perf_counter_ns()))

    def _on_depth(self, msg: Any) -> None:
        for pair in self.pairer.add_depth(stamp_to_ns(msg.header.stamp), msg):
            self.worker.submit(Job(pair, time.perf_counter_ns()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        fx, fy, cx, cy = float(msg.k[0]), float(msg.k[4]), float(msg.k[2]), float(msg.k[5])
        if fx > 0 and fy > 0 and msg.width > 0 and msg.height > 0:
            # one object, swapped whole: the worker thread never sees half an update
            self._intrinsics = Intrinsics(fx, fy, cx, cy, int(msg.width), int(msg.height))

    # --- the worker thread ---------------------------------------------------------------------
    def _handle(self, job: Job) -> None:
        rgb_msg, depth_msg = job.pair.rgb, job.pair.depth
        try:
            rgb = rgb_from_msg(rgb_msg)
            depth_m = depth_m_from_msg(depth_msg)
            if rgb.shape[:2] != depth_m.shape:
                raise ImageFormatError(
                    f'rgb {rgb.shape[1]}x{rgb.shape[0]} and depth {depth_m.shape[1]}x{depth_m.shape[0]} '
                    'differ in size; the depth must be registered to the colour image'
                )
        except ImageFormatError as exc:
            self.stats.record_rejected_frame()
            self.get_logger().warning(
                f'pair at {job.pair.stamp_ns} ns not classified: {exc}', throttle_duration_sec=WARN_PERIOD_S
            )
            return
        camera = self._intrinsics
        intrinsics = camera.for_size(*depth_m.shape) if camera is not None else None
        decision = self.engine.classify(rgb, depth_m, intrinsics)
        result = DefectResult(
            header=rgb_msg.header,
            label=decision.label,
            confidence=decision.confidence,
            class_names=list(decision.class_names),
            scores=list(decision.scores),
            source=decision.source,
            model_id=decision.model_id,
            fallback_reason=decision.fallback_reason,
        )
        latency_ms = (time.perf_counter_ns() - job.paired_ns) / 1e6
        result.latency_ms = latency_ms
        self.result_pub.publish(result)
        self.stats.record_answer(decision, latency_ms)
        if decision.fallback_reason:
            self.get_logger().warning(
                f'rules answered: {decision.fallback_reason}', throttle_duration_sec=WARN_PERIOD_S
            )
        rules_label, measurements = decision.label, decision.measurements
        if not measurements and self._rules_on_every_pair:
            rules_label, measurements = self.engine.measure(rgb, depth_m, intrinsics)
        if measurements:
            self._publish_measurements(rgb_msg.header, rules_label, measurements)

    def _publish_measurements(self, header: Any, rules_label: str, measurements: dict[str, float]) -> None:
        """One status: message = the rules' label for the pair, values = their measurements."""
        self._last_measurements = measurements
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=MEASUREMENT_STATUS,
            message=rules_label,
            values=[KeyValue(key=key, value=f'{value:.4g}') for key, value in sorted(measurements.items())],
        )
        self.measurement_pub.publish(DiagnosticArray(header=header, status=[status]))

    def _worker_error(self, exc: BaseException) -> None:
        self.stats.record_worker_error()
        self.get_logger().error(
            f'inference worker error: {type(exc).__name__}: {exc}', throttle_duration_sec=WARN_PERIOD_S
        )

    def _model_event(self, level: int, message: str) -> None:
        logger = self.get_logger()
        if level >= 40:
            logger.error(message)
        elif level >= 30:
            logger.warning(message)
        else:
            logger.info(message)

    # --- /diagnostics ----------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        runner, unavailable = self.manager.current()
        rejected = self.manager.rejected()
        counts = self.manager.counts
        values: dict[str, str] = {
            'model_id': runner.model_id if runner else '',
            'model_file': str(runner.path) if runner else '',
            'answered': str(snap.answered),
            'source_model': str(snap.by_source.get('model', 0)),
            'source_rules': str(snap.by_source.get('rules', 0)),
            'model_failures': str(snap.model_failures),
            'undecided': str(snap.undecided),
            'skipped': str(snap.skipped),
            'rejected_frames': str(snap.rejected_frames),
            'worker_errors': str(snap.worker_errors),
            'pairs_paired': str(self.pairer.stats.paired),
            'frames_unpaired': str(self.pairer.stats.dropped),
            'model_loads': str(counts.loads),
            'model_rejections': str(counts.rejections),
            'model_withdrawals': str(counts.withdrawals),
            'model_folder_polls': str(counts.polls),
        }
        for kind, count in sorted(snap.fallback_kinds.items()):
            values[f'fallback_{kind}'] = str(count)
        for prefix, percentiles in (
            ('latency_ms', snap.latency_ms),
            ('model_ms', snap.model_ms),
            ('rules_ms', snap.rules_ms),
        ):
            for name, value in percentiles.items():
                values[f'{prefix}_{name}'] = f'{value:.2f}'
        for name, message in sorted(rejected.items()):
            values[f'rejected_model {name}'] = message
        for key, value in sorted(self._last_measurements.items()):
            values[f'last_rule_{key}'] = f'{value:.4g}'
        if runner is not None and not rejected:
            level, message = DiagnosticStatus.OK, f'model {runner.model_id}'
        elif runner is not None:
            level, message = (
                DiagnosticStatus.WARN,
                f'model {runner.model_id}; {len(rejected)} model file(s) rejected',
            )
        else:
            level, message = DiagnosticStatus.WARN, f'rules only: {unavailable}'
        status = DiagnosticStatus(
            level=level,
            name=STATUS_NAME,
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        """Stop the worker and the model watcher before the node goes (they publish and log)."""
        self.worker.stop()
        self.manager.stop()
        self.engine.close()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node: InferenceNode | None = None
    executor = SingleThreadedExecutor()
    exit_code = 0
    try:
        node = InferenceNode()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterException, WeldError, ValueError) as exc:
        # a bad parameter is the operator's to fix: one line saying which, not a traceback
        print(f'weld_inference: cannot start: {type(exc).__name__}: {exc}', file=sys.stderr)
        exit_code = 2
    finally:
        if node is not None:
            node.close()
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        sys.exit(exit_code)


if __name__ == '__main__':
    main()
