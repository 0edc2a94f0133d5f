"""Counters and latency percentiles of the inference path, read by /diagnostics (thread-safe)."""

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from weld_inference.engine import FALLBACK_NO_MODEL, Decision

LATENCY_WINDOW = 1000


@dataclass(frozen=True)
class StatsSnapshot:
    answered: int
    by_source: dict[str, int]
    fallback_kinds: dict[str, int]  # why the rules answered, by kind (engine.FALLBACK_*)
    undecided: int  # the rules failed too: answered with an empty label
    skipped: int  # replaced in the latest-frame slot before the worker took them
    rejected_frames: int  # undecodable or unregistered pairs: no answer
    worker_errors: int
    latency_ms: dict[str, float]  # p50 / p95 / p99 / max over the last LATENCY_WINDOW answers
    model_ms: dict[str, float]
    rules_ms: dict[str, float]

    @property
    def model_failures(self) -> int:
        """Pairs where a loaded model did not answer (error, bad output, over budget, busy)."""
        return sum(count for kind, count in self.fallback_kinds.items() if kind != FALLBACK_NO_MODEL)


def _percentiles(values: deque[float]) -> dict[str, float]:
    if not values:
        return {}
    data = np.fromiter(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {'p50': float(p50), 'p95': float(p95), 'p99': float(p99), 'max': float(data.max())}


class InferenceStats:
    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._answered = 0
        self._by_source: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._undecided = 0
        self._skipped = 0
        self._rejected = 0
        self._worker_errors = 0
        self._latency: deque[float] = deque(maxlen=window)
        self._model_ms: deque[float] = deque(maxlen=window)
        self._rules_ms: deque[float] = deque(maxlen=window)

    def record_answer(self, decision: Decision, latency_ms: float) -> None:
        with self._lock:
            self._answered += 1
            self._by_source[decision.source] += 1
            if decision.fallback_kind:
                self._kinds[decision.fallback_kind] += 1
            self._undecided += int(not decision.label)
            self._latency.append(latency_ms)
            if decision.model_ms is not None:
                self._model_ms.append(decision.model_ms)
            if decision.rules_ms is not None:
                self._rules_ms.append(decision.rules_ms)

    def record_skipped(self) -> None:
        with self._lock:
            self._skipped += 1

    def record_rejected_frame(self) -> None:
        with self._lock:
            self._rejected += 1

    def record_worker_error(self) -> None:
        with self._lock:
            self._worker_errors += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                answered=self._answered,
                by_source=dict(self._by_source),
                fallback_kinds=dict(self._kinds),
                undecided=self._undecided,
                skipped=self._skipped,
                rejected_frames=self._rejected,
                worker_errors=self._worker_errors,
                latency_ms=_percentiles(self._latency),
                model_ms=_percentiles(self._model_ms),
                rules_ms=_percentiles(self._rules_ms),
            )
