"""Recording sessions: one rosbag2 directory each, with the session's metadata travelling inside.

Layout of the recording folder::

    <recording_dir>/<session_id>/            the rosbag2 directory
        <session_id>.mcap | .db3             frames, camera infos, DefectLabels
        metadata.yaml                        rosbag2 metadata; custom_data holds the session
        session.yaml                         the session (also readable without rosbag2 tools)

session.yaml is written when the session opens (state ``recording``) and again when it closes.
A directory still marked ``recording`` at start-up belongs to a killed process and is recovered.
"""

import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from weld_core.bag_types import COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE, weld_typestore
from weld_labeler.errors import SessionError
from weld_labeler.recovery import (
    BagMessage,
    ScanReport,
    finish_interrupted_recoveries,
    iter_unfinished_bag,
    needs_recovery,
    recover_bag,
)

SESSION_FILE = 'session.yaml'
CUSTOM_DATA_PREFIX = 'weldvision.'
RECORDING, STOPPED, RECOVERED = 'recording', 'stopped', 'recovered'
_SLUG = re.compile(r'[^A-Za-z0-9_-]+')


@dataclass
class SessionInfo:
    """Everything known about a session; mirrors StartSession's request plus bookkeeping."""

    session_id: str
    name: str = ''
    operator_name: str = ''
    material: str = ''
    process: str = ''
    wire: str = ''
    current_a: float = 0.0
    note: str = ''
    started_ns: int = 0
    stopped_ns: int = 0
    state: str = RECORDING
    stop_reason: str = ''
    storage: str = 'mcap'
    record_format: str = 'raw'
    frame_topic: str = ''  # bag topic of the rgb frames: one message per recorded pair
    pairs_recorded: int = 0
    labels_recorded: int = 0
    bytes_recorded: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'SessionInfo':
        known = {f.name for f in fields(cls)}
        if 'session_id' not in data:
            raise SessionError(f'session metadata without session_id: {sorted(data)}')
        return cls(**{key: value for key, value in data.items() if key in known})

    def custom_data(self) -> dict[str, str]:
        """The session as rosbag2 ``custom_data`` (string to string)."""
        return {
            CUSTOM_DATA_PREFIX + key: json.dumps(value) if isinstance(value, dict) else str(value)
            for key, value in self.to_dict().items()
        }


def make_session_id(name: str, now_ns: int) -> str:
    """``YYYYmmdd-HHMMSS[_name]``: sorts by time and names a directory safely."""
    stamp = datetime.fromtimestamp(now_ns / 1e9, tz=timezone.utc).strftime('%Y%m%d-%H%M%S')
    slug = _SLUG.sub('-', name.strip()).strip('-')[:48]
    return f'{stamp}_{slug}' if slug else stamp


