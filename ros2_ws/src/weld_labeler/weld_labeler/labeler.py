"""The labeler without ROS: pairs frames, labels them, records sessions, guards storage.

The node feeds it CDR bytes from raw subscriptions and turns its answers into service replies
and DefectLabel messages; everything that decides lives here so it is tested without DDS.

Decisions an operator meets:
- A capture (or continuous mode) with no session open starts one named ``auto`` when
  ``auto_start_session`` is true (default: a capture is never lost because the operator forgot
  to start a session; the answer names the session). With it false the capture is refused.
  A capture that auto-started a session and captured nothing removes that empty session again.
- ``success`` of a capture is true when at least one pair was captured (the contract: false means
  nothing was captured); fewer than asked is said in the message and in ``captured``.
- A capture takes precedence over continuous mode for the pairs it asks for.
"""

import contextlib
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weld_core.classes import DEFAULT_CLASSES
from weld_core.errors import ImageFormatError, WeldError
from weld_core.pairing import FramePair, FramePairer
from weld_labeler.capture import Assignment, CaptureQueue, describe_stall
from weld_labeler.cdr import header_of
from weld_labeler.errors import CaptureError, RecorderError, SessionError, StorageFullError
from weld_labeler.recorder import BagRecorder, PairLabel, RecordTopics
from weld_labeler.session import RECORDING, STOPPED, SessionInfo, SessionStore
from weld_labeler.storage_guard import StorageGuard

Frame = tuple[bytes, str]  # CDR bytes, frame_id


@dataclass(frozen=True)
class LabelerConfig:
    topics: RecordTopics = field(default_factory=RecordTopics)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    recording_dir: Path = Path('~/weldvision/sessions')
    export_dir: Path = Path('~/weldvision/exports')
    storage: str = 'mcap'
    record_format: str = 'raw'
    jpeg_quality: int = 90
    depth_png_level: int = 0
    record_all_pairs: bool = False
    auto_start_session: bool = True
    max_capture_count: int = 100
    capture_timeout_s: float = 5.0
    pair_slop_ms: float = 15.0
    min_free_space_mb: float = 500.0
    max_session_size_mb: float = 0.0
    fsync_interval_s: float = 1.0
    write_queue_pairs: int = 60


@dataclass(frozen=True)
class LabelEvent:
    """A pair that was labelled and recorded: what the node publishes on /weld/labels."""

    stamp_ns: int
    frame_id: str
    label: str
    session_id: str
    note: str


@dataclass(frozen=True)
class CaptureOutcome:
    success: bool
    message: str
    captured: int
    session_id: str


@dataclass
class LabelerStats:
    rgb_frames: int = 0
    depth_frames: int = 0
    rejected_frames: int = 0
    pairs_recorded: int = 0
    labels_published: int = 0
    unrecorded_pairs: int = 0  # pairs that should have been recorded but were not (bad frame, disk)
    write_queue_overflows: int = 0


@dataclass(frozen=True)
class _PendingPair:
    """A pair on its way to the bag, with everything it is written with."""

    pair: FramePair[Frame]
    assignment: Assignment | None
    session: SessionInfo
    recorder: BagRecorder
    rgb_info: bytes | None
    depth_info: bytes | None


