"""Replay of a rosbag2 recording (rosbags, no ROS install needed): raw or compressed, labelled or not.

Reads bags recorded by weld_labeler and plain ``ros2 bag record`` bags of the contract topics
(mcap or sqlite3): colour as Image or ``/compressed``, depth as Image or ``/compressedDepth``.
Frames are paired by stamp (exact, else within the slop) and paced by their header stamps
(``rate_hz`` None: the recorded timing) or at a fixed rate, optionally looped. A ``/weld/labels``
DefectLabel whose stamp equals a pair's stamp travels with that pair as its ground truth.
"""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader

from weld_camera.errors import SourceError
from weld_camera.frames import CameraFrame, Intrinsics
from weld_camera.sources.prefetch import Prefetcher
from weld_camera.sources.relay import depth_fields, rgb_fields
from weld_core.bag_types import CAMERA_INFO, COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE, weld_typestore
from weld_core.errors import ImageFormatError
from weld_core.pairing import FramePairer
from weld_core.stamps import stamp_to_ns

RGB_TOPICS = ('/weld/rgb/image_raw', '/weld/rgb/image_raw/compressed')
DEPTH_TOPICS = ('/weld/depth/image_raw', '/weld/depth/image_raw/compressedDepth')
RGB_INFO_TOPIC = '/weld/rgb/camera_info'
DEPTH_INFO_TOPIC = '/weld/depth/camera_info'
LABEL_TOPIC = '/weld/labels'
_IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


def _open(path: Path) -> AnyReader:
    reader = AnyReader([path], default_typestore=weld_typestore())
    try:
        reader.open()
    except Exception as exc:  # rosbags raises its own errors for every kind of broken bag
        raise SourceError(f'cannot read bag {str(path)!r}: {type(exc).__name__}: {exc}') from exc
    return reader


def _pick(reader: AnyReader, topics: tuple[str, ...], what: str) -> Any:
    """The connection of the first of ``topics`` the bag has as an image type."""
    by_topic = {conn.topic: conn for conn in reader.connections if conn.msgtype in _IMAGE_TYPES}
    for topic in topics:
        if topic in by_topic:
            return by_topic[topic]
    present = ', '.join(sorted(f'{c.topic} ({c.msgtype})' for c in reader.connections)) or 'none'
    raise SourceError(f'bag has no {what} topic ({" or ".join(topics)}); its topics: {present}')


