"""The review queue (active learning): frames the deployed model was least sure of, and frames where
the model and the rules disagree, kept on disk for the operator to label.

- :class:`ReviewSelector` decides. A model answer whose top-2 margin (best minus second-best
  probability) is below ``margin`` is *unsure*; a pair whose rules' label (published on the
  measurements topic when the inference node runs the rules on every pair) differs from the
  model's is a *disagreement*. Neighbouring frames of one scan are near-copies, so at most one
  frame is taken per ``min_interval_s``; a disagreement about a frame already taken as unsure is
  added to that frame's reasons.
- :class:`ReviewQueue` keeps the chosen frames on disk (``<folder>/items/<stamp_ns>/``: the rgb and
  depth as the CDR bytes the camera sent, the camera infos, two JPEG previews and ``item.json``,
  written last and atomically), so the queue survives restarts. It holds at most ``max_items``:
  disagreements first, then the smallest margins; a full queue drops its least informative frame
  for a more informative one and refuses a less informative one.
- :class:`ReviewRecorder` writes labelled review frames into a normal labeler session
  (``weld_labeler``'s SessionStore and BagRecorder: the same rosbag2 layout, session.yaml and crash
  recovery), which ``python -m training.convert`` reads like any other session.
"""

import json
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from weld_console.errors import ConsoleError, NotFoundError
from weld_console.frames import RawPair
from weld_core.classes import check_label
from weld_core.files import write_atomically
from weld_labeler.errors import StorageFullError
from weld_labeler.recorder import BagRecorder, PairLabel, RecordTopics
from weld_labeler.session import RECORDING, STOPPED, SessionInfo, SessionStore
from weld_labeler.storage_guard import StorageGuard

UNSURE, DISAGREE = 'unsure', 'disagree'
ITEM_FILE = 'item.json'
_PAYLOAD = ('rgb.cdr', 'depth.cdr', 'rgb.jpg', 'depth.jpg')
_INFOS = ('rgb_info.cdr', 'depth_info.cdr')


def top2_margin(scores: Sequence[float]) -> float:
    """Best minus second-best probability (1.0 with fewer than two classes)."""
    ranked = sorted((float(s) for s in scores), reverse=True)
    return ranked[0] - ranked[1] if len(ranked) >= 2 else 1.0


@dataclass
class ReviewItem:
    """One queued frame and why it was chosen."""

    stamp_ns: int
    frame_id: str
    model_label: str
    model_id: str
    class_names: list[str]
    scores: list[float]
    margin: float
    rules_label: str = ''
    reasons: list[str] = field(default_factory=list)
    queued_ns: int = 0

    @property
    def item_id(self) -> str:
        return str(self.stamp_ns)

    @property
    def rank(self) -> tuple[int, float, int]:
        """Smaller is more informative: disagreements first, then the smallest margin, then newest."""
        return (0 if DISAGREE in self.reasons else 1, self.margin, -self.stamp_ns)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), 'item_id': self.item_id}

    def describe(self) -> str:
        parts = []
        if UNSURE in self.reasons:
            ranked = sorted(zip(self.scores, self.class_names, strict=True), reverse=True)[:2]
            parts.append(
                f'unsure: margin {self.margin:.2f} ({ranked[0][1]} {ranked[0][0]:.2f} vs '
                f'{ranked[1][1]} {ranked[1][0]:.2f})'
                if len(ranked) == 2
                else f'unsure: margin {self.margin:.2f}'
            )
        if DISAGREE in self.reasons:
            parts.append(f'model says {self.model_label}, rules say {self.rules_label}')
        return '; '.join(parts)


@dataclass
class SelectorStats:
    model_answers: int = 0
    rules_compared: int = 0
    unsure: int = 0
    disagreements: int = 0
    taken: int = 0
    too_soon: int = 0


