"""weld_console node: the operator console, an rclpy node and its web server in one process.

It takes the camera raw from DDS's own queue only when it needs a pair (:mod:`~weld_console.tap`:
at ``preview_rate_hz`` while a page watches, and for a label's or a reviewed result's frame; pairs
are decoded only then), subscribes the inference results and the rules' measurements, the labels and
/diagnostics; it calls the labeler's services for the page and serves the page itself
(:mod:`weld_console.server`). The algorithms are plain modules: previews and sensor health
(:mod:`~weld_console.preview`), the review queue (:mod:`~weld_console.review`), the models panel
(:mod:`~weld_console.models_panel`), the gathered state (:mod:`~weld_console.state`) and who may
connect (:mod:`~weld_console.security`).

    ros2 run weld_console console_node --ros-args -p host:=0.0.0.0     # then http://<board>:8080/
"""

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from weld_console.errors import ConfigError
from weld_console.feed import PREVIEW, LiveFeed, pack_preview
from weld_console.frames import FrameBuffer, RawPair
from weld_console.labeler_client import LabelerClient
from weld_console.models_panel import ModelsPanel
from weld_console.preview import legend_colours, render_preview, thumbnail_jpeg
from weld_console.review import ReviewItem, ReviewQueue, ReviewRecorder, ReviewSelector
from weld_console.security import is_loopback, load_or_create_token
from weld_console.server import ConsoleServer, ServerSettings
from weld_console.state import Capture, GraphState
from weld_console.tap import Tap
from weld_core.bag_types import IMAGE, weld_typestore
from weld_core.classes import DEFAULT_CLASSES, check_class_list
from weld_core.errors import WeldError
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.stamps import stamp_to_ns
from weld_inference.worker import LatestFrameWorker
from weld_interfaces.msg import DefectLabel, DefectResult
from weld_labeler.recorder import RECORD_FORMATS, STORAGES, RecordTopics
from weld_labeler.storage_guard import MB, StorageGuard

