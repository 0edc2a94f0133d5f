"""Rebuilding a rosbag2 directory left by a killed recorder (kill -9, power loss).

Such a directory has an mcap file without summary and footer (or a sqlite3 file) and no
metadata.yaml, so rosbags and ``ros2 bag`` refuse it. :func:`scan_mcap` reads an mcap file
record by record up to its last complete record; :func:`recover_bag` writes what it finds into
a fresh bag beside it, checks that bag reads back, and only then swaps it in. The original stays
in place until the rebuilt bag is complete, so a crash during recovery loses nothing either.
"""

import mmap
import shutil
import sqlite3
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import decompress, get_qos

from weld_core.bag_types import weld_typestore
from weld_labeler.errors import RecoveryError
from weld_labeler.recorder import BAG_VERSION

MCAP_MAGIC = b'\x89MCAP0\r\n'
RECOVERING_DIR = '.recovering'
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_OP_FOOTER, _OP_DATA_END = 0x02, 0x0F
_RECORD_HEAD = struct.Struct('<BQ')


@dataclass(frozen=True)
class BagTopic:
    topic: str
    msgtype: str
    msgdef: str
    qos: list[Any]


@dataclass(frozen=True)
class BagMessage:
    topic: str
    timestamp_ns: int
    data: memoryview


@dataclass
class ScanReport:
    """What a scan of an unfinished file found."""

    messages: int = 0
    topics: dict[str, int] = field(default_factory=dict)
    readable_bytes: int = 0
    file_bytes: int = 0
    complete: bool = False  # the file had its end-of-data record (the writer closed it)

    @property
    def lost_bytes(self) -> int:
        return self.file_bytes - self.readable_bytes


class _Cursor:
    def __init__(self, view: memoryview, offset: int = 0) -> None:
        self.view = view
        self.offset = offset

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.view):
            raise EOFError
        part = self.view[self.offset : self.offset + size]
        self.offset += size
        return part

    def uint(self, fmt: str) -> int:
        layout = struct.Struct('<' + fmt)
        return int(layout.unpack(self.take(layout.size))[0])

    def string(self) -> str:
        return bytes(self.take(self.uint('I'))).decode('utf-8')


def _records(view: memoryview) -> Iterator[tuple[int, memoryview, int]]:
    """(opcode, content, end offset) of each complete record; stops at the first incomplete one."""
    offset = 0
    while offset + _RECORD_HEAD.size <= len(view):
        opcode, length = _RECORD_HEAD.unpack_from(view, offset)
        end = offset + _RECORD_HEAD.size + length
        if end > len(view):
            return
        yield opcode, view[offset + _RECORD_HEAD.size : end], end
        offset = end


class _McapState:
    def __init__(self) -> None:
        self.schemas: dict[int, tuple[str, str]] = {}
        self.channels: dict[int, BagTopic] = {}

    def handle(self, opcode: int, content: memoryview) -> BagMessage | BagTopic | None:
        cursor = _Cursor(content)
        if opcode == _OP_SCHEMA:
            schema_id = cursor.uint('H')
            name, _encoding = cursor.string(), cursor.string()
            self.schemas[schema_id] = (name, bytes(cursor.take(cursor.uint('I'))).decode('utf-8'))
        elif opcode == _OP_CHANNEL:
            channel_id, schema_id = cursor.uint('H'), cursor.uint('H')
            topic, _encoding = cursor.string(), cursor.string()
            metadata = bytes(cursor.take(cursor.uint('I')))
            name, msgdef = self.schemas.get(schema_id, ('', ''))
            if not name:
                raise RecoveryError(f'channel {topic!r} refers to unknown schema {schema_id}')
            try:
                qos = get_qos(metadata)
            except Exception:  # offered QoS is a hint for playback; a bag without it still reads
                qos = []
            self.channels[channel_id] = BagTopic(topic, name, msgdef, qos)
            return self.channels[channel_id]
        elif opcode == _OP_MESSAGE:
            channel_id = cursor.uint('H')
            cursor.take(4)
            log_time = cursor.uint('Q')
            cursor.take(8)
            channel = self.channels.get(channel_id)
            if channel is None:
                raise RecoveryError(f'message on unknown channel {channel_id}')
            return BagMessage(channel.topic, log_time, content[cursor.offset :])
        return None