class ReviewSelector:
    """Which model answers become review candidates (no I/O; the node feeds it the topics)."""

    def __init__(
        self,
        margin: float,
        min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        remembered: int = 64,
    ) -> None:
        if not 0.0 <= margin <= 1.0:
            raise ValueError(f'margin must be in 0..1, got {margin}')
        self.margin = float(margin)
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last_taken_s = float('-inf')
        self._remembered = remembered
        # recent model answers by stamp (the rules' label for a pair arrives after its result)
        self._answers: OrderedDict[int, ReviewItem] = OrderedDict()
        self._taken: OrderedDict[int, ReviewItem] = OrderedDict()
        self._rules: OrderedDict[int, str] = OrderedDict()
        self.stats = SelectorStats()
        self._lock = threading.Lock()

    def on_result(
        self,
        stamp_ns: int,
        frame_id: str,
        source: str,
        label: str,
        class_names: Sequence[str],
        scores: Sequence[float],
        model_id: str,
    ) -> ReviewItem | None:
        """A DefectResult; the item to queue when the model was unsure of it (or the rules disagreed)."""
        if source != 'model' or len(scores) != len(class_names) or not scores:
            return None
        item = ReviewItem(
            int(stamp_ns),
            frame_id,
            label,
            model_id,
            list(class_names),
            [float(s) for s in scores],
            top2_margin(scores),
        )
        with self._lock:
            self.stats.model_answers += 1
            self._remember(self._answers, item.stamp_ns, item)
            if item.margin < self.margin:
                self.stats.unsure += 1
                item.reasons.append(UNSURE)
            rules_label = self._rules.pop(item.stamp_ns, None)
            if rules_label is not None:
                self._compare(item, rules_label)
            return self._take(item) if item.reasons else None

    def on_rules(self, stamp_ns: int, rules_label: str) -> ReviewItem | None:
        """The rules' label of a pair; the item to queue (or to update) when it differs from the model's."""
        if not rules_label:
            return None
        with self._lock:
            item = self._answers.get(int(stamp_ns))
            if item is None:  # the result has not arrived yet
                self._remember(self._rules, int(stamp_ns), rules_label)
                return None
            taken = item.stamp_ns in self._taken
            had = DISAGREE in item.reasons
            self._compare(item, rules_label)
            if DISAGREE not in item.reasons or had:
                return None
            return item if taken else self._take(item)

    def _compare(self, item: ReviewItem, rules_label: str) -> None:
        self.stats.rules_compared += 1
        item.rules_label = rules_label
        if rules_label != item.model_label and DISAGREE not in item.reasons:
            self.stats.disagreements += 1
            item.reasons.append(DISAGREE)

    def _take(self, item: ReviewItem) -> ReviewItem | None:
        now = self._clock()
        if now - self._last_taken_s < self.min_interval_s:
            self.stats.too_soon += 1
            return None
        self._last_taken_s = now
        self.stats.taken += 1
        self._remember(self._taken, item.stamp_ns, item)
        return item

    def _remember(self, store: OrderedDict, key: int, value: object) -> None:
        store[key] = value
        while len(store) > self._remembered:
            store.popitem(last=False)


