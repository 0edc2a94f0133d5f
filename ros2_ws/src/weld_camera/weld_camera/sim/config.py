"""Configuration of the weld-scene simulator and the pinhole intrinsics it renders with."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from weld_core.classes import DEFAULT_CLASSES, GOOD_CLASS
from weld_core.errors import WeldError

# The recorded weldsim sessions: fx = fy = 300 px at 320x240, camera 75-120 mm above the plate.
REFERENCE_WIDTH = 320
REFERENCE_FOCAL_PX = 300.0
DEFAULT_GOOD_SHARE = 0.3


class SimConfigError(WeldError, ValueError):
    """A simulator setting is out of range or names an unknown class."""


def default_class_mix(classes: tuple[str, ...] = DEFAULT_CLASSES) -> dict[str, float]:
    """Good welds 30 %, the defect classes share the rest equally (as in the recorded sessions)."""
    defects = [name for name in classes if name != GOOD_CLASS]
    mix = {GOOD_CLASS: DEFAULT_GOOD_SHARE}
    mix.update({name: (1.0 - DEFAULT_GOOD_SHARE) / len(defects) for name in defects})
    return mix


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the simulated camera (no distortion), in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def for_resolution(cls, width: int, height: int) -> 'CameraIntrinsics':
        """The reference camera (fx = fy = 300 px at 320x240) scaled to ``width`` x ``height``.

        Pixels stay square: another aspect ratio (say 640x360) crops the field of view instead of
        stretching it, as a sensor read out in a different mode does.
        """
        focal = REFERENCE_FOCAL_PX * width / REFERENCE_WIDTH
        return cls(
            width=width,
            height=height,
            fx=focal,
            fy=focal,
            cx=width / 2.0,
            cy=height / 2.0,
        )

    @property
    def k(self) -> tuple[float, ...]:
        """Row-major 3x3 camera matrix, as sensor_msgs/CameraInfo.k wants it."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    @property
    def p(self) -> tuple[float, ...]:
        """Row-major 3x4 projection matrix, as sensor_msgs/CameraInfo.p wants it."""
        return (self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0)

    def as_dict(self) -> dict[str, float | int]:
        return {
            'width': self.width,
            'height': self.height,
            'fx': self.fx,
            'fy': self.fy,
            'cx': self.cx,
            'cy': self.cy,
        }


@dataclass(frozen=True)
class SimConfig:
    """What the simulator renders: image size, seed, class mix and the camera's working distance.

    ``class_mix`` maps class names to relative weights (normalised here); ``None`` gives the default
    mix (good 30 %, defects share the rest). Rendering is deterministic for (config, index).
    """

    width: int = 640
    height: int = 480
    seed: int = 0
    class_mix: Mapping[str, float] | None = None
    classes: tuple[str, ...] = DEFAULT_CLASSES
    distance_range_m: tuple[float, float] = (0.075, 0.12)
    mix: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (('width', self.width), ('height', self.height)):
            if not isinstance(value, int) or isinstance(value, bool) or not 32 <= value <= 4096:
                raise SimConfigError(f'{name} must be an integer from 32 to 4096 pixels, got {value!r}')
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SimConfigError(f'seed must be a non-negative integer, got {self.seed!r}')
        near, far = self.distance_range_m
        if not (0.03 <= near <= far <= 1.0):
            raise SimConfigError(
                f'distance_range_m must be (near, far) with 0.03 <= near <= far <= 1.0 m, '
                f'got {self.distance_range_m!r}'
            )
        if GOOD_CLASS not in self.classes:
            raise SimConfigError(f'the class list must contain {GOOD_CLASS!r}, got {list(self.classes)}')
        object.__setattr__(self, 'mix', _normalised_mix(self.class_mix, self.classes))


def _normalised_mix(class_mix: Mapping[str, float] | None, classes: tuple[str, ...]) -> dict[str, float]:
    from weld_camera.sim.scene import RENDERABLE_CLASSES

    unknown = [name for name in classes if name not in RENDERABLE_CLASSES]
    if unknown:
        raise SimConfigError(
            f'the simulator cannot render classes {unknown}; it renders {list(RENDERABLE_CLASSES)}'
        )
    if class_mix is None:
        return default_class_mix(classes)
    if not isinstance(class_mix, Mapping) or not class_mix:
        raise SimConfigError(f'class_mix must be a non-empty mapping of class -> weight, got {class_mix!r}')
    mix: dict[str, float] = {}
    for name, weight in class_mix.items():
        if name not in classes:
            raise SimConfigError(f'class_mix names unknown class {name!r}: use {", ".join(classes)}')
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise SimConfigError(f'class_mix weight of {name!r} must be a finite number >= 0, got {weight!r}')
        mix[name] = float(weight)
    total = sum(mix.values())
    if total <= 0:
        raise SimConfigError('class_mix weights sum to 0: give at least one class a positive weight')
    return {name: mix.get(name, 0.0) / total for name in classes}
