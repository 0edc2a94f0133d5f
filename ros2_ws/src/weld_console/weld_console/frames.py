"""The most recent camera frame pairs, kept as the CDR bytes DDS delivered.

The console takes frames raw from DDS's queue only when it needs a pair (``weld_console.tap``: no
deserialisation per frame, no Python per frame it does not use); a pair is decoded only when a
preview, a capture thumbnail or a review item needs it. Pairs are matched by header stamp
(``weld_core.pairing``, the labeler's and the inference node's rule) and the last ``capacity`` pairs
are kept, so a DefectResult or a DefectLabel that arrives a little after its frame still finds it.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass

from weld_core.pairing import FramePairer
from weld_labeler.cdr import header_of
from weld_labeler.errors import RecorderError

Frame = tuple[bytes, str]  # CDR bytes, frame_id


@dataclass(frozen=True)
class RawPair:
    stamp_ns: int
    frame_id: str
    rgb: bytes
    depth: bytes


class FrameBuffer:
    """Pairs raw rgb/depth CDR by stamp and keeps the newest ``capacity`` pairs; thread-safe."""

    def __init__(self, slop_ns: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = int(capacity)
        self._pairer: FramePairer[Frame] = FramePairer(int(slop_ns))
        self._pairs: OrderedDict[int, RawPair] = OrderedDict()
        self._lock = threading.Lock()
        self.rejected = 0

    def add_rgb(self, data: bytes) -> list[RawPair]:
        return self._add(data, is_rgb=True)

    def add_depth(self, data: bytes) -> list[RawPair]:
        return self._add(data, is_rgb=False)

    def _add(self, data: bytes, is_rgb: bool) -> list[RawPair]:
        try:
            stamp_ns, frame_id = header_of(data)
        except RecorderError:
            self.rejected += 1
            return []
        with self._lock:
            add = self._pairer.add_rgb if is_rgb else self._pairer.add_depth
            made = [
                RawPair(pair.stamp_ns, pair.rgb[1], pair.rgb[0], pair.depth[0])
                for pair in add(stamp_ns, (bytes(data), frame_id))
            ]
            for pair in made:
                self._pairs[pair.stamp_ns] = pair
                self._pairs.move_to_end(pair.stamp_ns)
            while len(self._pairs) > self.capacity:
                self._pairs.popitem(last=False)
        return made

    def get(self, stamp_ns: int) -> RawPair | None:
        with self._lock:
            return self._pairs.get(int(stamp_ns))

    def latest(self) -> RawPair | None:
        with self._lock:
            return next(reversed(self._pairs.values()), None)