class ReplaySource:
    """Frame pairs of a bag, produced ahead by a worker thread; ``get`` returns None at the end."""

    def __init__(
        self,
        bag_path: Path,
        depth_encoding: str,
        rate_hz: float | None,
        loop: bool,
        slop_ns: int,
        prefetch_frames: int = 3,
    ) -> None:
        self.bag_path = Path(bag_path)
        self._depth_encoding = depth_encoding
        self._fixed_rate = rate_hz is not None
        self._loop = loop
        self._slop_ns = slop_ns
        self.labels: dict[int, tuple[str, str]] = {}
        self.intrinsics: Intrinsics | None = None
        self.depth_intrinsics: Intrinsics | None = None
        self.rejected = 0
        self.last_rejection = ''
        self.loops = 0
        # inspect now so a wrong bag fails at configure; the worker thread opens its own reader
        # (sqlite connections belong to the thread that opened them)
        reader = _open(self.bag_path)
        try:
            self.rgb_topic = _pick(reader, RGB_TOPICS, 'colour').topic
            self.depth_topic = _pick(reader, DEPTH_TOPICS, 'depth').topic
            self._read_side_topics(reader)
        finally:
            reader.close()
        self._prefetch = Prefetcher(self._produce, prefetch_frames, 'weld_camera-replay')
        self._frames: Iterator[CameraFrame] | None = None

    def _read_side_topics(self, reader: AnyReader) -> None:
        # reader.messages(connections=[]) means every connection: ask only for topics the bag has
        label_conns = [c for c in reader.connections if c.topic == LABEL_TOPIC and c.msgtype == DEFECT_LABEL]
        for conn, _, raw in reader.messages(connections=label_conns) if label_conns else ():
            msg = reader.deserialize(raw, conn.msgtype)
            self.labels[stamp_to_ns(msg.header.stamp)] = (str(msg.label), str(msg.note))
        for topic in (RGB_INFO_TOPIC, DEPTH_INFO_TOPIC):
            conns = [c for c in reader.connections if c.topic == topic and c.msgtype == CAMERA_INFO]
            for conn, _, raw in reader.messages(connections=conns) if conns else ():
                info = Intrinsics.from_msg(reader.deserialize(raw, conn.msgtype))
                if topic == RGB_INFO_TOPIC:
                    self.intrinsics = info
                else:
                    self.depth_intrinsics = info
                break

    def _produce(self) -> CameraFrame | None:
        if self._frames is None:
            self._frames = self._frame_stream()
        return next(self._frames, None)

    def _frame_stream(self) -> Iterator[CameraFrame]:
        loop_offset_ns = 0
        while True:
            first_ns: int | None = None
            last_due_ns = 0
            count = 0
            reader = _open(self.bag_path)
            try:
                conns = [c for c in reader.connections if c.topic in (self.rgb_topic, self.depth_topic)]
                pairer: FramePairer[Any] = FramePairer(slop_ns=self._slop_ns)
                for conn, _, raw in reader.messages(connections=conns):
                    msg = reader.deserialize(raw, conn.msgtype)
                    stamp_ns = stamp_to_ns(msg.header.stamp)
                    is_rgb = conn.topic == self.rgb_topic
                    pairs = pairer.add_rgb(stamp_ns, msg) if is_rgb else pairer.add_depth(stamp_ns, msg)
                    for pair in pairs:
                        try:
                            rgb = rgb_fields(pair.rgb)
                            depth = depth_fields(pair.depth, self._depth_encoding)
                        except ImageFormatError as exc:
                            self.rejected += 1
                            self.last_rejection = str(exc)
                            continue
                        first_ns = pair.stamp_ns if first_ns is None else first_ns
                        # stamps that step back are played at once, never before the previous pair
                        last_due_ns = max(last_due_ns, pair.stamp_ns - first_ns)
                        label, note = self.labels.get(pair.stamp_ns, (None, ''))
                        count += 1
                        yield CameraFrame(
                            rgb=rgb,
                            depth=depth,
                            stamp_ns=pair.stamp_ns,
                            due_ns=None if self._fixed_rate else loop_offset_ns + last_due_ns,
                            label=label,
                            note=note,
                            intrinsics=self.intrinsics,
                            depth_intrinsics=self.depth_intrinsics,
                        )
            finally:
                reader.close()
            if count == 0:
                raise SourceError(
                    f'bag {str(self.bag_path)!r} holds no playable frame pairs on {self.rgb_topic} and '
                    f'{self.depth_topic} ({self.rejected} rejected: {self.last_rejection or "none"})'
                )
            if not self._loop:
                return
            self.loops += 1
            # the next pass starts one mean frame interval after this one ended
            loop_offset_ns += last_due_ns + (last_due_ns // max(count - 1, 1) if count > 1 else 100_000_000)

    def start(self) -> None:
        self._prefetch.start()

    def get(self, stop: threading.Event) -> CameraFrame | None:
        return self._prefetch.get(stop)

    def stop(self) -> None:
        self._prefetch.stop()

    def close(self) -> None:
        self._prefetch.stop()
        if self._frames is not None:
            self._frames.close()
            self._frames = None

    def counters(self) -> dict[str, float | int | str]:
        return {
            'bag_frames_read': self._prefetch.produced,
            'bag_loops': self.loops,
            'bag_rejected': self.rejected,
            'bag_labels': len(self.labels),
            'decode_cpu_s': round(self._prefetch.worker_cpu_s, 4),
        }