def iter_mcap(path: Path | str, report: ScanReport | None = None) -> Iterator[BagTopic | BagMessage]:
    """Topics and messages of an mcap file in file order, up to its last complete record.

    Works on finished and unfinished files alike; a truncated chunk at the end is skipped (its
    messages were never completely written).
    """
    report = report if report is not None else ScanReport()
    path = Path(path)
    with path.open('rb') as handle:
        report.file_bytes = path.stat().st_size
        if report.file_bytes < len(MCAP_MAGIC):
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                if bytes(view[: len(MCAP_MAGIC)]) != MCAP_MAGIC:
                    raise RecoveryError(f'{path} is not an mcap file')
                yield from _scan(view, report)
            finally:
                view.release()


def _scan(view: memoryview, report: ScanReport) -> Iterator[BagTopic | BagMessage]:
    state = _McapState()
    body = view[len(MCAP_MAGIC) :]
    report.readable_bytes = len(MCAP_MAGIC)
    for opcode, content, end in _records(body):
        if opcode in (_OP_DATA_END, _OP_FOOTER):
            report.complete = True
            report.readable_bytes = len(MCAP_MAGIC) + end
            return
        if opcode == _OP_CHUNK:
            cursor = _Cursor(content)
            cursor.take(16)
            size, crc = cursor.uint('Q'), cursor.uint('I')
            compression = cursor.string()
            compressed = bytes(cursor.take(cursor.uint('Q')))
            try:
                inner = memoryview(decompress(compressed, compression, size, crc))
            except Exception:  # a chunk the writer never finished: what came before it is the bag
                return
            for inner_opcode, inner_content, _ in _records(inner):
                item = state.handle(inner_opcode, inner_content)
                if item is not None:
                    yield _count(item, report)
        else:
            item = state.handle(opcode, content)
            if item is not None:
                yield _count(item, report)
        report.readable_bytes = len(MCAP_MAGIC) + end


def _count(item: BagTopic | BagMessage, report: ScanReport) -> BagTopic | BagMessage:
    if isinstance(item, BagMessage):
        report.messages += 1
        report.topics[item.topic] = report.topics.get(item.topic, 0) + 1
    return item


def iter_sqlite3(path: Path | str, report: ScanReport | None = None) -> Iterator[BagTopic | BagMessage]:
    """Topics and messages of a rosbag2 sqlite3 file, committed rows only."""
    report = report if report is not None else ScanReport()
    path = Path(path)
    report.file_bytes = path.stat().st_size
    connection = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
        definitions = dict(
            connection.execute('SELECT topic_type, encoded_message_definition FROM message_definitions')
        )
        topics: dict[int, str] = {}
        for topic_id, name, msgtype, qos_text in connection.execute(
            'SELECT id, name, type, offered_qos_profiles FROM topics'
        ):
            topics[topic_id] = name
            try:
                qos = parse_qos(qos_text) if qos_text else []
            except Exception:  # offered QoS is a hint for playback; a bag without it still reads
                qos = []
            yield BagTopic(name, msgtype, definitions.get(msgtype, ''), qos)
        for topic_id, timestamp, data in connection.execute(
            'SELECT topic_id, timestamp, data FROM messages ORDER BY id'
        ):
            yield _count(BagMessage(topics[topic_id], int(timestamp), memoryview(data)), report)
    finally:
        connection.close()
    report.readable_bytes = report.file_bytes


def data_file_of(bag_dir: Path) -> Path:
    """The one .mcap or .db3 file of a bag directory written by the labeler."""
    candidates = sorted([*bag_dir.glob('*.mcap'), *bag_dir.glob('*.db3')])
    if len(candidates) != 1:
        raise RecoveryError(f'{bag_dir} holds {len(candidates)} .mcap/.db3 files, expected one')
    return candidates[0]


