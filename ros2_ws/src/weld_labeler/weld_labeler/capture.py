"""Which label each arriving frame pair gets: capture requests first, then continuous mode.

A capture request labels the next ``count`` pairs that arrive after it was accepted. Requests are
served one after the other in the order they came; a pair belongs to at most one request. While
no request is waiting, continuous mode (if set) labels every pair. A request fails when no pair
arrives for it within the timeout; pairs it already labelled stay recorded and are reported.

Not thread-safe by itself: the node calls it under one lock together with the recorder, so that
"this pair is labelled" and "this pair is in the bag" cannot disagree.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from weld_core.classes import check_class_list, check_label
from weld_labeler.errors import CaptureError


@dataclass
class CaptureRequest:
    label: str
    count: int
    note: str
    session_id: str
    stamps: list[int] = field(default_factory=list)
    failure: str = ''
    last_progress_s: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def captured(self) -> int:
        return len(self.stamps)


@dataclass(frozen=True)
class Assignment:
    """The label of one pair and who asked for it (a request, or continuous mode if None)."""

    label: str
    note: str
    request: CaptureRequest | None


class CaptureQueue:
    """Capture requests in arrival order plus the continuous label."""

    def __init__(
        self,
        classes: Sequence[str],
        max_capture_count: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_capture_count < 1:
            raise ValueError(f'max_capture_count must be >= 1, got {max_capture_count}')
        self.classes = check_class_list(classes)
        self.max_capture_count = int(max_capture_count)
        self._clock = clock
        self._requests: deque[CaptureRequest] = deque()
        self.continuous: Assignment | None = None

    def check(self, label: str, count: int) -> int:
        """Validate a request; returns the count to capture (0 is taken as 1)."""
        check_label(label, self.classes)
        count = int(count)
        if count < 0:
            raise CaptureError(f'count must be >= 0, got {count}')
        if count > self.max_capture_count:
            raise CaptureError(
                f'count {count} is beyond max_capture_count {self.max_capture_count}: '
                'capture in several calls or use continuous mode'
            )
        return max(count, 1)

    def submit(self, label: str, count: int, note: str, session_id: str) -> CaptureRequest:
        count = self.check(label, count)
        request = CaptureRequest(label, count, note, session_id, last_progress_s=self._clock())
        self._requests.append(request)
        return request

    @property
    def waiting(self) -> int:
        return len(self._requests)

    def set_continuous(self, label: str, note: str) -> None:
        check_label(label, self.classes)
        self.continuous = Assignment(label, note, None)

    def clear_continuous(self) -> None:
        self.continuous = None

    def next_assignment(self) -> Assignment | None:
        """The label the next pair gets, without taking it (the pair may still fail to record)."""
        if self._requests:
            head = self._requests[0]
            return Assignment(head.label, head.note, head)
        return self.continuous

    def confirm(self, assignment: Assignment, stamp_ns: int) -> None:
        """The pair ``stamp_ns`` is in the bag with ``assignment``'s label."""
        request = assignment.request
        if request is None or request.done.is_set():
            return
        request.stamps.append(int(stamp_ns))
        request.last_progress_s = self._clock()
        if request.captured >= request.count:
            self._finish(request)

    def expire(self, request: CaptureRequest, timeout_s: float, reason: Callable[[], str]) -> bool:
        """Fail ``request`` when no pair came for it for ``timeout_s``; True when it is over."""
        if request.done.is_set():
            return True
        if self._clock() - request.last_progress_s < timeout_s:
            return False
        request.failure = reason()
        self._finish(request)
        return True

    def fail_all(self, reason: str) -> None:
        """End every waiting request (session stopped, storage full, shutdown)."""
        for request in list(self._requests):
            request.failure = request.failure or reason
            self._finish(request)

    def _finish(self, request: CaptureRequest) -> None:
        was_head = bool(self._requests) and self._requests[0] is request
        if request in self._requests:
            self._requests.remove(request)
        if was_head and self._requests:
            # the next request's wait for frames starts now, not when it was queued
            self._requests[0].last_progress_s = self._clock()
        request.done.set()


def describe_stall(
    rgb_topic: str,
    depth_topic: str,
    rgb_seen: bool,
    depth_seen: bool,
    timeout_s: float,
    slop_ms: float,
    last_error: str = '',
) -> str:
    """Why no pair was captured for ``timeout_s``, given which streams delivered frames meanwhile."""
    if not rgb_seen and not depth_seen:
        return f'no camera data on {rgb_topic} and {depth_topic} for {timeout_s:g} s'
    if not depth_seen:
        return f'no camera data on {depth_topic} for {timeout_s:g} s ({rgb_topic} is arriving)'
    if not rgb_seen:
        return f'no camera data on {rgb_topic} for {timeout_s:g} s ({depth_topic} is arriving)'
    if last_error:
        return f'frame pairs arrive but cannot be recorded: {last_error}'
    return (
        f'no frame pair for {timeout_s:g} s: rgb and depth frames arrive but no stamps matched '
        f'within {slop_ms:g} ms (check the camera stamps or pair_slop_ms)'
    )
