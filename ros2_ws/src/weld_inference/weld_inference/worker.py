"""CPU discipline between the subscriptions and the model: a latest-frame-wins slot, a rate limit and
one worker thread, so callbacks never wait for inference and pairing never stalls.

When pairs arrive faster than they can be classified (or faster than ``max_rate_hz``), the pair
waiting in the slot is replaced by the newer one and counted as skipped: a skipped pair was never
handled, so it gets no result, while every pair the worker takes gets exactly one.
"""

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar('T')

# Two tokens let a pair that arrives a little early (camera jitter) through at once while the mean
# rate still cannot exceed the limit.
RATE_BURST = 2.0


class LatestSlot(Generic[T]):
    """Holds at most one item; a newer put replaces (and returns) the one not yet taken."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        with self._condition:
            replaced, self._item = self._item, item
            self._condition.notify()
            return replaced

    def wait(self, timeout_s: float) -> bool:
        """True when an item is waiting (or as soon as one comes within ``timeout_s``)."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout_s)
            return self._item is not None

    def take(self) -> T | None:
        with self._condition:
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class RateLimiter:
    """Token bucket: at most ``rate_hz`` starts per second on average; 0 means no limit."""

    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_hz < 0:
            raise ValueError(f'rate_hz must be >= 0, got {rate_hz}')
        self.rate_hz = float(rate_hz)
        self._clock = clock
        self._tokens = RATE_BURST
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(RATE_BURST, self._tokens + (now - self._last) * self.rate_hz)
        self._last = now

    def delay_s(self) -> float:
        """Seconds until a start is allowed (0 when it is allowed now)."""
        if self.rate_hz <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate_hz

    def consume(self) -> None:
        if self.rate_hz > 0:
            self._refill()
            self._tokens -= 1.0


class LatestFrameWorker(Generic[T]):
    """One thread that hands the newest waiting item to ``handle`` within the rate limit."""

    def __init__(
        self,
        handle: Callable[[T], None],
        max_rate_hz: float,
        on_skipped: Callable[[T], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._handle = handle
        self._on_skipped = on_skipped
        self._on_error = on_error
        self._slot: LatestSlot[T] = LatestSlot()
        self._limiter = RateLimiter(max_rate_hz)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='weld-inference', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: T) -> None:
        replaced = self._slot.put(item)
        if replaced is not None:
            self._on_skipped(replaced)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slot.wait(0.2):
                continue
            delay = self._limiter.delay_s()
            if delay > 0:
                self._stop.wait(delay)
                continue
            item = self._slot.take()
            if item is None:
                continue
            self._limiter.consume()
            try:
                self._handle(item)
            except Exception as exc:  # one bad pair must not end the worker
                self._on_error(exc)