class SessionStore:
    """The recording folder: creates, lists, closes, recovers and exports session directories."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder).expanduser()

    def ensure(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionError(f'cannot create the recording folder {self.folder}: {exc}') from exc

    def bag_path(self, session_id: str) -> Path:
        return self.folder / session_id

    def new_session_id(self, name: str, now_ns: int | None = None) -> str:
        base = make_session_id(name, time.time_ns() if now_ns is None else now_ns)
        candidate, suffix = base, 2
        while self.bag_path(candidate).exists():
            candidate, suffix = f'{base}-{suffix}', suffix + 1
        return candidate

    def write_info(self, info: SessionInfo) -> None:
        """Write session.yaml atomically (a crash leaves the old or the new file, never half)."""
        target = self.bag_path(info.session_id) / SESSION_FILE
        temporary = target.with_suffix('.yaml.tmp')
        with temporary.open('w', encoding='utf-8') as handle:
            yaml.safe_dump(info.to_dict(), handle, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)

    def read_info(self, session_id: str) -> SessionInfo:
        path = self.bag_path(session_id) / SESSION_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding='utf-8'))
        except FileNotFoundError as exc:
            raise SessionError(f'no session {session_id!r} in {self.folder}') from exc
        except yaml.YAMLError as exc:
            raise SessionError(f'{path} is not valid YAML: {exc}') from exc
        if not isinstance(data, dict):
            raise SessionError(f'{path} does not hold a session')
        return SessionInfo.from_dict(data)

    def sessions(self) -> list[SessionInfo]:
        """Every session of the folder, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for entry in self.folder.iterdir():
            if entry.is_dir() and (entry / SESSION_FILE).is_file():
                try:
                    found.append(self.read_info(entry.name))
                except SessionError:
                    continue
        return sorted(found, key=lambda info: (info.started_ns, info.session_id))

    def unfinished(self) -> Iterator[SessionInfo]:
        """Sessions whose recorder never closed them (killed process, power loss)."""
        for info in self.sessions():
            if info.state == RECORDING or needs_recovery(self.bag_path(info.session_id)):
                yield info

    def recover_all(self) -> list[str]:
        """Recover every unfinished session; returns one line per session for the log."""
        if not self.folder.is_dir():
            return []
        notes = finish_interrupted_recoveries(self.folder)
        for entry in sorted(self.folder.iterdir()):
            # killed between creating the bag and writing session.yaml: the bag is all there is
            if (
                not entry.name.startswith('.')
                and needs_recovery(entry)
                and not (entry / SESSION_FILE).exists()
            ):
                self.write_info(SessionInfo(session_id=entry.name, started_ns=_last_write_ns(entry)))
        for info in list(self.unfinished()):
            bag = self.bag_path(info.session_id)
            if not needs_recovery(bag):
                info.state = STOPPED if info.stopped_ns else RECOVERED
                self.write_info(info)
                notes.append(f'{info.session_id}: bag was complete, session marked {info.state}')
                continue
            try:
                counted = count_labels(bag, info.frame_topic)
                _apply_counts(info, counted)
                info.state, info.stop_reason = (
                    RECOVERED,
                    info.stop_reason or 'recorder was killed; recovered at start-up',
                )
                info.stopped_ns = info.stopped_ns or _last_write_ns(bag)
                self.write_info(info)
                report = recover_bag(bag, info.custom_data())
            except Exception as exc:  # one damaged session must not stop the node from starting
                notes.append(f'{info.session_id}: NOT recovered ({exc}); the directory is left as it is')
                continue
            notes.append(
                f'{info.session_id}: recovered {info.pairs_recorded} pairs, {info.labels_recorded} labels '
                f'({report.messages} messages, {report.lost_bytes} bytes of an unfinished write dropped)'
            )
        return notes

    def export(self, session_id: str, output_dir: Path | str) -> Path:
        """Pack a closed session as ``<session_id>.tar.gz`` (one top-level folder: the bag)."""
        bag = self.bag_path(session_id)
        info = self.read_info(session_id)
        if info.state == RECORDING or needs_recovery(bag):
            raise SessionError(f'session {session_id} is still recording: stop it before exporting')
        output = Path(output_dir).expanduser()
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionError(f'cannot create export folder {output}: {exc}') from exc
        archive = output / f'{session_id}.tar.gz'
        partial = output / f'.{session_id}.tar.gz.partial'
        try:
            with tarfile.open(partial, 'w:gz', compresslevel=1) as tar:
                tar.add(bag, arcname=session_id)
            partial.replace(archive)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise SessionError(f'cannot write {archive}: {exc}') from exc
        return archive

    def latest_closed(self) -> SessionInfo:
        closed = [info for info in self.sessions() if info.state != RECORDING]
        if not closed:
            raise SessionError(f'no stopped session in {self.folder} to export')
        return closed[-1]


@dataclass
class BagCounts:
    pairs: int = 0
    labels: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    report: ScanReport = field(default_factory=ScanReport)


def count_labels(bag_dir: Path, frame_topic: str) -> BagCounts:
    """Pairs (messages on ``frame_topic``; '' = the first image topic) and labels readable in a bag."""
    typestore = weld_typestore()
    counts = BagCounts()
    topics: dict[str, str] = {}
    for item in iter_unfinished_bag(bag_dir, counts.report):
        if not isinstance(item, BagMessage):
            topics[item.topic] = item.msgtype
            if not frame_topic and item.msgtype in (IMAGE, COMPRESSED_IMAGE):
                frame_topic = item.topic  # the recorder registers the rgb frames first
            continue
        if topics.get(item.topic) == DEFECT_LABEL:
            label = typestore.deserialize_cdr(bytes(item.data), DEFECT_LABEL).label
            counts.labels += 1
            counts.label_counts[label] = counts.label_counts.get(label, 0) + 1
        elif item.topic == frame_topic:
            counts.pairs += 1
    return counts


def _apply_counts(info: SessionInfo, counted: BagCounts) -> None:
    info.pairs_recorded = counted.pairs
    info.labels_recorded = counted.labels
    info.label_counts = counted.label_counts
    info.bytes_recorded = counted.report.readable_bytes


def _last_write_ns(bag: Path) -> int:
    try:
        return max(entry.stat().st_mtime_ns for entry in bag.iterdir())
    except ValueError:
        return time.time_ns()
