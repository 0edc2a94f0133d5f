"""weld_labeler node: wires topics, services and parameters to :class:`weld_labeler.labeler.Labeler`.

Subscribes rgb/depth (raw CDR, so raw recording never re-serialises) and both CameraInfos,
publishes one DefectLabel per labelled pair on /weld/labels and diagnostics on /diagnostics, and
offers ~/capture, ~/start_session, ~/stop_session, ~/list_sessions, ~/export_session and
~/set_continuous_label. Capture blocks until its pairs are recorded, so services run in a
reentrant group on a multi-threaded executor while frames keep arriving in their own group;
recording runs in the labeler's writer thread, so a slow disk never stalls DDS reception.

On a ROS install (the pip world has the weld-label CLI for the same calls)::

  ros2 service call /weld_labeler/start_session weld_interfaces/srv/StartSession "{name: p7, material: S235}"
  ros2 service call /weld_labeler/capture weld_interfaces/srv/Capture "{label: porosity, count: 5, note: s3}"
  ros2 service call /weld_labeler/set_continuous_label weld_interfaces/srv/SetContinuousLabel "{label: gap}"
  ros2 service call /weld_labeler/stop_session weld_interfaces/srv/StopSession
  ros2 service call /weld_labeler/export_session weld_interfaces/srv/ExportSession "{session_id: ''}"
"""

import contextlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from weld_core.classes import DEFAULT_CLASSES
from weld_core.errors import WeldError
from weld_core.stamps import ns_to_sec_nanosec
from weld_interfaces.msg import DefectLabel
from weld_interfaces.srv import (
    Capture,
    ExportSession,
    ListSessions,
    SetContinuousLabel,
    StartSession,
    StopSession,
)
from weld_labeler.errors import LabelerError
from weld_labeler.labeler import Labeler, LabelerConfig, LabelEvent
from weld_labeler.recorder import RECORD_FORMATS, STORAGES, RecordTopics
from weld_labeler.session import SessionInfo

NODE_NAME = 'weld_labeler'
RELIABILITIES = ('best_effort', 'reliable')


def _descriptor(kind: int, description: str, **ranges: Any) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(type=kind, description=description, read_only=True)
    if 'int_range' in ranges:
        low, high = ranges['int_range']
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if 'float_range' in ranges:
        low, high = ranges['float_range']
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


_STRING, _DOUBLE, _INT, _BOOL = (
    ParameterType.PARAMETER_STRING,
    ParameterType.PARAMETER_DOUBLE,
    ParameterType.PARAMETER_INTEGER,
    ParameterType.PARAMETER_BOOL,
)

PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    'rgb_topic': ('/weld/rgb/image_raw', _descriptor(_STRING, 'colour images (rgb8/bgr8)')),
    'depth_topic': (
        '/weld/depth/image_raw',
        _descriptor(_STRING, 'registered depth (32FC1 m, 16UC1/mono16 mm)'),
    ),
    'rgb_info_topic': ('/weld/rgb/camera_info', _descriptor(_STRING, 'CameraInfo of the colour camera')),
    'depth_info_topic': ('/weld/depth/camera_info', _descriptor(_STRING, 'CameraInfo of the depth camera')),
    'labels_topic': ('/weld/labels', _descriptor(_STRING, 'DefectLabel output, one per labelled pair')),
    'image_qos_reliability': (
        'best_effort',
        _descriptor(
            _STRING, 'image/camera_info subscriptions: best_effort (sensor data, any publisher) or reliable'
        ),
    ),
    'image_queue_depth': (
        10,
        _descriptor(_INT, 'frames each image subscription holds while the node is busy', int_range=(1, 100)),
    ),
    'classes': (
        list(DEFAULT_CLASSES),
        _descriptor(ParameterType.PARAMETER_STRING_ARRAY, 'labels an operator may give'),
    ),
    'pair_slop_ms': (
        15.0,
        _descriptor(_DOUBLE, 'max rgb/depth stamp difference of a pair', float_range=(0.0, 1000.0)),
    ),
    'max_capture_count': (
        100,
        _descriptor(_INT, 'most pairs one Capture call may ask for', int_range=(1, 100000)),
    ),
    'capture_timeout_s': (
        5.0,
        _descriptor(
            _DOUBLE, 'a capture fails when no pair arrives for it for this long', float_range=(0.1, 600.0)
        ),
    ),
    'recording_dir': (
        '~/weldvision/sessions',
        _descriptor(_STRING, 'one rosbag2 directory per session goes here'),
    ),
    'export_dir': (
        '~/weldvision/exports',
        _descriptor(_STRING, 'default folder of exported .tar.gz sessions'),
    ),
    'storage': ('mcap', _descriptor(_STRING, 'rosbag2 storage: mcap or sqlite3')),
    'record_format': ('raw', _descriptor(_STRING, 'raw Images, or compressed (JPEG + compressedDepth PNG)')),
    'jpeg_quality': (90, _descriptor(_INT, 'JPEG quality of compressed rgb', int_range=(1, 100))),
    'depth_png_level': (
        0,
        _descriptor(
            _INT,
            'zlib level of compressedDepth PNG: 0 keeps up with 30 Hz VGA (stored, ~half of raw 32FC1), '
            '1 is ~35 % smaller but several times slower',
            int_range=(0, 9),
        ),
    ),
    'record_all_pairs': (False, _descriptor(_BOOL, 'record every pair of a session, not only labelled ones')),
    'auto_start_session': (True, _descriptor(_BOOL, 'a capture with no session open starts one named auto')),
    'min_free_space_mb': (
        500.0,
        _descriptor(
            _DOUBLE, 'recording stops before free disk space falls below this', float_range=(0.0, 1.0e9)
        ),
    ),
    'max_session_size_mb': (
        0.0,
        _descriptor(
            _DOUBLE,
            'recording stops when a session reaches this size (0 = no limit)',
            float_range=(0.0, 1.0e9),
        ),
    ),
    'fsync_interval_s': (
        1.0,
        _descriptor(
            _DOUBLE,
            'bag data is fsynced at most this long after a write (power loss)',
            float_range=(0.0, 60.0),
        ),
    ),
    'write_queue_pairs': (
        60,
        _descriptor(
            _INT,
            'pairs waiting for the disk/compression before new ones are dropped (RAM)',
            int_range=(1, 10000),
        ),
    ),
    'diagnostics_period_s': (1.0, _descriptor(_DOUBLE, 'period of /diagnostics', float_range=(0.1, 60.0))),
}


class LabelerNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        values = {
            name: self.declare_parameter(name, default, descriptor).value
            for name, (default, descriptor) in PARAMETERS.items()
        }
        for name, allowed in (
            ('image_qos_reliability', RELIABILITIES),
            ('storage', tuple(STORAGES)),
            ('record_format', RECORD_FORMATS),
        ):
            if values[name] not in allowed:
                raise LabelerError(
                    f'parameter {name} must be one of {", ".join(allowed)}, got {values[name]!r}'
                )
        topics = RecordTopics(
            values['rgb_topic'],
            values['depth_topic'],
            values['rgb_info_topic'],
            values['depth_info_topic'],
            values['labels_topic'],
        )
        config = LabelerConfig(
            topics=topics,
            classes=tuple(values['classes']),
            recording_dir=Path(values['recording_dir']),
            export_dir=Path(values['export_dir']),
            storage=values['storage'],
            record_format=values['record_format'],
            jpeg_quality=values['jpeg_quality'],
            depth_png_level=values['depth_png_level'],
            record_all_pairs=values['record_all_pairs'],
            auto_start_session=values['auto_start_session'],
            max_capture_count=values['max_capture_count'],
            capture_timeout_s=values['capture_timeout_s'],
            pair_slop_ms=values['pair_slop_ms'],
            min_free_space_mb=values['min_free_space_mb'],
            max_session_size_mb=values['max_session_size_mb'],
            fsync_interval_s=values['fsync_interval_s'],
            write_queue_pairs=values['write_queue_pairs'],
        )
        self._labels = self.create_publisher(
            DefectLabel,
            topics.labels,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST),
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', QoSProfile(depth=10))
        self.labeler = Labeler(config, publish=self._publish_label, warn=self._warn)
        for line in self.labeler.start():
            self.get_logger().warning(f'recovery: {line}')

        image_qos = QoSProfile(
            depth=values['image_queue_depth'],
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE
            if values['image_qos_reliability'] == 'reliable'
            else qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        frames = MutuallyExclusiveCallbackGroup()
        for msg_type, topic, callback in (
            (Image, topics.rgb, self.labeler.on_rgb),
            (Image, topics.depth, self.labeler.on_depth),
            (CameraInfo, topics.rgb_info, self.labeler.on_rgb_info),
            (CameraInfo, topics.depth_info, self.labeler.on_depth_info),
        ):
            self.create_subscription(
                msg_type, topic, self._guarded_frames(callback), image_qos, callback_group=frames, raw=True
            )

        services = ReentrantCallbackGroup()
        self.create_service(Capture, '~/capture', self._guarded(self._capture), callback_group=services)
        self.create_service(
            StartSession, '~/start_session', self._guarded(self._start_session), callback_group=services
        )
        self.create_service(
            StopSession, '~/stop_session', self._guarded(self._stop_session), callback_group=services
        )
        self.create_service(
            ListSessions, '~/list_sessions', self._guarded(self._list_sessions), callback_group=services
        )
        self.create_service(
            ExportSession, '~/export_session', self._guarded(self._export_session), callback_group=services
        )
        self.create_service(
            SetContinuousLabel,
            '~/set_continuous_label',
            self._guarded(self._set_continuous_label),
            callback_group=services,
        )
        self.create_timer(
            values['diagnostics_period_s'],
            self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.get_logger().info(
            f'labelling {topics.rgb} + {topics.depth} into {self.labeler.store.folder} '
            f'({config.storage}, {config.record_format}, classes {", ".join(config.classes)})'
        )

    def _guarded(self, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """A service handler that answers (and logs) instead of taking the node down on a bug."""

        def answer(request: Any, response: Any) -> Any:
            try:
                return handler(request, response)
            except Exception as exc:  # a failed call must not end the recording of others
                self.get_logger().error(f'{handler.__name__} failed: {exc!r}\n{traceback.format_exc()}')
                if hasattr(response, 'success'):
                    response.success, response.message = False, f'internal error in the labeler: {exc!r}'
                return response

        return answer

    def _guarded_frames(self, callback: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def receive(data: bytes) -> None:
            try:
                callback(data)
            except Exception as exc:  # a bad frame is dropped and counted, never a crash
                self.labeler.stats.rejected_frames += 1
                self.get_logger().error(f'frame dropped: {exc!r}', throttle_duration_sec=5.0)

        return receive

    def _publish_label(self, event: LabelEvent) -> None:
        message = DefectLabel(label=event.label, session_id=event.session_id, note=event.note)
        message.header.stamp.sec, message.header.stamp.nanosec = ns_to_sec_nanosec(event.stamp_ns)
        message.header.frame_id = event.frame_id
        self._labels.publish(message)

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _capture(self, request: Capture.Request, response: Capture.Response) -> Capture.Response:
        outcome = self.labeler.capture(request.label, request.count, request.note)
        response.success, response.message = outcome.success, outcome.message
        response.captured, response.session_id = outcome.captured, outcome.session_id
        text = f'capture {request.label!r} x{request.count}: {outcome.message}'
        if outcome.success:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        return response

    def _start_session(
        self, request: StartSession.Request, response: StartSession.Response
    ) -> StartSession.Response:
        info = SessionInfo(
            session_id='',
            name=request.name,
            operator_name=request.operator_name,
            material=request.material,
            process=request.process,
            wire=request.wire,
            current_a=float(request.current_a),
            note=request.note,
        )
        try:
            info = self.labeler.start_session(info)
        except (WeldError, OSError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success, response.message = True, f'recording session {info.session_id}'
        response.session_id, response.bag_path = (
            info.session_id,
            str(self.labeler.store.bag_path(info.session_id)),
        )
        self.get_logger().info(f'session {info.session_id} started: {response.bag_path}')
        return response

    def _stop_session(
        self, request: StopSession.Request, response: StopSession.Response
    ) -> StopSession.Response:
        try:
            info = self.labeler.stop_session()
        except (WeldError, OSError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success = True
        response.message = (
            f'session {info.session_id} stopped: {info.pairs_recorded} pairs, {info.labels_recorded} labels'
        )
        response.session_id, response.bag_path = (
            info.session_id,
            str(self.labeler.store.bag_path(info.session_id)),
        )
        response.pairs_recorded = info.pairs_recorded
        self.get_logger().info(response.message)
        return response

    def _list_sessions(
        self, request: ListSessions.Request, response: ListSessions.Response
    ) -> ListSessions.Response:
        sessions = self.labeler.sessions()
        response.session_ids = [info.session_id for info in sessions]
        response.bag_paths = [str(self.labeler.store.bag_path(info.session_id)) for info in sessions]
        response.pairs_recorded = [info.pairs_recorded for info in sessions]
        response.active_session_id = self.labeler.session.session_id if self.labeler.session else ''
        return response

    def _export_session(
        self, request: ExportSession.Request, response: ExportSession.Response
    ) -> ExportSession.Response:
        try:
            archive = self.labeler.export(request.session_id, request.output_dir)
        except (WeldError, OSError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success, response.message, response.archive_path = (
            True,
            f'exported to {archive}',
            str(archive),
        )
        self.get_logger().info(response.message)
        return response

    def _set_continuous_label(
        self, request: SetContinuousLabel.Request, response: SetContinuousLabel.Response
    ) -> SetContinuousLabel.Response:
        try:
            response.message = self.labeler.set_continuous(request.label, request.note)
            response.success = True
        except (WeldError, OSError) as exc:
            response.success, response.message = False, str(exc)
        return response

    def _publish_diagnostics(self) -> None:
        values = self.labeler.status()
        status = DiagnosticStatus(
            name=f'{self.get_name()}: recording', hardware_id=self.get_fully_qualified_name()
        )
        stopped_by_guard = (
            values['last_stop_reason'].startswith('recording stopped') and not values['active_session']
        )
        not_recorded = int(values['pairs_not_recorded'])
        if stopped_by_guard:
            status.level, status.message = DiagnosticStatus.ERROR, values['last_stop_reason']
        elif not_recorded:
            status.level = DiagnosticStatus.WARN
            status.message = f'{not_recorded} pair(s) not recorded (bad frames or the write queue was full)'
        elif values['active_session']:
            status.level, status.message = (
                DiagnosticStatus.OK,
                f'recording session {values["active_session"]}',
            )
        else:
            status.level, status.message = DiagnosticStatus.OK, 'no session recording'
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def close(self) -> None:
        """Close the active session so its bag is complete (no recovery needed after Ctrl-C)."""
        try:
            info = self.labeler.shutdown()
        except Exception as exc:  # shutdown goes on; the next start recovers the bag
            self.get_logger().error(
                f'could not close the session cleanly: {exc!r}; it is recovered at next start'
            )
            return
        if info is not None:
            self.get_logger().info(
                f'session {info.session_id} closed at shutdown: {info.pairs_recorded} pairs'
            )


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    executor = MultiThreadedExecutor(num_threads=4)
    node: LabelerNode | None = None
    code = 0
    try:
        node = LabelerNode()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (WeldError, InvalidParameterValueException) as exc:
        print(f'weld_labeler: {exc}', file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.close()
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
