"""The simulator's public face: a deterministic, indexable stream of labelled RGB-D frames."""

from dataclasses import dataclass, field

import numpy as np

from weld_camera.sim.config import CameraIntrinsics, SimConfig, SimConfigError
from weld_camera.sim.render import SceneRenderer
from weld_camera.sim.scene import draw_label, frame_rng, sample_scene


@dataclass(frozen=True)
class SimFrame:
    """One rendered frame pair and its ground truth.

    ``truth`` holds the geometry behind the pixels: ``mm_per_px``, ``distance_m`` (camera to plate
    at the image centre), ``seam_point_px`` and ``seam_angle_deg`` (the straight seam line),
    ``seam_centre_px`` (Nx2 float32 points of the bead's actual centre line, meander and bend
    included), ``bead_half_width_mm``, ``bead_height_mm`` and ``defects``: a list of dicts with
    ``kind`` 'pit' or 'droplet' (``x_px``, ``y_px``, ``radius_px``, ``depth_mm``/``height_mm``),
    'gap' (``start_px``, ``end_px``, ``length_mm``, ``height_factor``) or 'undercut' (``start_px``,
    ``end_px``, ``length_mm``, ``side`` +1/-1 across the seam line, ``both_sides``, ``depth_mm``,
    ``width_mm``). ``glare`` lists the glare spots (``x_px``, ``y_px``, ``radius_px``): nuisances,
    not defects.
    """

    index: int
    rgb: np.ndarray  # HxWx3 uint8, RGB order
    depth_m: np.ndarray  # HxW float32 metres, 0.0 = no data
    label: str
    severity: float  # 0 (good / subtle) .. 1 (obvious)
    camera_info: CameraIntrinsics
    height_mm: np.ndarray = field(repr=False)  # noise-free height above the plate plane
    truth: dict = field(default_factory=dict, repr=False)  # seam geometry and defect locations (px)


class WeldSimulator:
    """Renders top-down RGB + registered depth of a weld seam, deterministically per (seed, index).

    ``render(index)`` always gives the same frame for the same config and index; ``next()`` walks a
    stream (index 0, 1, 2, ...) whose classes follow ``config.class_mix``.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.camera_info = CameraIntrinsics.for_resolution(self.config.width, self.config.height)
        self._renderer = SceneRenderer(self.camera_info, self.config.seed)
        self._next_index = 0

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def next_index(self) -> int:
        return self._next_index

    def label_of(self, index: int) -> str:
        """The class frame ``index`` of the stream has (without rendering it)."""
        return draw_label(frame_rng(self.config.seed, index), self.config.mix)

    def render(
        self, index: int | None = None, label: str | None = None, severity: float | None = None
    ) -> SimFrame:
        """Frame ``index`` (the stream's next one when None); ``label`` forces its class.

        ``severity`` (0 subtle .. 1 obvious) forces how pronounced a defect is; good frames have 0.
        Forcing the label or severity keeps the frame's plate, bead, light and nuisances.
        """
        if index is None:
            index = self._next_index
            self._next_index += 1
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise SimConfigError(f'frame index must be a non-negative integer, got {index!r}')
        if label is not None and label not in self.config.classes:
            raise SimConfigError(
                f'cannot render unknown class {label!r}: use {", ".join(self.config.classes)}'
            )
        if severity is not None and not (isinstance(severity, (int, float)) and 0.0 <= severity <= 1.0):
            raise SimConfigError(f'severity must be a number from 0 to 1, got {severity!r}')
        rng = frame_rng(self.config.seed, int(index))
        drawn = draw_label(rng, self.config.mix)
        label = label or drawn
        distance_mm = tuple(1000.0 * d for d in self.config.distance_range_m)
        scene = sample_scene(
            rng,
            label,
            self.camera_info,
            distance_mm,
            self._renderer.bank_shape,
            len(self._renderer.textures),
            severity,
        )
        rendered = self._renderer.render(scene)
        return SimFrame(
            index=int(index),
            rgb=rendered.rgb,
            depth_m=rendered.depth_m,
            label=label,
            severity=scene.severity,
            camera_info=self.camera_info,
            height_mm=rendered.height_mm,
            truth=rendered.truth,
        )

    def next(self) -> SimFrame:
        """The next frame of the stream; its class is drawn from the configured mix."""
        return self.render()

    def __iter__(self) -> 'WeldSimulator':
        return self

    def __next__(self) -> SimFrame:
        return self.next()
