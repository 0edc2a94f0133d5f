"""What the console knows from the graph's topics, gathered for the page (no ROS types here).

- the labeler's /diagnostics (active session, continuous label, free space, why recording stopped);
- the inference node's /diagnostics (running model, rejected files and why, answers by source);
- the DefectLabels on /weld/labels: the last captures (with thumbnails) and frames per class of the
  active session; stopped sessions' counts come from their session.yaml in the labeler's folder.
"""

import base64
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weld_console.models_panel import InferenceView
from weld_labeler.errors import SessionError
from weld_labeler.session import SessionStore

REJECTED_PREFIX = 'rejected_model '
STALE_AFTER_S = 5.0


@dataclass(frozen=True)
class Capture:
    stamp_ns: int
    label: str
    session_id: str
    thumbnail_jpeg: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            'stamp_ns': self.stamp_ns,
            'label': self.label,
            'session_id': self.session_id,
            'thumbnail': 'data:image/jpeg;base64,' + base64.b64encode(self.thumbnail_jpeg).decode('ascii')
            if self.thumbnail_jpeg
            else '',
        }


class GraphState:
    """Thread-safe; written by the node's callbacks, read by the web server."""

    def __init__(self, recording_dir: Path | str, history: int, clock: Any = time.monotonic) -> None:
        self._store = SessionStore(Path(recording_dir).expanduser())
        self._clock = clock
        self._lock = threading.Lock()
        self._labeler: dict[str, str] = {}
        self._labeler_seen_s = float('-inf')
        self._labeler_level = 0
        self._labeler_message = ''
        self._inference: dict[str, str] = {}
        self._inference_seen_s = float('-inf')
        self._inference_message = ''
        self._captures: deque[Capture] = deque(maxlen=int(history))
        self._session_counts: dict[str, Counter[str]] = {}
        self.counters: Counter[str] = Counter()

    # --- from the topics --------------------------------------------------------------------------
    def on_labeler(self, level: int, message: str, values: Mapping[str, str]) -> None:
        with self._lock:
            self._labeler = dict(values)
            self._labeler_level, self._labeler_message = int(level), message
            self._labeler_seen_s = self._clock()

    def on_inference(self, message: str, values: Mapping[str, str]) -> None:
        with self._lock:
            self._inference = dict(values)
            self._inference_message = message
            self._inference_seen_s = self._clock()

    def on_label(self, session_id: str, label: str) -> None:
        with self._lock:
            self._session_counts.setdefault(session_id, Counter())[label] += 1
            self.counters['labels_seen'] += 1

    def add_capture(self, capture: Capture) -> list[dict[str, Any]]:
        """Remember a capture's thumbnail; returns the history, newest first, for the page."""
        with self._lock:
            self._captures.appendleft(capture)
            return [item.as_dict() for item in self._captures]

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    # --- for the page -----------------------------------------------------------------------------
    def inference_view(self) -> InferenceView:
        with self._lock:
            values, message = dict(self._inference), self._inference_message
        rejected = tuple(
            sorted(
                (key[len(REJECTED_PREFIX) :], value)
                for key, value in values.items()
                if key.startswith(REJECTED_PREFIX)
            )
        )
        return InferenceView(values.get('model_id', ''), values.get('model_file', ''), rejected, message)

    def session_counts(self, session_id: str, active: bool) -> dict[str, int]:
        """Frames per class: the labels seen for the active session, session.yaml for a stopped one."""
        with self._lock:
            seen = dict(self._session_counts.get(session_id, Counter()))
        if active:
            return seen
        try:
            return dict(self._store.read_info(session_id).label_counts) or seen
        except SessionError:
            return seen

    def snapshot(self, captures: bool = True) -> dict[str, Any]:
        """Everything for the page; ``captures=False`` leaves out the thumbnails (the periodic status)."""
        now = self._clock()
        with self._lock:
            labeler, inference = dict(self._labeler), dict(self._inference)
            labeler_age, inference_age = now - self._labeler_seen_s, now - self._inference_seen_s
            active = labeler.get('active_session', '')
            return {
                'labeler': {
                    'heard': labeler_age < STALE_AFTER_S,
                    'level': self._labeler_level,
                    'message': self._labeler_message,
                    'active_session': active,
                    'active_counts': dict(self._session_counts.get(active, Counter())) if active else {},
                    'continuous_label': labeler.get('continuous_label', ''),
                    'captures_waiting': int(labeler.get('captures_waiting', '0') or 0),
                    'session_pairs_recorded': int(labeler.get('session_pairs_recorded', '0') or 0),
                    'free_space_mb': labeler.get('free_space_mb', ''),
                    'last_stop_reason': labeler.get('last_stop_reason', ''),
                },
                'inference': {
                    'heard': inference_age < STALE_AFTER_S,
                    'message': self._inference_message,
                    'model_id': inference.get('model_id', ''),
                    'answered': int(inference.get('answered', '0') or 0),
                    'source_model': int(inference.get('source_model', '0') or 0),
                    'source_rules': int(inference.get('source_rules', '0') or 0),
                    'latency_ms_p50': inference.get('latency_ms_p50', ''),
                },
                'captures': [item.as_dict() for item in self._captures] if captures else [],
                'counters': dict(self.counters),
            }