class ReviewQueue:
    """The queued frames on disk, bounded, most informative kept; thread-safe."""

    def __init__(self, folder: Path | str, max_items: int, guard: StorageGuard | None = None) -> None:
        if max_items < 1:
            raise ValueError(f'max_items must be >= 1, got {max_items}')
        self.folder = Path(folder).expanduser() / 'items'
        self.max_items = int(max_items)
        self._guard = guard
        self._items: dict[str, ReviewItem] = {}
        self._lock = threading.Lock()
        self.dropped_for_space = 0

    def load(self) -> list[str]:
        """Read the queue left on disk; removes half-written items. Returns notes for the log.

        The folder itself is made by the first item queued, not here.
        """
        notes: list[str] = []
        if not self.folder.is_dir():
            return notes
        for entry in sorted(self.folder.iterdir()):
            if not entry.is_dir():
                continue
            try:
                data = json.loads((entry / ITEM_FILE).read_text(encoding='utf-8'))
                item = ReviewItem(**{k: v for k, v in data.items() if k != 'item_id'})
                missing = [name for name in _PAYLOAD if not (entry / name).is_file()]
                if missing or entry.name != item.item_id:
                    raise ValueError(f'missing {", ".join(missing) or "nothing"}, name {entry.name}')
            except (OSError, ValueError, TypeError) as exc:
                shutil.rmtree(entry, ignore_errors=True)
                notes.append(f'review item {entry.name} was incomplete and is removed ({exc})')
                continue
            self._items[item.item_id] = item
        while len(self._items) > self.max_items:
            self._remove(max(self._items.values(), key=lambda i: i.rank).item_id)
        return notes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def items(self) -> list[ReviewItem]:
        """Most informative first."""
        with self._lock:
            return sorted(self._items.values(), key=lambda item: item.rank)

    def get(self, item_id: str) -> ReviewItem:
        with self._lock:
            item = self._items.get(item_id)
        if item is None:
            raise NotFoundError(f'review item {item_id} is not in the queue (labelled or discarded already?)')
        return item

    def path(self, item_id: str, name: str) -> Path:
        self.get(item_id)
        if name not in (*_PAYLOAD, *_INFOS):
            raise NotFoundError(f'review item {item_id} has no {name!r}')
        return self.folder / item_id / name

    def add(
        self,
        item: ReviewItem,
        pair: RawPair,
        rgb_jpeg: bytes,
        depth_jpeg: bytes,
        rgb_info: bytes | None,
        depth_info: bytes | None,
    ) -> bool:
        """Queue ``item`` with its frames (or update its reasons); False when it is not admitted."""
        with self._lock:
            existing = self._items.get(item.item_id)
            if existing is not None:
                existing.reasons = sorted(set(existing.reasons) | set(item.reasons))
                existing.rules_label = item.rules_label or existing.rules_label
                self._write_item(existing)
                return True
            worst = max(self._items.values(), key=lambda i: i.rank) if self._items else None
            if len(self._items) >= self.max_items and worst is not None and worst.rank <= item.rank:
                return False
        if self._guard is not None:
            try:
                self._guard.check_write(0, len(pair.rgb) + len(pair.depth))
            except StorageFullError:  # the board's disk is for sessions first: skip, never fill it
                self.dropped_for_space += 1
                return False
        item.queued_ns = time.time_ns()
        target = self.folder / item.item_id
        partial = self.folder / f'.{item.item_id}.part'
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            files = {
                'rgb.cdr': pair.rgb,
                'depth.cdr': pair.depth,
                'rgb.jpg': rgb_jpeg,
                'depth.jpg': depth_jpeg,
            }
            if rgb_info is not None:
                files['rgb_info.cdr'] = rgb_info
            if depth_info is not None:
                files['depth_info.cdr'] = depth_info
            for name, data in files.items():
                (partial / name).write_bytes(data)
            (partial / ITEM_FILE).write_text(json.dumps(item.as_dict()), encoding='utf-8')
            partial.replace(target)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise ConsoleError(f'cannot queue review item {item.item_id} in {self.folder}: {exc}') from exc
        with self._lock:
            self._items[item.item_id] = item
            while len(self._items) > self.max_items:
                self._remove(max(self._items.values(), key=lambda i: i.rank).item_id)
        return True

    def remove(self, item_id: str) -> ReviewItem:
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                raise NotFoundError(
                    f'review item {item_id} is not in the queue (labelled or discarded already?)'
                )
            self._remove(item_id)
        return item

    def _remove(self, item_id: str) -> None:
        self._items.pop(item_id, None)
        shutil.rmtree(self.folder / item_id, ignore_errors=True)

    def _write_item(self, item: ReviewItem) -> None:
        write_atomically(self.folder / item.item_id / ITEM_FILE, json.dumps(item.as_dict()).encode())


