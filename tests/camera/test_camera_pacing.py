"""Drift-free pacing and the render-ahead queue, ROS-free, on a simulated clock."""

import threading

import numpy as np
import pytest

from weld_camera.errors import SourceError
from weld_camera.frames import CameraFrame
from weld_camera.pacing import Pacer
from weld_camera.sources.prefetch import Prefetcher
from weld_core.images import array_to_image

MS = 1_000_000


def _frame(due_ns: int | None = None) -> CameraFrame:
    rgb = array_to_image(np.zeros((4, 4, 3), np.uint8), 'rgb8')
    depth = array_to_image(np.zeros((4, 4), np.float32), '32FC1')
    return CameraFrame(rgb=rgb, depth=depth, due_ns=due_ns)


class SimulatedTime:
    """A clock that only moves when someone waits or works."""

    def __init__(self) -> None:
        self.now_ns = 1_000 * MS

    def clock_ns(self) -> int:
        return self.now_ns

    def wait_s(self, seconds: float) -> bool:
        self.now_ns += round(seconds * 1e9)
        return False


class ListSupply:
    """Hands out frames; each hand-out costs ``cost_ns`` of simulated time (rendering)."""

    def __init__(self, time: SimulatedTime, frames: list[CameraFrame], cost_ns: list[int]) -> None:
        self.time = time
        self.frames = list(frames)
        self.cost_ns = list(cost_ns)

    def get(self, stop: threading.Event) -> CameraFrame | None:
        if not self.frames:
            return None
        self.time.now_ns += self.cost_ns.pop(0)
        return self.frames.pop(0)


def _run(supply: ListSupply, time: SimulatedTime, period_ns: int | None, max_lag_ns: int | None = None):
    emitted: list[int] = []
    ended: list[bool] = []
    pacer = Pacer(
        supply,
        lambda frame: emitted.append(time.clock_ns()),
        period_ns,
        on_end=lambda: ended.append(True),
        clock_ns=time.clock_ns,
        wait_s=time.wait_s,
        max_lag_ns=max_lag_ns,
    )
    pacer.run()
    return pacer, emitted, ended


def test_fixed_rate_deadlines_do_not_drift_with_production_time() -> None:
    time = SimulatedTime()
    # production time varies from frame to frame but always fits in the 33 ms period
    costs = [5 * MS, 20 * MS, 1 * MS, 30 * MS, 12 * MS, 25 * MS, 3 * MS, 18 * MS]
    supply = ListSupply(time, [_frame() for _ in costs], costs)
    pacer, emitted, ended = _run(supply, time, 33 * MS)
    start = emitted[0]
    assert [t - start for t in emitted] == [i * 33 * MS for i in range(len(costs))]
    assert ended == [True]
    assert pacer.stats.emitted == len(costs)
    assert pacer.stats.late == 0
    assert pacer.stats.reanchored == 0


def test_a_stall_reanchors_instead_of_bursting_out_missed_frames() -> None:
    time = SimulatedTime()
    costs = [0, 0, 500 * MS, 0, 0]  # the third frame takes half a second
    supply = ListSupply(time, [_frame() for _ in costs], costs)
    pacer, emitted, _ = _run(supply, time, 10 * MS)
    gaps = np.diff(emitted)
    assert gaps[0] == 10 * MS
    assert gaps[1] >= 500 * MS  # waited for the slow frame
    assert list(gaps[2:]) == [10 * MS, 10 * MS]  # then the normal period again, no burst
    assert pacer.stats.reanchored == 1
    assert pacer.stats.late == 1


def test_a_source_timing_is_followed_when_frames_carry_their_due_time() -> None:
    time = SimulatedTime()
    due = [0, 40 * MS, 45 * MS, 200 * MS]  # a bag's recorded timing: irregular
    supply = ListSupply(time, [_frame(d) for d in due], [0] * len(due))
    _, emitted, _ = _run(supply, time, None)
    assert [t - emitted[0] for t in emitted] == due


def test_prefetcher_produces_ahead_in_order_and_reports_worker_errors() -> None:
    produced: list[int] = []

    def produce() -> CameraFrame | None:
        if len(produced) == 5:
            raise RuntimeError('renderer broke')
        produced.append(len(produced))
        return _frame(due_ns=len(produced) - 1)

    prefetch = Prefetcher(produce, depth=2, name='test-prefetch')
    stop = threading.Event()
    prefetch.start()
    got = [prefetch.get(stop) for _ in range(5)]
    assert [frame.due_ns for frame in got if frame is not None] == [0, 1, 2, 3, 4]
    with pytest.raises(SourceError, match='renderer broke'):
        prefetch.get(stop)
    prefetch.stop()


def test_prefetcher_returns_none_at_the_end_and_on_stop() -> None:
    frames = [_frame(), _frame()]
    prefetch = Prefetcher(lambda: frames.pop() if frames else None, depth=1, name='test-prefetch')
    stop = threading.Event()
    prefetch.start()
    assert prefetch.get(stop) is not None
    assert prefetch.get(stop) is not None
    assert prefetch.get(stop) is None
    prefetch.stop()
    stop.set()
    assert prefetch.get(stop) is None
