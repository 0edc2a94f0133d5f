"""Pairing of rgb and depth frames by stamp (ROS-free, used by every consumer of the camera topics).

A frame pair is an rgb and a depth image with the same stamp; frames from other drivers are paired
when their stamps differ by at most ``slop_ns``. Exact matches win; a frame is only paired
approximately with the nearest frame of the other stream inside the slop. Frames that can no
longer find a partner (the other stream has moved past them) are dropped and counted.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar('T')

DEFAULT_SLOP_NS = 15_000_000


@dataclass(frozen=True)
class FramePair(Generic[T]):
    """One rgb and one depth frame taken together; ``stamp_ns`` is the rgb frame's stamp."""

    stamp_ns: int
    rgb: T
    depth: T
    skew_ns: int  # depth stamp minus rgb stamp


@dataclass
class PairingStats:
    paired: int = 0
    paired_exact: int = 0
    dropped_rgb: int = 0
    dropped_depth: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_rgb + self.dropped_depth


@dataclass
class _Stream(Generic[T]):
    frames: deque[tuple[int, T]] = field(default_factory=deque)
    newest_ns: int | None = None


class FramePairer(Generic[T]):
    """Pairs frames of two streams by stamp; feed it with add_rgb/add_depth, it returns pairs."""

    def __init__(self, slop_ns: int = DEFAULT_SLOP_NS, max_pending: int = 30) -> None:
        if slop_ns < 0:
            raise ValueError(f'slop_ns must be >= 0, got {slop_ns}')
        if max_pending < 1:
            raise ValueError(f'max_pending must be >= 1, got {max_pending}')
        self.slop_ns = int(slop_ns)
        self.max_pending = int(max_pending)
        self.stats = PairingStats()
        self._rgb: _Stream[T] = _Stream()
        self._depth: _Stream[T] = _Stream()

    def add_rgb(self, stamp_ns: int, frame: T) -> list[FramePair[T]]:
        return self._add(self._rgb, self._depth, int(stamp_ns), frame, is_rgb=True)

    def add_depth(self, stamp_ns: int, frame: T) -> list[FramePair[T]]:
        return self._add(self._depth, self._rgb, int(stamp_ns), frame, is_rgb=False)

    @property
    def pending(self) -> tuple[int, int]:
        """Frames waiting for a partner: (rgb, depth)."""
        return len(self._rgb.frames), len(self._depth.frames)

    def clear(self) -> None:
        """Forget pending frames without counting them as dropped (e.g. on a source change)."""
        self._rgb = _Stream()
        self._depth = _Stream()

    def _add(
        self, own: _Stream[T], other: _Stream[T], stamp_ns: int, frame: T, is_rgb: bool
    ) -> list[FramePair[T]]:
        own.newest_ns = stamp_ns if own.newest_ns is None else max(own.newest_ns, stamp_ns)
        match = self._take_partner(other, stamp_ns)
        pairs: list[FramePair[T]] = []
        if match is None:
            own.frames.append((stamp_ns, frame))
            while len(own.frames) > self.max_pending:
                own.frames.popleft()
                self._count_drop(is_rgb)
        else:
            other_ns, other_frame = match
            if is_rgb:
                pairs.append(FramePair(stamp_ns, frame, other_frame, other_ns - stamp_ns))
            else:
                pairs.append(FramePair(other_ns, other_frame, frame, stamp_ns - other_ns))
            self.stats.paired += 1
            self.stats.paired_exact += int(other_ns == stamp_ns)
        self._expire(other, own.newest_ns, other_is_rgb=not is_rgb)
        return pairs

    def _take_partner(self, other: _Stream[T], stamp_ns: int) -> tuple[int, Any] | None:
        best_index, best_skew = -1, self.slop_ns + 1
        for index, (other_ns, _) in enumerate(other.frames):
            skew = abs(other_ns - stamp_ns)
            if skew < best_skew:
                best_index, best_skew = index, skew
                if skew == 0:
                    break
        if best_index < 0:
            return None
        match = other.frames[best_index]
        del other.frames[best_index]
        return match

    def _expire(self, stream: _Stream[T], newest_other_ns: int | None, other_is_rgb: bool) -> None:
        """Drop frames older than the other stream's newest stamp minus the slop: no partner can come."""
        if newest_other_ns is None:
            return
        while stream.frames and stream.frames[0][0] < newest_other_ns - self.slop_ns:
            stream.frames.popleft()
            self._count_drop(other_is_rgb)

    def _count_drop(self, is_rgb: bool) -> None:
        if is_rgb:
            self.stats.dropped_rgb += 1
        else:
            self.stats.dropped_depth += 1
