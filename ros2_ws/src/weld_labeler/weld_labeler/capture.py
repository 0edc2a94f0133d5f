"""Which label each arriving frame pair gets: capture requests first, then continuous mode.

A capture request labels the next ``count`` pairs that arrive after it was accepted. Requests are
served one after the other in the order they came; a pair belongs to at most one request. A pair
is assigned when it is paired and confirmed once it is in the bag (recording runs in another
thread); a pair that cannot be recorded is released and the next one takes its place. While
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
    assigned: int = 0  # pairs given to this request (written or on their way to the bag)
    stamps: list[int] = field(default_factory=list)  # pairs in the bag
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

    def assign(self) -> Assignment | None:
        """Give the next pair its label: the oldest request still short of pairs, else continuous.

        The pair is reserved for the request until :meth:`confirm` (it is in the bag) or
        :meth:`release` (it could not be recorded, so a later pair takes its place).
        """
        for request in self._requests:
            if request.assigned < request.count:
                request.assigned += 1
                return Assignment(request.label, request.note, request)
        return self.continuous

    def release(self, assignment: Assignment | None) -> None:
        """A reserved pair was not recorded: its request waits for another one."""
        if assignment is not None and assignment.request is not None and not assignment.request.done.is_set():
            assignment.request.assigned -= 1

    def is_live(self, assignment: Assignment | None) -> bool:
        """False when the pair's request has ended meanwhile (its pair must not carry the label)."""
        return assignment is not None and (assignment.request is None or not assignment.request.done.is_set())

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
        """Fail ``request`` when no pair came for it for ``timeout_s``; True when it is over.

        A request with pairs on their way to the bag is not idle: it does not expire.
        """
        if request.done.is_set():
            return True
        if request.assigned > request.captured or self._clock() - request.last_progress_s < timeout_s:
            return False
        request.failure = reason()
        self._finish(request)
        return True

    def fail_all(self, reason: str, session_id: str | None = None) -> None:
        """End every waiting request (of ``session_id`` if given): session stopped, storage full."""
        for request in list(self._requests):
            if session_id is None or request.session_id == session_id:
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
