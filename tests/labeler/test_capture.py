"""CaptureQueue and stall messages: which label each pair gets, refusals, timeouts."""

import pytest

from weld_core.errors import LabelError
from weld_labeler.capture import CaptureQueue, describe_stall
from weld_labeler.errors import CaptureError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_queue(clock: FakeClock | None = None) -> CaptureQueue:
    return CaptureQueue(('good', 'porosity', 'gap'), max_capture_count=10, clock=clock or FakeClock())


def test_requests_are_served_in_order_and_finish_at_their_count() -> None:
    queue = make_queue()
    first = queue.submit('porosity', 2, 'a', 's')
    second = queue.submit('gap', 0, 'b', 's')
    assert second.count == 1
    stamps = iter(range(10))
    served = []
    while (assignment := queue.assign()) is not None:
        served.append(assignment.label)
        queue.confirm(assignment, next(stamps))
    assert served == ['porosity', 'porosity', 'gap']
    assert first.done.is_set() and first.stamps == [0, 1] and not first.failure
    assert second.done.is_set() and second.stamps == [2]


@pytest.mark.parametrize(
    ('label', 'count', 'error', 'match'),
    [
        ('bogus', 1, LabelError, 'unknown label'),
        ('', 1, LabelError, 'empty label'),
        ('  ', 1, LabelError, 'empty label'),
        ('good', 11, CaptureError, 'beyond max_capture_count 10'),
        ('good', -1, CaptureError, 'count must be >= 0'),
    ],
)
def test_bad_requests_are_refused_without_queueing(label: str, count: int, error: type, match: str) -> None:
    queue = make_queue()
    with pytest.raises(error, match=match):
        queue.submit(label, count, '', 's')
    assert queue.waiting == 0 and queue.assign() is None


def test_continuous_mode_labels_pairs_when_no_capture_waits() -> None:
    queue = make_queue()
    queue.set_continuous('gap', 'seam 2')
    assert queue.assign().label == 'gap'
    request = queue.submit('good', 1, '', 's')
    assignment = queue.assign()
    assert assignment.request is request and assignment.label == 'good'
    # the request has its pair (on its way to the bag): later pairs fall to continuous mode
    assert queue.assign().label == 'gap'
    queue.confirm(assignment, 5)
    assert request.done.is_set() and queue.assign().note == 'seam 2'
    queue.clear_continuous()
    assert queue.assign() is None
    with pytest.raises(LabelError):
        queue.set_continuous('nope', '')


def test_a_pair_that_could_not_be_recorded_is_replaced_by_the_next() -> None:
    queue = make_queue()
    request = queue.submit('porosity', 2, '', 's')
    first, second = queue.assign(), queue.assign()
    assert queue.assign() is None
    queue.release(first)
    third = queue.assign()
    assert third.request is request
    queue.confirm(second, 2)
    queue.confirm(third, 3)
    assert request.done.is_set() and request.stamps == [2, 3]


def test_a_request_with_pairs_in_flight_does_not_expire() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    request = queue.submit('good', 1, '', 's')
    assignment = queue.assign()
    clock.now += 60
    assert not queue.expire(request, 5.0, lambda: 'x')
    assert queue.is_live(assignment)
    queue.fail_all('stopped', session_id='other')
    assert queue.is_live(assignment)
    queue.fail_all('stopped', session_id='s')
    assert not queue.is_live(assignment) and request.failure == 'stopped'


def test_a_request_expires_after_the_timeout_without_pairs() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    request = queue.submit('good', 3, '', 's')
    queue.confirm(queue.assign(), 1)
    clock.now += 4.9
    assert not queue.expire(request, 5.0, lambda: 'why')
    clock.now += 0.2
    assert queue.expire(request, 5.0, lambda: 'no camera data')
    assert request.done.is_set() and request.failure == 'no camera data' and request.captured == 1
    assert queue.assign() is None


def test_the_next_request_waits_from_when_it_reaches_the_head() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    first = queue.submit('good', 1, '', 's')
    second = queue.submit('gap', 1, '', 's')
    clock.now += 4.0
    queue.confirm(queue.assign(), 1)
    assert first.done.is_set()
    clock.now += 4.0
    assert not queue.expire(second, 5.0, lambda: 'x')


def test_fail_all_ends_every_waiting_request() -> None:
    queue = make_queue()
    requests = [queue.submit('good', 2, '', 's') for _ in range(3)]
    queue.fail_all('session stopped')
    assert all(r.done.is_set() and r.failure == 'session stopped' for r in requests)
    assert queue.waiting == 0


def test_stall_messages_name_the_silent_topics() -> None:
    args = ('/rgb', '/depth')
    assert describe_stall(*args, False, False, 5, 15) == 'no camera data on /rgb and /depth for 5 s'
    assert describe_stall(*args, True, False, 2.5, 15).startswith('no camera data on /depth for 2.5 s')
    assert describe_stall(*args, False, True, 5, 15).startswith('no camera data on /rgb for 5 s')
    assert 'no stamps matched within 15 ms' in describe_stall(*args, True, True, 5, 15)
    assert 'cannot be recorded: bad' in describe_stall(*args, True, True, 5, 15, 'bad')
