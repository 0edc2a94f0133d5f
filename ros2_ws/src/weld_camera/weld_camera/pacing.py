"""Drift-free pacing of frame publication in a thread of its own (ROS-free).

Deadlines are absolute: frame i is due at ``start + i * period`` (or at ``start + frame.due_ns``
for a source with its own timing, such as a bag played at its recorded rate), so the rate does not
drift with the time each publish takes. A publisher that fell behind by more than ``max_lag_ns``
(a stall, a slow frame) re-anchors its schedule instead of bursting out the frames it missed.

An rclpy timer also keeps a fixed period, but cannot follow a bag's recorded timing, and running
publication on the executor would delay parameter and lifecycle services behind image
serialisation; a dedicated thread keeps both free.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from weld_camera.frames import CameraFrame


class FrameSupply(Protocol):
    def get(self, stop: threading.Event) -> CameraFrame | None:
        """The next frame, blocking; None at the end or once ``stop`` is set."""


@dataclass
class PacingStats:
    emitted: int = 0
    late: int = 0  # frames emitted more than one period after their deadline
    reanchored: int = 0  # times the schedule was moved because the publisher fell behind
    waiting_for_frames_s: float = 0.0  # time spent waiting for the supply, i.e. production too slow
    cpu_s: float = 0.0  # CPU time of the pacing thread (publishing)


class Pacer:
    """Takes frames from ``supply`` and hands each to ``emit`` at its deadline, until stopped or ended."""

    def __init__(
        self,
        supply: FrameSupply,
        emit: Callable[[CameraFrame], None],
        period_ns: int | None,
        on_end: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        max_lag_ns: int | None = None,
        wait_s: Callable[[float], bool] | None = None,
    ) -> None:
        if period_ns is not None and period_ns <= 0:
            raise ValueError(f'period_ns must be > 0, got {period_ns}')
        self._supply = supply
        self._emit = emit
        self._period_ns = period_ns
        self._on_end = on_end
        self._on_error = on_error
        self._clock_ns = clock_ns
        default_lag = 2 * period_ns if period_ns else 200_000_000
        self._max_lag_ns = max(max_lag_ns if max_lag_ns is not None else default_lag, 1)
        self._stop = threading.Event()
        # sleeps until the deadline; True when stopped meanwhile (tests give a simulated clock)
        self._wait_s = wait_s or self._stop.wait
        self._thread: threading.Thread | None = None
        self.stats = PacingStats()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='weld_camera-pacer', daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Pace in the calling thread until the supply ends or stop() is called."""
        self._run()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _deadline_offset_ns(self, frame: CameraFrame, index: int) -> int:
        if frame.due_ns is not None:
            return frame.due_ns
        return index * (self._period_ns or 0)

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            self._loop()
        except Exception as exc:  # reported by the owner (a node logs it); the thread ends cleanly
            if self._on_error is not None:
                self._on_error(exc)
        finally:
            self.stats.cpu_s = time.thread_time() - cpu_start

    def _loop(self) -> None:
        cpu_start = time.thread_time()
        anchor_ns: int | None = None
        index = 0
        lateness_ns = self._period_ns or self._max_lag_ns
        while not self._stop.is_set():
            asked_ns = self._clock_ns()
            frame = self._supply.get(self._stop)
            got_ns = self._clock_ns()
            if frame is None:
                if not self._stop.is_set() and self._on_end is not None:
                    self._on_end()
                return
            if anchor_ns is None:
                anchor_ns = got_ns - self._deadline_offset_ns(frame, 0)
            else:
                self.stats.waiting_for_frames_s += (got_ns - asked_ns) / 1e9
            deadline_ns = anchor_ns + self._deadline_offset_ns(frame, index)
            now_ns = self._clock_ns()
            if deadline_ns > now_ns:
                if self._wait_s((deadline_ns - now_ns) / 1e9) or self._stop.is_set():
                    return
            elif now_ns - deadline_ns > self._max_lag_ns:
                anchor_ns += now_ns - deadline_ns
                self.stats.reanchored += 1
            if self._clock_ns() - deadline_ns > lateness_ns:
                self.stats.late += 1
            self._emit(frame)
            index += 1
            self.stats.emitted += 1
            self.stats.cpu_s = time.thread_time() - cpu_start