class Labeler:
    """Frame pairing, labelling and recording; thread-safe (one lock around state changes)."""

    def __init__(
        self,
        config: LabelerConfig,
        publish: Callable[[LabelEvent], None] = lambda event: None,
        warn: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._publish = publish
        self._warn = warn
        self._clock = clock
        self.store = SessionStore(Path(config.recording_dir).expanduser())
        self.guard = StorageGuard(self.store.folder, config.min_free_space_mb, config.max_session_size_mb)
        self.queue = CaptureQueue(config.classes, config.max_capture_count, clock)
        self.pairer: FramePairer[Frame] = FramePairer(int(config.pair_slop_ms * 1e6))
        self.stats = LabelerStats()
        self.session: SessionInfo | None = None
        self.last_stop_reason = ''
        self._recorder: BagRecorder | None = None
        self._lock = threading.RLock()
        self._rgb_info: bytes | None = None
        self._depth_info: bytes | None = None
        self._last_rgb_s = float('-inf')
        self._last_depth_s = float('-inf')
        self._last_fsync_s = clock()
        self._last_error = ''
        self._writes: queue.Queue[_PendingPair | None] = queue.Queue(maxsize=config.write_queue_pairs)
        self._writer = threading.Thread(target=self._write_loop, name='labeler-writer', daemon=True)

    def start(self) -> list[str]:
        """Create the recording folder, recover what a killed process left (log lines), start writing."""
        self.store.ensure()
        notes = self.store.recover_all()
        self._writer.start()
        return notes

    # frames -----------------------------------------------------------------------------

    def on_rgb(self, data: bytes) -> None:
        self._last_rgb_s = self._clock()
        self.stats.rgb_frames += 1
        frame = self._parse(data, 'rgb')
        if frame is not None:
            with self._lock:
                self._handle_pairs(self.pairer.add_rgb(frame[0], (data, frame[1])))

    def on_depth(self, data: bytes) -> None:
        self._last_depth_s = self._clock()
        self.stats.depth_frames += 1
        frame = self._parse(data, 'depth')
        if frame is not None:
            with self._lock:
                self._handle_pairs(self.pairer.add_depth(frame[0], (data, frame[1])))

    def on_rgb_info(self, data: bytes) -> None:
        self._rgb_info = data

    def on_depth_info(self, data: bytes) -> None:
        self._depth_info = data

    def _parse(self, data: bytes, stream: str) -> tuple[int, str] | None:
        try:
            return header_of(data)
        except RecorderError as exc:
            self.stats.rejected_frames += 1
            self._warn(f'{stream} frame rejected ({self.stats.rejected_frames} so far): {exc}')
            return None

    def _handle_pairs(self, pairs: list[FramePair[Frame]]) -> None:
        """Label pairs and hand them to the writer thread (DDS callbacks must never wait on disk)."""
        session, recorder = self.session, self._recorder
        if session is None or recorder is None:
            return
        for pair in pairs:
            assignment = self.queue.assign()
            if assignment is None and not self.config.record_all_pairs:
                continue
            item = _PendingPair(pair, assignment, session, recorder, self._rgb_info, self._depth_info)
            try:
                self._writes.put_nowait(item)
            except queue.Full:
                self.queue.release(assignment)
                self.stats.unrecorded_pairs += 1
                self.stats.write_queue_overflows += 1
                self._warn(
                    f'pair at {pair.stamp_ns} ns not recorded: the write queue is full '
                    f'({self.config.write_queue_pairs} pairs; the disk or compression is too slow)'
                )

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            try:
                if item is None:
                    return
                self._write(item)
            except Exception as exc:  # the writer must outlive any one bad pair
                with self._lock:
                    self.queue.release(item.assignment if item else None)
                    self.stats.unrecorded_pairs += 1
                self._warn(f'pair not recorded: {exc!r}')
            finally:
                self._writes.task_done()

    def _write(self, item: '_PendingPair') -> None:
        recorder, session, pair = item.recorder, item.session, item.pair
        with self._lock:
            if not recorder.is_open:  # the session was closed (storage limit) while this pair waited
                self.queue.release(item.assignment)
                self.stats.unrecorded_pairs += 1
                return
            assignment = item.assignment if self.queue.is_live(item.assignment) else None
        if assignment is None and not self.config.record_all_pairs:
            return
        frame_id = pair.rgb[1]
        label = PairLabel(assignment.label, session.session_id, assignment.note) if assignment else None
        try:
            prepared = recorder.prepare_pair(
                pair.rgb[0], pair.depth[0], pair.stamp_ns, frame_id, item.rgb_info, item.depth_info, label
            )
            self.guard.check_write(recorder.bytes_written, prepared.nbytes)
            sync = self._clock() - self._last_fsync_s >= self.config.fsync_interval_s
            recorder.write(prepared, sync=sync)
        except (StorageFullError, OSError) as exc:
            reason = str(exc) if isinstance(exc, StorageFullError) else f'cannot write {recorder.path}: {exc}'
            with self._lock:
                self.queue.release(assignment)
                self.stats.unrecorded_pairs += 1
                if self.session is session:
                    self.session, self._recorder = None, None
                self._close(session, recorder, f'recording stopped: {reason}')
            return
        except (ImageFormatError, RecorderError) as exc:
            with self._lock:
                self.queue.release(assignment)
                self.stats.unrecorded_pairs += 1
                self._last_error = str(exc)
            self._warn(f'pair at {pair.stamp_ns} ns not recorded: {exc}')
            return
        if sync:
            self._last_fsync_s = self._clock()
        with self._lock:
            self._last_error = ''
            self.stats.pairs_recorded += 1
            session.pairs_recorded = recorder.pairs_written
            session.labels_recorded = recorder.labels_written
            session.bytes_recorded = recorder.bytes_written
            session.label_counts = dict(recorder.label_counts)
            if assignment is not None:
                self.queue.confirm(assignment, pair.stamp_ns)
                self.stats.labels_published += 1
        if assignment is not None:
            self._publish(
                LabelEvent(pair.stamp_ns, frame_id, assignment.label, session.session_id, assignment.note)
            )

    # sessions ---------------------------------------------------------------------------

    def start_session(self, info: SessionInfo) -> SessionInfo:
        """Open a session from ``info`` (its session_id is replaced by a fresh one)."""
        with self._lock:
            if self.session is not None:
                raise SessionError(f'session {self.session.session_id} is recording: stop it first')
            if not self._writer.is_alive():
                raise SessionError('the labeler is not started (or already shut down): no session can record')
            self.guard.check_start()
            self.store.ensure()
            info.session_id = self.store.new_session_id(info.name)
            info.started_ns, info.stopped_ns = time.time_ns(), 0
            info.state, info.stop_reason = RECORDING, ''
            info.storage, info.record_format = self.config.storage, self.config.record_format
            recorder = BagRecorder(
                self.store.bag_path(info.session_id),
                self.config.topics,
                self.config.storage,
                self.config.record_format,
                self.config.jpeg_quality,
                self.config.depth_png_level,
            )
            info.frame_topic = next(iter(recorder.bag_topics))
            recorder.open()
            try:
                self.store.write_info(info)
                recorder.flush(sync=True)
            except OSError as exc:
                recorder.close()
                shutil.rmtree(recorder.path, ignore_errors=True)
                raise SessionError(f'cannot write session {info.session_id}: {exc}') from exc
            self._recorder, self.session = recorder, info
            self.last_stop_reason = ''
            return info

    def stop_session(self, reason: str = 'stopped by request') -> SessionInfo:
        with self._lock:
            if self.session is None:
                raise SessionError(
                    'no session is recording'
                    + (f' ({self.last_stop_reason})' if self.last_stop_reason else '')
                )
        return self._stop(reason)

    def _stop(
        self, reason: str, only: SessionInfo | None = None, discard_if_empty: bool = False
    ) -> SessionInfo:
        """Stop the active session (if ``only``: only that one) once its queued pairs are written."""
        with self._lock:
            session, recorder = self.session, self._recorder
            if session is None or recorder is None or (only is not None and session is not only):
                raise SessionError('no session is recording')
            self.session, self._recorder = None, None  # no new pair goes to this session
        self._writes.join()
        with self._lock:
            previous_reason = self.last_stop_reason
            self._close(session, recorder, reason)
            if discard_if_empty and recorder.pairs_written == 0:
                self.last_stop_reason = previous_reason  # nothing happened, as far as the operator knows
                shutil.rmtree(self.store.bag_path(session.session_id), ignore_errors=True)
        return session

    def _close(self, session: SessionInfo, recorder: BagRecorder, reason: str) -> None:
        """Close a session's bag and metadata, once (the writer and a stop request may race)."""
        if not recorder.is_open:
            return
        self.last_stop_reason = reason
        self.queue.fail_all(reason, session.session_id)
        if self.session is None:
            self.queue.clear_continuous()
        session.stopped_ns, session.state, session.stop_reason = time.time_ns(), STOPPED, reason
        try:
            recorder.close(session.custom_data())
        finally:
            self.store.write_info(session)
        if reason.startswith('recording stopped'):
            self._warn(f'session {session.session_id}: {reason}')

    def _ensure_session(self, what: str) -> bool:
        """Open an ``auto`` session if allowed; True when one was started for this call."""
        if self.session is not None:
            return False
        if not self.config.auto_start_session:
            raise CaptureError(
                f'no session is recording: start one before {what} (weld-label session start --name ...), '
                'or set auto_start_session'
            )
        self.start_session(SessionInfo(session_id='', name='auto'))
        return True

    # labelling --------------------------------------------------------------------------

    def capture(self, label: str, count: int, note: str) -> CaptureOutcome:
        """Label the next ``count`` pairs; blocks until they are recorded or no pair comes."""
        try:
            with self._lock:
                self.queue.check(label, count)
                auto_started = self._ensure_session('capturing')
                session = self.session
                if session is None:
                    raise SessionError('no session is recording')
                request = self.queue.submit(label, count, note, session.session_id)
        except (WeldError, OSError) as exc:
            return CaptureOutcome(False, str(exc), 0, '')
        timeout = self.config.capture_timeout_s
        while not request.done.wait(0.02):
            with self._lock:
                if self.queue.expire(request, timeout, self._stall_reason):
                    break
        session_id = request.session_id
        recorder = self._recorder
        if auto_started and request.captured == 0 and recorder is not None and recorder.pairs_written == 0:
            with contextlib.suppress(SessionError):
                self._stop('discarded: auto-started for a capture that captured nothing', session, True)
            session_id = ''
        wanted = request.count
        if request.captured == 0:
            return CaptureOutcome(False, f'nothing captured: {request.failure}', 0, session_id)
        message = f'captured {request.captured} {label} pair(s) in session {session_id}'
        if auto_started:
            message += ' (session auto-started)'
        if request.captured < wanted:
            message = (
                f'captured {request.captured} of {wanted} {label} pair(s) in session {session_id}: '
                f'{request.failure}'
            )
        return CaptureOutcome(True, message, request.captured, session_id)

    def _stall_reason(self) -> str:
        now, timeout = self._clock(), self.config.capture_timeout_s
        return describe_stall(
            self.config.topics.rgb,
            self.config.topics.depth,
            now - self._last_rgb_s < timeout,
            now - self._last_depth_s < timeout,
            timeout,
            self.config.pair_slop_ms,
            self._last_error,
        )

    def set_continuous(self, label: str, note: str) -> str:
        """Label every pair with ``label`` until cleared ('' clears); returns a message."""
        with self._lock:
            if not label:
                previous = self.queue.continuous
                self.queue.clear_continuous()
                return (
                    f'continuous mode cleared (was {previous.label})'
                    if previous
                    else 'continuous mode was not set'
                )
            self.queue.check(label, 1)
            started = self._ensure_session('continuous labelling')
            self.queue.set_continuous(label, note)
            session = self.session.session_id if self.session else ''
            return f'labelling every pair {label} in session {session}' + (
                ' (session auto-started)' if started else ''
            )

    # exports and status -----------------------------------------------------------------

    def export(self, session_id: str, output_dir: str) -> Path:
        with self._lock:
            target = session_id or self.store.latest_closed().session_id
            if self.session is not None and self.session.session_id == target:
                raise SessionError(f'session {target} is still recording: stop it before exporting')
        return self.store.export(target, Path(output_dir) if output_dir else Path(self.config.export_dir))

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            known = self.store.sessions()
            active = self.session
        if active is not None:
            known = [active if info.session_id == active.session_id else info for info in known]
        return known

    def status(self) -> dict[str, str]:
        """Counters for diagnostics (string values, as KeyValue wants them)."""
        with self._lock:
            session = self.session
            pairing = self.pairer.stats
            values = {
                'active_session': session.session_id if session else '',
                'rgb_frames': str(self.stats.rgb_frames),
                'depth_frames': str(self.stats.depth_frames),
                'frames_rejected': str(self.stats.rejected_frames),
                'pairs_paired': str(pairing.paired),
                'pairs_paired_exact': str(pairing.paired_exact),
                'frames_dropped_unpaired': str(pairing.dropped),
                'pairs_recorded': str(self.stats.pairs_recorded),
                'pairs_not_recorded': str(self.stats.unrecorded_pairs),
                'write_queue_pairs': str(self._writes.qsize()),
                'write_queue_overflows': str(self.stats.write_queue_overflows),
                'labels_published': str(self.stats.labels_published),
                'session_pairs_recorded': str(session.pairs_recorded if session else 0),
                'session_bytes_recorded': str(session.bytes_recorded if session else 0),
                'continuous_label': self.queue.continuous.label if self.queue.continuous else '',
                'captures_waiting': str(self.queue.waiting),
                'last_stop_reason': self.last_stop_reason,
            }
        try:
            values['free_space_mb'] = f'{self.guard.free_mb():.0f}'
        except OSError as exc:
            values['free_space_mb'] = f'unknown ({exc})'
        return values

    def shutdown(self) -> SessionInfo | None:
        """Close the active session cleanly (Ctrl-C): a complete bag, no recovery needed."""
        try:
            return self._stop('labeler shut down')
        except SessionError:
            return None
        finally:
            if self._writer.is_alive():
                self._writes.put(None)
                self._writer.join()
