"""One session's rosbag2 directory, written with rosbags; each frame pair is on disk once written.

The recorder takes frames as CDR bytes (what a ``raw=True`` subscription hands over). In ``raw``
format they go into the bag untouched; in ``compressed`` format they become JPEG on
``<rgb topic>/compressed`` and compressedDepth PNG on ``<depth topic>/compressedDepth``, as
image_transport would publish them. Labels are DefectLabel messages on the labels topic whose
header is the rgb frame's.

rosbags' mcap writer keeps messages in a memory chunk of up to 1 MiB and writes the summary and
``metadata.yaml`` only at close; a killed process would lose that chunk and leave no metadata.
So after every pair the chunk is closed and the file flushed (sqlite3: committed): a killed
process loses at most the pair being written, and :mod:`weld_labeler.recovery` rebuilds the
summary and metadata at the next start.
"""

import os
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

from weld_core.bag_types import CAMERA_INFO, COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE, weld_typestore
from weld_core.errors import ImageFormatError
from weld_core.images import compress_depth, compress_rgb, depth_m_from_msg, rgb_from_msg
from weld_core.stamps import ns_to_sec_nanosec
from weld_labeler.errors import RecorderError

RecordFormat = Literal['raw', 'compressed']
RECORD_FORMATS: tuple[str, ...] = ('raw', 'compressed')
STORAGES: dict[str, StoragePlugin] = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# metadata.yaml version 8 keeps offered_qos_profiles as a YAML string, which Humble's rosbag2
# (the board's `ros2 bag info`) parses; version 9 turns it into a list Humble cannot read.
BAG_VERSION: Literal[8] = 8
_DEPTH_MM_ENCODINGS = ('16UC1', 'mono16')


@dataclass(frozen=True)
class RecordTopics:
    """Topics the frames come from; bag topics follow them (plus suffixes when compressed)."""

    rgb: str = '/weld/rgb/image_raw'
    depth: str = '/weld/depth/image_raw'
    rgb_info: str = '/weld/rgb/camera_info'
    depth_info: str = '/weld/depth/camera_info'
    labels: str = '/weld/labels'


@dataclass(frozen=True)
class PairLabel:
    """What a DefectLabel in the bag says about a pair."""

    label: str
    session_id: str
    note: str = ''


@dataclass
class PreparedPair:
    """A pair serialised for the bag, not yet written; ``nbytes`` lets the guard check first."""

    stamp_ns: int
    messages: list[tuple[str, bytes | memoryview]] = field(default_factory=list)
    label: PairLabel | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.messages)


def _share_sqlite_connection(storage: Sqlite3Writer) -> None:
    """Reopen rosbags' sqlite3 connection so any thread may use it.

    The node writes from subscription threads and closes from service threads (callers serialise
    every call under one lock); Python's sqlite3 refuses a connection used outside the thread
    that opened it unless it is opened with ``check_same_thread=False``.
    """
    storage.conn.commit()
    storage.conn.close()
    storage.conn = sqlite3.connect(f'file:{storage.path}', uri=True, check_same_thread=False)
    storage.cursor = storage.conn.cursor()