NODE_NAME = 'weld_console'
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# the camera's frames wait in the DDS reader (KEEP_LAST) until the console takes them: deep enough
# for half a second at 15 Hz (a label or a result arrives well within it), nothing piles up
TAP_DEPTH = 8
IMAGE_QOS = QoSProfile(
    depth=TAP_DEPTH,
    history=HistoryPolicy.KEEP_LAST,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
INFO_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
REVIEW_WRITES_WAITING = 4  # review items on their way to disk; more are dropped (counted)


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
    'host': (
        '127.0.0.1',
        _descriptor(
            _STRING, 'address to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 / an address (token)'
        ),
    ),
    'port': (
        8080,
        _descriptor(_INT, 'TCP port of the page (0 = any free port, logged)', int_range=(0, 65535)),
    ),
    'token_file': (
        '~/.weldvision/console_token',
        _descriptor(_STRING, 'the access token, created (mode 0600) at the first start beyond loopback'),
    ),
    'require_token': (
        False,
        _descriptor(_BOOL, 'ask for the token on loopback too (e.g. when an SSH tunnel or proxy exposes it)'),
    ),
    'max_upload_mb': (
        200.0,
        _descriptor(_DOUBLE, 'largest model file the page may upload', float_range=(1.0, 10000.0)),
    ),
    'preview_rate_hz': (
        5.0,
        _descriptor(_DOUBLE, 'live previews per second while a page watches', float_range=(0.2, 30.0)),
    ),
    'preview_width_px': (
        480,
        _descriptor(_INT, 'previews are scaled down to at most this width', int_range=(64, 4096)),
    ),
    'jpeg_quality': (75, _descriptor(_INT, 'JPEG quality of previews', int_range=(10, 100))),
    'max_depth_dropout': (
        0.25,
        _descriptor(
            _DOUBLE, 'share of missing depth above which a frame is flagged unfit', float_range=(0.0, 1.0)
        ),
    ),
    'max_saturated': (
        0.05,
        _descriptor(
            _DOUBLE,
            'share of clipped (glare) pixels above which a frame is flagged unfit',
            float_range=(0.0, 1.0),
        ),
    ),
    'rgb_topic': ('/weld/rgb/image_raw', _descriptor(_STRING, 'colour images (rgb8/bgr8)')),
    'depth_topic': (
        '/weld/depth/image_raw',
        _descriptor(_STRING, 'registered depth (32FC1 m, 16UC1/mono16 mm)'),
    ),
    'rgb_info_topic': ('/weld/rgb/camera_info', _descriptor(_STRING, 'CameraInfo of the colour camera')),
    'depth_info_topic': ('/weld/depth/camera_info', _descriptor(_STRING, 'CameraInfo of the depth camera')),
    'defects_topic': ('/weld/defects', _descriptor(_STRING, 'DefectResults of the inference node')),
    'measurements_topic': (
        '/weld/rule_measurements',
        _descriptor(_STRING, "the rules' label and measurements (mm) of each pair they ran on"),
    ),
    'labels_topic': ('/weld/labels', _descriptor(_STRING, "the labeler's DefectLabels")),
    'labeler_node': ('weld_labeler', _descriptor(_STRING, 'node whose services label and record')),
    'inference_node': (
        'weld_inference',
        _descriptor(_STRING, 'node whose /diagnostics name the running model'),
    ),
    'classes': (
        list(DEFAULT_CLASSES),
        _descriptor(ParameterType.PARAMETER_STRING_ARRAY, 'class buttons, keys 1..N'),
    ),
    'pair_slop_ms': (
        15.0,
        _descriptor(_DOUBLE, 'max rgb/depth stamp difference of a pair', float_range=(0.0, 1000.0)),
    ),
    'frame_buffer_pairs': (
        15,
        _descriptor(_INT, 'recent raw pairs kept for thumbnails and review items (RAM)', int_range=(1, 300)),
    ),
    'models_dir': (
        '/opt/weldvision/models/',
        _descriptor(_STRING, "the inference node's models folder (uploads and switches go here)"),
    ),
    'recording_dir': (
        '~/weldvision/sessions',
        _descriptor(
            _STRING, "the labeler's recording folder (read only: frames per class of stopped sessions)"
        ),
    ),
    'export_dir': (
        '~/weldvision/exports',
        _descriptor(_STRING, 'exported .tar.gz sessions are written here and downloaded from here'),
    ),
    'review_dir': (
        '~/weldvision/review',
        _descriptor(_STRING, 'review queue (items/) and the review sessions it labels (sessions/)'),
    ),
    'review_margin': (
        0.2,
        _descriptor(
            _DOUBLE, 'a model answer whose top-2 margin is below this is queued', float_range=(0.0, 1.0)
        ),
    ),
    'review_min_interval_s': (
        1.0,
        _descriptor(
            _DOUBLE,
            'at most one frame queued per this long (a scan repeats itself)',
            float_range=(0.0, 3600.0),
        ),
    ),
    'review_max_items': (
        200,
        _descriptor(
            _INT, 'frames the review queue keeps (the least informative go first)', int_range=(1, 100000)
        ),
    ),
    'storage': ('mcap', _descriptor(_STRING, 'rosbag2 storage of review sessions: mcap or sqlite3')),
    'record_format': (
        'compressed',
        _descriptor(_STRING, 'review sessions: raw Images, or compressed (JPEG + compressedDepth PNG)'),
    ),
    'min_free_space_mb': (
        500.0,
        _descriptor(
            _DOUBLE, 'review frames are not stored below this much free disk', float_range=(0.0, 1.0e9)
        ),
    ),
    'service_timeout_s': (
        60.0,
        _descriptor(_DOUBLE, "longest wait for a labeler service's answer", float_range=(1.0, 3600.0)),
    ),
    'capture_history': (12, _descriptor(_INT, 'thumbnails of the last captures shown', int_range=(1, 100))),
    'status_period_s': (
        1.0,
        _descriptor(_DOUBLE, 'status pushed to the page every', float_range=(0.1, 60.0)),
    ),
}


class ConsoleNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        values = {
            name: self.declare_parameter(name, default, descriptor).value
            for name, (default, descriptor) in PARAMETERS.items()
        }
        for name, allowed in (('storage', tuple(STORAGES)), ('record_format', RECORD_FORMATS)):
            if values[name] not in allowed:
                raise ConfigError(
                    f'parameter {name} must be one of {", ".join(allowed)}, got {values[name]!r}'
                )
        self.values = values
        self.classes = check_class_list(values['classes'])
        self.frames = FrameBuffer(int(values['pair_slop_ms'] * 1e6), values['frame_buffer_pairs'])
        self.feed = LiveFeed()
        self.state = GraphState(values['recording_dir'], values['capture_history'])
        self.selector = ReviewSelector(values['review_margin'], values['review_min_interval_s'])
        review_dir = Path(values['review_dir']).expanduser()
        guard = StorageGuard(review_dir, values['min_free_space_mb'])
        self.review_queue = ReviewQueue(review_dir, values['review_max_items'], guard)
        topics = RecordTopics(
            values['rgb_topic'],
            values['depth_topic'],
            values['rgb_info_topic'],
            values['depth_info_topic'],
            values['labels_topic'],
        )
        self.review_recorder = ReviewRecorder(
            review_dir / 'sessions',
            self.classes,
            topics,
            values['storage'],
            values['record_format'],
            values['min_free_space_mb'],
        )
        for note in [*self.review_queue.load(), *self.review_recorder.start()]:
            self.get_logger().warning(f'review: {note}')
        self.models = ModelsPanel(values['models_dir'], int(values['max_upload_mb'] * MB))

        host = values['host'].strip()
        if not host:
            raise ConfigError('parameter host is empty: 127.0.0.1 (this machine) or 0.0.0.0 (every address)')
        self.token, self.token_created = '', False
        if not is_loopback(host) or values['require_token']:
            self.token, self.token_created = load_or_create_token(Path(values['token_file']))
        self.server = ConsoleServer(
            ServerSettings(
                host=host,
                port=values['port'],
                token=self.token,
                classes=self.classes,
                export_dir=Path(values['export_dir']).expanduser(),
                max_upload_bytes=int(values['max_upload_mb'] * MB),
                page_config={
                    'preview_rate_hz': values['preview_rate_hz'],
                    'depth_colours': legend_colours(),
                    'labeler_node': values['labeler_node'],
                    'review_margin': values['review_margin'],
                },
            ),
            self.feed,
            LabelerClient(self, values['labeler_node'], values['service_timeout_s']),
            self.state,
            self.review_queue,
            self.review_recorder,
            self.models,
        )
        self.previewer: LatestFrameWorker[RawPair] = LatestFrameWorker(
            self._render_preview,
            values['preview_rate_hz'],
            lambda _pair: self.state.count('previews_skipped'),
            lambda exc: self._warn(f'preview failed: {type(exc).__name__}: {exc}'),
        )
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix='console-disk')
        self._disk_waiting: Counter[str] = Counter()
        self._preview_seq = 0
        self._infos: dict[str, bytes | None] = {'rgb_info': None, 'depth_info': None}  # last taken
        self._typestore = weld_typestore()
        self._labeler_id = '/' + values['labeler_node'].strip('/')
        self._inference_id = '/' + values['inference_node'].strip('/')

        self.tap = Tap(
            f'{self.get_name()}_frames',
            self.get_namespace(),
            self.context,
            {
                'rgb': (Image, self.resolve_topic_name(values['rgb_topic']), IMAGE_QOS),
                'depth': (Image, self.resolve_topic_name(values['depth_topic']), IMAGE_QOS),
                'rgb_info': (CameraInfo, self.resolve_topic_name(values['rgb_info_topic']), INFO_QOS),
                'depth_info': (CameraInfo, self.resolve_topic_name(values['depth_info_topic']), INFO_QOS),
            },
        )
        self.create_timer(1.0 / values['preview_rate_hz'], self._guarded(self._preview_tick))
        self.create_subscription(
            DefectResult, values['defects_topic'], self._guarded(self._on_result), RELIABLE
        )
        self.create_subscription(
            DiagnosticArray, values['measurements_topic'], self._guarded(self._on_measurements), RELIABLE
        )
        self.create_subscription(DefectLabel, values['labels_topic'], self._guarded(self._on_label), RELIABLE)
        self.create_subscription(
            DiagnosticArray, '/diagnostics', self._guarded(self._on_diagnostics), RELIABLE
        )
        self.create_timer(values['status_period_s'], self._guarded(self._publish_status))

    def start(self) -> str:
        """Start rendering and serving; returns the page's address."""
        self.previewer.start()
        port = self.server.start()
        host = self.server.settings.host
        shown = host if is_loopback(host) else '<board>' if host in ('0.0.0.0', '::') else host
        url = f'http://{"[" + shown + "]" if ":" in shown else shown}:{port}/'
        needs = f'token in {self.values["token_file"]}' if self.token else 'loopback only, no token'
        self.get_logger().info(f'operator console at {url} ({needs})')
        return url

    # --- callbacks: cheap, never wait for the disk or the page ----------------------------------
    def _guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        def run(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:  # one bad message must not take the console down
                self.state.count('callback_errors')
                self._warn(f'{callback.__name__} failed: {type(exc).__name__}: {exc}')

        return run

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _take_frames(self) -> list[RawPair]:
        """Pair the frames waiting in the tap into the frame buffer; the new pairs, oldest first."""
        pairs = [pair for data in self.tap.take('rgb') for pair in self.frames.add_rgb(data)]
        pairs += [pair for data in self.tap.take('depth') for pair in self.frames.add_depth(data)]
        if pairs:
            self.state.count('pairs_taken', len(pairs))
        return pairs

    def _preview_tick(self) -> None:
        if self.feed.viewers:  # nobody watching: the frames stay in DDS's queue, untouched
            pairs = self._take_frames()
            if pairs:
                self.previewer.submit(pairs[-1])

    def _frame(self, stamp_ns: int) -> RawPair | None:
        """The pair of ``stamp_ns``: in the buffer already, or among the frames waiting in the tap."""
        pair = self.frames.get(stamp_ns)
        if pair is None:
            self._take_frames()
            pair = self.frames.get(stamp_ns)
        return pair

    def _camera_info(self) -> tuple[bytes | None, bytes | None]:
        """The newest CameraInfo of each camera (the last one taken when none is waiting)."""
        for key in self._infos:
            taken = self.tap.take(key)
            if taken:
                self._infos[key] = taken[-1]
        return self._infos['rgb_info'], self._infos['depth_info']

    def _on_result(self, msg: DefectResult) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.state.count('results_received')
        self.feed.publish(
            'result',
            {
                'stamp_ns': stamp_ns,
                'label': msg.label,
                'confidence': float(msg.confidence),
                'class_names': list(msg.class_names),
                'scores': [float(s) for s in msg.scores],
                'source': msg.source,
                'model_id': msg.model_id,
                'fallback_reason': msg.fallback_reason,
                'latency_ms': float(msg.latency_ms),
            },
            hold=True,
        )
        item = self.selector.on_result(
            stamp_ns, msg.header.frame_id, msg.source, msg.label, msg.class_names, msg.scores, msg.model_id
        )
        if item is not None:
            self._queue_for_review(item)

    def _on_measurements(self, msg: DiagnosticArray) -> None:
        if not msg.status:
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        status = msg.status[0]
        values = {}
        for pair in status.values:
            with contextlib.suppress(ValueError):
                values[pair.key] = float(pair.value)
        self.feed.publish(
            'measurements',
            {'stamp_ns': stamp_ns, 'rules_label': status.message, 'values': values},
            hold=True,
        )
        item = self.selector.on_rules(stamp_ns, status.message)
        if item is not None:
            self._queue_for_review(item)

    def _on_label(self, msg: DefectLabel) -> None:
        self.state.on_label(msg.session_id, msg.label)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        pair = self._frame(stamp_ns)
        if pair is None:  # the label came later than frame_buffer_pairs frames: listed without a picture
            self.state.count('captures_without_frame')
            history = self.state.add_capture(Capture(stamp_ns, msg.label, msg.session_id, b''))
            self.feed.publish('captures', {'items': history})
            return
        self._on_disk(self._thumbnail, self.values['capture_history'], pair, msg.label, msg.session_id)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {pair.key: pair.value for pair in status.values}
            if status.hardware_id == self._labeler_id:
                self.state.on_labeler(int.from_bytes(bytes(status.level), 'little'), status.message, values)
            elif status.hardware_id == self._inference_id:
                self.state.on_inference(status.message, values)

    def _publish_status(self) -> None:
        snapshot = self.state.snapshot(captures=False)
        snapshot.pop('captures')
        snapshot['review'] = {
            'queued': len(self.review_queue),
            'max_items': self.review_queue.max_items,
            'selector': vars(self.selector.stats),
            'open_session': self.review_recorder.session.session_id if self.review_recorder.session else '',
            'open_session_labels': self.review_recorder.session.labels_recorded
            if self.review_recorder.session
            else 0,
        }
        snapshot['viewers'] = self.feed.viewers
        self.feed.publish('status', snapshot)

    # --- worker threads --------------------------------------------------------------------------
    def _decode(self, pair: RawPair) -> tuple[Any, Any]:
        # rosbags' CDR reader hands the pixels over as a view (a third cheaper than rclpy's copy)
        rgb = rgb_from_msg(self._typestore.deserialize_cdr(pair.rgb, IMAGE))
        depth_m = depth_m_from_msg(self._typestore.deserialize_cdr(pair.depth, IMAGE))
        return rgb, depth_m

    def _render_preview(self, pair: RawPair) -> None:
        rgb, depth_m = self._decode(pair)
        preview = render_preview(
            rgb,
            depth_m,
            self.values['preview_width_px'],
            self.values['jpeg_quality'],
            self.values['max_depth_dropout'],
            self.values['max_saturated'],
        )
        self._preview_seq += 1
        header = {
            'seq': self._preview_seq,
            'stamp_ns': pair.stamp_ns,
            'rendered_ns': time.time_ns(),
            'frame_id': pair.frame_id,
            'width': preview.width,
            'height': preview.height,
            'near_mm': round(preview.near_mm, 1),
            'far_mm': round(preview.far_mm, 1),
            'health': preview.health.as_dict(),
        }
        self.feed.publish(PREVIEW, pack_preview(header, preview.rgb_jpeg, preview.depth_jpeg))
        self.state.count('previews_sent')

    def _on_disk(self, work: Callable[..., None], limit: int, *args: Any) -> None:
        """Run ``work`` in the disk thread, at most ``limit`` of its kind waiting (else dropped, counted)."""
        kind = work.__name__
        if self._disk_waiting[kind] >= limit:
            self.state.count(f'{kind.strip("_")}_dropped')
            return
        self._disk_waiting[kind] += 1

        def run() -> None:
            try:
                work(*args)
            except Exception as exc:  # logged and counted; the next item is tried as usual
                self.state.count('disk_job_errors')
                self._warn(f'{kind} failed: {type(exc).__name__}: {exc}')
            finally:
                self._disk_waiting[kind] -= 1

        self._disk.submit(run)

    def _thumbnail(self, pair: RawPair, label: str, session_id: str) -> None:
        rgb, _ = self._decode(pair)
        history = self.state.add_capture(Capture(pair.stamp_ns, label, session_id, thumbnail_jpeg(rgb)))
        self.feed.publish('captures', {'items': history})

    def _queue_for_review(self, item: ReviewItem) -> None:
        pair = self._frame(item.stamp_ns)
        if pair is None:
            self.state.count('review_without_frame')
            return
        self._on_disk(self._store_review, REVIEW_WRITES_WAITING, item, pair, self._camera_info())

    def _store_review(self, item: ReviewItem, pair: RawPair, info: tuple[bytes | None, bytes | None]) -> None:
        rgb, depth_m = self._decode(pair)
        preview = render_preview(
            rgb,
            depth_m,
            self.values['preview_width_px'],
            90,
            self.values['max_depth_dropout'],
            self.values['max_saturated'],
        )
        admitted = self.review_queue.add(item, pair, preview.rgb_jpeg, preview.depth_jpeg, *info)
        self.state.count('review_queued' if admitted else 'review_not_admitted')
        self.feed.publish('review', {'queued': len(self.review_queue), 'changed_ns': time.time_ns()})

    def destroy_node(self) -> None:
        self.tap.destroy()
        super().destroy_node()

    def close(self) -> None:
        """Stop serving, finish the open review session (a complete bag), stop the threads."""
        self.server.stop()
        self.previewer.stop()
        self._disk.shutdown(wait=True)
        try:
            session = self.review_recorder.close()
        except Exception as exc:  # the next start recovers the bag
            self.get_logger().error(
                f'could not close the review session cleanly: {exc!r}; it is recovered at next start'
            )
            return
        if session is not None:
            self.get_logger().info(
                f'review session {session.session_id} closed: {session.labels_recorded} frames'
            )


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    executor = SingleThreadedExecutor()
    node: ConsoleNode | None = None
    code = 0
    try:
        node = ConsoleNode()
        url = node.start()
        if node.token_created:
            # printed once, to the terminal only (never to the ROS log files); it is kept in token_file
            print(
                'weld_console: new access token '
                f'(shown once, kept in {node.values["token_file"]}, mode 0600):\n'
                f'  {node.token}\n  open {url}#token={node.token}',
                flush=True,
            )
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (WeldError, InvalidParameterValueException) as exc:
        print(f'weld_console: {exc}', file=sys.stderr)
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