class ReviewRecorder:
    """Labelled review frames -> one open labeler session (``review``) at a time; thread-safe."""

    def __init__(
        self,
        folder: Path | str,
        classes: Sequence[str],
        topics: RecordTopics | None = None,
        storage: str = 'mcap',
        record_format: str = 'compressed',
        min_free_space_mb: float = 500.0,
    ) -> None:
        self.store = SessionStore(Path(folder).expanduser())
        self.classes = tuple(classes)
        self.topics = topics or RecordTopics()
        self.storage = storage
        self.record_format = record_format
        self.guard = StorageGuard(self.store.folder, min_free_space_mb)
        self.session: SessionInfo | None = None
        self._recorder: BagRecorder | None = None
        self._lock = threading.Lock()

    def start(self) -> list[str]:
        """Recover a session a killed console left open (the labeler's recovery); the folder is made
        by the first labelled frame."""
        return self.store.recover_all()

    def record(self, queue: ReviewQueue, item_id: str, label: str) -> SessionInfo:
        """Write queued frame ``item_id`` with ``label`` into the open review session, then unqueue it."""
        with self._lock:
            check_label(label, self.classes)
            item = queue.get(item_id)
            rgb = queue.path(item_id, 'rgb.cdr').read_bytes()
            depth = queue.path(item_id, 'depth.cdr').read_bytes()
            infos = [queue.path(item_id, name) for name in _INFOS]
            rgb_info, depth_info = (path.read_bytes() if path.is_file() else None for path in infos)
            session, recorder = self._open()
            note = f'review: {item.describe()}; model {item.model_id}'
            prepared = recorder.prepare_pair(
                rgb,
                depth,
                item.stamp_ns,
                item.frame_id,
                rgb_info,
                depth_info,
                PairLabel(label, session.session_id, note),
            )
            self.guard.check_write(recorder.bytes_written, prepared.nbytes)
            recorder.write(prepared, sync=True)
            session.pairs_recorded = recorder.pairs_written
            session.labels_recorded = recorder.labels_written
            session.bytes_recorded = recorder.bytes_written
            session.label_counts = dict(recorder.label_counts)
            queue.remove(item_id)
            return session

    def finish(self) -> SessionInfo:
        """Close the open review session (a complete bag, ready to export)."""
        with self._lock:
            session, recorder = self.session, self._recorder
            if session is None or recorder is None:
                raise NotFoundError('no review session is open: label a review frame first')
            self.session, self._recorder = None, None
            session.stopped_ns, session.state, session.stop_reason = time.time_ns(), STOPPED, 'finished'
            try:
                recorder.close(session.custom_data())
            finally:
                self.store.write_info(session)
            return session

    def close(self) -> SessionInfo | None:
        """Finish the open session at shutdown, if any."""
        try:
            return self.finish()
        except NotFoundError:
            return None

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            known = self.store.sessions()
            active = self.session
        return [active if active and info.session_id == active.session_id else info for info in known]

    def export(self, session_id: str, output_dir: Path) -> Path:
        with self._lock:
            if self.session is not None and self.session.session_id == session_id:
                raise ConsoleError(f'review session {session_id} is open: finish it before exporting')
        return self.store.export(session_id, output_dir)

    def _open(self) -> tuple[SessionInfo, BagRecorder]:
        if self.session is not None and self._recorder is not None:
            return self.session, self._recorder
        self.guard.check_start()
        self.store.ensure()
        info = SessionInfo(session_id='', name='review', note='frames from the console review queue')
        info.session_id = self.store.new_session_id(info.name)
        info.started_ns, info.state = time.time_ns(), RECORDING
        info.storage, info.record_format = self.storage, self.record_format
        recorder = BagRecorder(
            self.store.bag_path(info.session_id), self.topics, self.storage, self.record_format
        )
        info.frame_topic = next(iter(recorder.bag_topics))
        recorder.open()
        self.store.write_info(info)
        recorder.flush(sync=True)
        self.session, self._recorder = info, recorder
        return info, recorder