class BagRecorder:
    """Writes frame pairs, camera infos and labels of one session into one rosbag2 directory."""

    def __init__(
        self,
        path: Path | str,
        topics: RecordTopics | None = None,
        storage: str = 'mcap',
        record_format: str = 'raw',
        jpeg_quality: int = 90,
        depth_png_level: int = 0,
    ) -> None:
        if storage not in STORAGES:
            raise RecorderError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
        if record_format not in RECORD_FORMATS:
            raise RecorderError(
                f'record_format must be one of {", ".join(RECORD_FORMATS)}, got {record_format!r}'
            )
        if not 1 <= int(jpeg_quality) <= 100:
            raise RecorderError(f'jpeg_quality must be 1..100, got {jpeg_quality}')
        self.path = Path(path)
        self.topics = topics or RecordTopics()
        self.storage = storage
        self.record_format = record_format
        if not 0 <= int(depth_png_level) <= 9:
            raise RecorderError(f'depth_png_level must be 0..9, got {depth_png_level}')
        self.jpeg_quality = int(jpeg_quality)
        self.depth_png_level = int(depth_png_level)
        self.pairs_written = 0
        self.labels_written = 0
        self.bytes_written = 0
        self.label_counts: dict[str, int] = {}
        self._typestore = weld_typestore()
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}
        self._encoder: ThreadPoolExecutor | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def bag_topics(self) -> dict[str, str]:
        """Bag topic -> message type, as this recorder writes them."""
        if self.record_format == 'compressed':
            frames = {
                self.topics.rgb + '/compressed': COMPRESSED_IMAGE,
                self.topics.depth + '/compressedDepth': COMPRESSED_IMAGE,
            }
        else:
            frames = {self.topics.rgb: IMAGE, self.topics.depth: IMAGE}
        return {
            **frames,
            self.topics.rgb_info: CAMERA_INFO,
            self.topics.depth_info: CAMERA_INFO,
            self.topics.labels: DEFECT_LABEL,
        }

    def open(self) -> None:
        """Create the bag directory (it must not exist) and register every topic."""
        if self._writer is not None:
            raise RecorderError(f'bag {self.path} is already open')
        try:
            writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[self.storage])
            writer.open()
        except Exception as exc:
            raise RecorderError(f'cannot create bag {self.path}: {exc}') from exc
        if isinstance(writer.storage, Sqlite3Writer):
            _share_sqlite_connection(writer.storage)
        for topic, msgtype in self.bag_topics.items():
            self._connections[topic] = writer.add_connection(topic, msgtype, typestore=self._typestore)
        self._writer = writer

    def prepare_pair(
        self,
        rgb_cdr: bytes | memoryview,
        depth_cdr: bytes | memoryview,
        stamp_ns: int,
        frame_id: str,
        rgb_info_cdr: bytes | memoryview | None = None,
        depth_info_cdr: bytes | memoryview | None = None,
        label: PairLabel | None = None,
    ) -> PreparedPair:
        """Serialise a pair (and its label) for the bag; raises ImageFormatError on bad frames."""
        prepared = PreparedPair(stamp_ns=int(stamp_ns), label=label)
        if self.record_format == 'compressed':
            # OpenCV encodes without the GIL: JPEG and PNG of one pair run side by side
            rgb_future = self._pool().submit(self._compress_rgb, rgb_cdr)
            depth_topic, depth_data = self.topics.depth + '/compressedDepth', self._compress_depth(depth_cdr)
            rgb_topic, rgb_data = self.topics.rgb + '/compressed', rgb_future.result()
        else:
            rgb_topic, rgb_data = self.topics.rgb, rgb_cdr
            depth_topic, depth_data = self.topics.depth, depth_cdr
        prepared.messages += [(rgb_topic, rgb_data), (depth_topic, depth_data)]
        # the latest camera infos travel with every pair so any slice of the bag has intrinsics
        if rgb_info_cdr is not None:
            prepared.messages.append((self.topics.rgb_info, rgb_info_cdr))
        if depth_info_cdr is not None:
            prepared.messages.append((self.topics.depth_info, depth_info_cdr))
        if label is not None:
            prepared.messages.append((self.topics.labels, self.serialize_label(label, stamp_ns, frame_id)))
        return prepared

    def write(self, prepared: PreparedPair, sync: bool = False) -> int:
        """Write a prepared pair and push it to the file; returns the bytes written."""
        writer = self._require_open()
        for topic, data in prepared.messages:
            writer.write(self._connections[topic], prepared.stamp_ns, data)
        self.flush(sync=sync)
        self.pairs_written += 1
        self.bytes_written += prepared.nbytes
        if prepared.label is not None:
            self.labels_written += 1
            self.label_counts[prepared.label.label] = self.label_counts.get(prepared.label.label, 0) + 1
        return prepared.nbytes

    def flush(self, sync: bool = False) -> None:
        """Make everything written so far readable from the file (``sync``: also fsync it)."""
        writer = self._require_open()
        storage = writer.storage
        if isinstance(storage, McapWriter):
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
            if sync:
                os.fsync(storage.bio.fileno())
        elif isinstance(storage, Sqlite3Writer):
            storage.conn.commit()

    def close(self, custom_data: Mapping[str, str] | None = None) -> None:
        """Finish the bag: summary, index and metadata.yaml (with ``custom_data``)."""
        writer = self._require_open()
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, str(value))
        self._writer = None
        if self._encoder is not None:
            self._encoder.shutdown()
            self._encoder = None
        writer.close()

    def serialize_label(self, label: PairLabel, stamp_ns: int, frame_id: str) -> bytes:
        types = self._typestore.types
        sec, nanosec = ns_to_sec_nanosec(stamp_ns)
        header = types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id
        )
        message = types[DEFECT_LABEL](
            header=header, label=label.label, session_id=label.session_id, note=label.note
        )
        return bytes(self._typestore.serialize_cdr(message, DEFECT_LABEL))

    def _compress_rgb(self, rgb_cdr: bytes | memoryview) -> bytes:
        image = self._deserialize_image(rgb_cdr)
        fields = compress_rgb(rgb_from_msg(image), 'jpeg', self.jpeg_quality)
        return self._compressed_message(image.header, fields.as_kwargs(numpy_data=True))

    def _compress_depth(self, depth_cdr: bytes | memoryview) -> bytes:
        image = self._deserialize_image(depth_cdr)
        encoding = '16UC1' if image.encoding in _DEPTH_MM_ENCODINGS else '32FC1'
        fields = compress_depth(depth_m_from_msg(image), encoding, png_level=self.depth_png_level)
        return self._compressed_message(image.header, fields.as_kwargs(numpy_data=True))

    def _deserialize_image(self, data: bytes | memoryview) -> Any:
        try:
            return self._typestore.deserialize_cdr(bytes(data), IMAGE)
        except Exception as exc:  # rosbags raises several error types for malformed CDR
            raise ImageFormatError(f'malformed sensor_msgs/Image CDR ({len(data)} bytes): {exc}') from exc

    def _compressed_message(self, header: Any, fields: dict[str, Any]) -> bytes:
        message = self._typestore.types[COMPRESSED_IMAGE](header=header, **fields)
        return bytes(self._typestore.serialize_cdr(message, COMPRESSED_IMAGE))

    def _pool(self) -> ThreadPoolExecutor:
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix='jpeg')
        return self._encoder

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise RecorderError(f'bag {self.path} is not open')
        return self._writer

    def __enter__(self) -> 'BagRecorder':
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self.close()