def iter_unfinished_bag(
    bag_dir: Path | str, report: ScanReport | None = None
) -> Iterator[BagTopic | BagMessage]:
    """Everything readable in a bag directory, whether or not its writer closed it."""
    data_file = data_file_of(Path(bag_dir))
    if data_file.suffix == '.mcap':
        return iter_mcap(data_file, report)
    return iter_sqlite3(data_file, report)


def needs_recovery(bag_dir: Path | str) -> bool:
    """True for a bag directory whose writer never wrote metadata.yaml."""
    bag_dir = Path(bag_dir)
    return bag_dir.is_dir() and not (bag_dir / 'metadata.yaml').exists()


def recover_bag(bag_dir: Path | str, custom_data: Mapping[str, str] | None = None) -> ScanReport:
    """Rebuild ``bag_dir`` from what is readable in its data file; returns what was kept.

    The rebuilt bag is written to ``<parent>/.recovering/<name>`` and read back before it
    replaces the original; other files of the directory (e.g. session.yaml) move with it.
    """
    bag_dir = Path(bag_dir)
    data_file = data_file_of(bag_dir)
    work = bag_dir.parent / RECOVERING_DIR
    rebuilt = work / bag_dir.name
    if rebuilt.exists():
        shutil.rmtree(rebuilt)
    work.mkdir(exist_ok=True)
    report = ScanReport()
    storage = StoragePlugin.MCAP if data_file.suffix == '.mcap' else StoragePlugin.SQLITE3
    typestore = weld_typestore()
    writer = Writer(rebuilt, version=BAG_VERSION, storage_plugin=storage)
    writer.open()
    connections: dict[str, Any] = {}
    try:
        for item in iter_unfinished_bag(bag_dir, report):
            if isinstance(item, BagTopic):
                if item.msgtype not in typestore.types:
                    raise RecoveryError(
                        f'topic {item.topic} has type {item.msgtype} unknown to weld_typestore'
                    )
                connections[item.topic] = writer.add_connection(
                    item.topic, item.msgtype, typestore=typestore, offered_qos_profiles=item.qos
                )
            else:
                writer.write(connections[item.topic], item.timestamp_ns, item.data)
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, str(value))
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(rebuilt, ignore_errors=True)
        raise
    with Reader(rebuilt) as reader:
        if reader.message_count != report.messages:
            shutil.rmtree(rebuilt, ignore_errors=True)
            raise RecoveryError(
                f'rebuilt bag of {bag_dir} reads {reader.message_count} messages, {report.messages} expected'
            )
    # copies, not moves: until the swap below the original directory must stay whole
    for extra in bag_dir.iterdir():
        if extra != data_file and extra.is_file() and not (rebuilt / extra.name).exists():
            shutil.copy2(extra, rebuilt / extra.name)
    damaged = work / (bag_dir.name + '.damaged')
    if damaged.exists():
        shutil.rmtree(damaged)
    bag_dir.rename(damaged)
    rebuilt.rename(bag_dir)
    shutil.rmtree(damaged)
    return report


def finish_interrupted_recoveries(folder: Path | str) -> list[str]:
    """Tidy after a crash during recovery: keep whichever copy of each bag is the whole one."""
    work = Path(folder) / RECOVERING_DIR
    if not work.is_dir():
        return []
    notes: list[str] = []
    for entry in sorted(work.iterdir()):
        if entry.name.endswith('.damaged'):
            original = Path(folder) / entry.name.removesuffix('.damaged')
            rebuilt = work / original.name
            if not original.exists() and rebuilt.is_dir() and (rebuilt / 'metadata.yaml').exists():
                rebuilt.rename(original)
                notes.append(f'{original.name}: finished an interrupted recovery')
            elif not original.exists():
                entry.rename(original)
                notes.append(f'{original.name}: restored the original of an interrupted recovery')
                continue
            shutil.rmtree(entry)
    for entry in sorted(work.iterdir()):
        if entry.is_dir():
            shutil.rmtree(entry)
    if not any(work.iterdir()):
        work.rmdir()
    return notes
