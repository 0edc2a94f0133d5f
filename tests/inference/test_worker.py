"""Latest-frame-wins slot, token-bucket rate limit and the worker thread."""

import threading
import time

import pytest

from weld_inference.worker import LatestFrameWorker, LatestSlot, RateLimiter


def test_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.wait(0.0)
    assert slot.take() == 2
    assert slot.take() is None
    assert not slot.wait(0.01)


def test_rate_limiter_allows_jitter_but_not_a_higher_mean_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(10.0, clock=lambda: now[0])
    starts = 0
    # pairs offered every 10 ms for 10 s: about 10 per second may start (plus the initial burst)
    for _ in range(1000):
        now[0] += 0.01
        if limiter.delay_s() == 0.0:
            limiter.consume()
            starts += 1
    assert 100 <= starts <= 102
    # at exactly the limit, a pair 5 ms early is not held back
    now[0] += 1.0
    for early in (0.095, 0.1, 0.105, 0.095):
        now[0] += early
        assert limiter.delay_s() == 0.0
        limiter.consume()
    with pytest.raises(ValueError):
        RateLimiter(-1.0)
    assert RateLimiter(0.0).delay_s() == 0.0


def test_worker_skips_what_it_cannot_keep_up_with_and_answers_the_rest() -> None:
    handled: list[int] = []
    skipped: list[int] = []
    release = threading.Event()

    def handle(item: int) -> None:
        if item == 0:
            release.wait(5.0)
        if item == 5:
            raise ValueError('bad pair')
        handled.append(item)

    errors: list[BaseException] = []
    worker: LatestFrameWorker[int] = LatestFrameWorker(handle, 0.0, skipped.append, errors.append)
    worker.start()
    worker.submit(0)
    time.sleep(0.1)  # the worker holds item 0
    for item in (1, 2, 3):
        worker.submit(item)
    release.set()
    deadline = time.monotonic() + 5
    while 3 not in handled and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit(5)
    time.sleep(0.2)
    worker.submit(6)
    deadline = time.monotonic() + 5
    while 6 not in handled and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert handled == [0, 3, 6]
    assert skipped == [1, 2]
    assert len(errors) == 1 and str(errors[0]) == 'bad pair'
