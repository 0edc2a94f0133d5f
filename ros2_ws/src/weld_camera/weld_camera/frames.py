"""What every source hands the node: one frame pair, already encoded as Image fields, ROS-free."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from weld_core.images import ImageFields


@dataclass(frozen=True)
class Intrinsics:
    """The fields of a sensor_msgs/CameraInfo that do not change from frame to frame."""

    width: int
    height: int
    k: tuple[float, ...]  # 3x3 row-major
    d: tuple[float, ...] = ()
    distortion_model: str = 'plumb_bob'
    r: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    p: tuple[float, ...] = field(default=())  # 3x4 row-major; derived from k when empty

    @classmethod
    def pinhole(cls, width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> 'Intrinsics':
        k = (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)
        return cls(width=width, height=height, k=k, d=(0.0,) * 5)

    @classmethod
    def from_msg(cls, msg: Any) -> 'Intrinsics':
        """A CameraInfo of any binding (rclpy, rosbags) -> Intrinsics."""
        return cls(
            width=int(msg.width),
            height=int(msg.height),
            k=_floats(msg.k),
            d=_floats(msg.d),
            distortion_model=str(msg.distortion_model),
            r=_floats(msg.r),
            p=_floats(msg.p),
        )

    @property
    def projection(self) -> tuple[float, ...]:
        if self.p and any(self.p):
            return self.p
        fx, _, cx, _, fy, cy, _, _, _ = self.k
        return (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a CameraInfo constructor (header excluded)."""
        return {
            'width': self.width,
            'height': self.height,
            'distortion_model': self.distortion_model,
            'd': list(self.d),
            'k': list(self.k),
            'r': list(self.r),
            'p': list(self.projection),
        }


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class CameraFrame:
    """One frame pair ready to publish: both images encoded once, with what the source knows of it.

    ``stamp_ns`` is the capture stamp a source keeps (relay, device, replay without restamping);
    None lets the node stamp the pair when it publishes. ``due_ns`` is when a paced source wants
    the pair out, in nanoseconds after playback started (None: as soon as possible).
    """

    rgb: ImageFields
    depth: ImageFields
    stamp_ns: int | None = None
    due_ns: int | None = None
    label: str | None = None  # ground truth (sim) or the bag's label of this pair (replay)
    note: str = ''
    intrinsics: Intrinsics | None = None
    depth_intrinsics: Intrinsics | None = None  # None: the colour intrinsics (registered depth)
