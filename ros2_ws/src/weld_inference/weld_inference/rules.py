"""Rule-based weld inspection on depth: the fallback when no model answers, and the baseline.

ROS-free (numpy + OpenCV). The detector measures the weld in millimetres and turns the measurements
into class scores with thresholds that are plain numbers in :class:`RuleConfig`:

1. Plate: the plate is fitted as a plane in inverse depth (``1/z`` is exactly linear in the pixel
   coordinates for a plane), robustly so bead, spatter and dropout do not pull it; once the seam is
   known each plate (left and right of the seam) gets its own plane, because butt-welded plates
   rarely sit at exactly the same height and tilt. Every pixel's height above its plate is then the
   perpendicular distance in mm.
2. Seam: the pixels well above (bead) or below (open joint) the plate give the seam direction
   (weighted principal axis); the bead centre line is a robust quadratic along that axis, so curved
   seams are followed.
3. Bead profile: heights are binned by the signed distance from the centre line; the crown height is
   the profile's peak and the toes are where the profile falls to a small fraction of it (width).
4. Defects, each measured against the fitted surfaces rather than on raw depth:
   pits (depressions below the local bead surface on the crown), droplets (small raised blobs on the
   plates away from the bead), missing fill (stretches of the seam whose crown falls towards plate
   level or below it) and toe grooves (depressions below plate level just outside the toes).

Scoring: each defect class gets an evidence value in 0..1 from its measurement (a logistic ramp
centred on the class threshold, see :class:`RuleConfig`); 'good' gets the product of (1 - evidence)
of the defects; the scores are these values normalised over the configured class list (classes the
rules do not know score 0, so a site's extra classes never win here). An open seam stretch (gap)
also explains deep 'pits' and sunken toes next to it, so gap evidence damps porosity and undercut.

Thresholds follow the frame's depth noise: the deepest 'pit', highest 'droplet' and deepest
'groove' that noise alone leaves on a clean weld scale with the noise (they are extremes over many
pixels), so each defect must beat both a floor in mm and a multiple of the plate's noise.

RGB is not used for defects: stains, scratches and glare on a real sensor must not raise alarms
(on the recorded sessions a dark-spot cue in colour raised false spatter calls on good welds from
5 % to 13-21 %), and depth carries every defect of the default class list. Frames the detector
cannot judge (too little depth, no bead in view, image too small) get equal scores for every class
and a ``reason`` saying why.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from weld_core.classes import DEFAULT_CLASSES, GOOD_CLASS, check_class_list
from weld_core.errors import ImageFormatError, WeldError
from weld_core.fitting import least_squares_3, median

__all__ = ['IntrinsicsError', 'RuleConfig', 'RuleDetector', 'RuleResult']

DEFECT_CLASSES: tuple[str, ...] = ('porosity', 'spatter', 'gap', 'undercut')
_PLANE_STRIDE = 3  # px between the pixels the plate planes are fitted on
_BORDER_PX = 3  # pits and droplets are looked for this far inside the image
_PIT_REFERENCE_STRETCHES = 5  # seam stretches (of seam_step_mm) whose median is a pit's reference
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class IntrinsicsError(WeldError, ValueError):
    """The camera intrinsics given to the rules are not positive finite numbers."""


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rule-based detector; lengths in mm, heights/depths in mm above the plate.

    Each defect class gets an evidence value in 0..1 from one measurement: a logistic ramp that is
    0.5 at the class threshold and moves from about 0.12 to 0.88 within +- ``*_softness`` of it:
    porosity from ``max_pit_depth_mm`` (threshold ``max(pit_depth_mm, pit_noise_factor * noise)``),
    spatter from ``spatter_count`` (droplets higher than ``max(droplet_height_mm,
    droplet_noise_factor * noise)``; threshold ``spatter_min_count``), gap from
    ``missing_fill_length_mm`` (longest stretch whose crown is below ``fill_fraction`` of the nominal
    bead height; threshold ``gap_length_mm``) and undercut from ``toe_groove_depth_mm`` (threshold
    ``max(undercut_depth_mm, groove_noise_factor * noise)``), where noise is ``depth_noise_mm``.
    The defaults were set by looking at recorded sessions s01-s04 and simulator seed 0 (see
    bench/bench_rules.py for the held-out figures).
    """

    # camera defaults (used when the caller gives no intrinsics): focal length at a reference width
    default_fx_px: float = 300.0
    default_width_px: int = 320
    # frames wider than this are averaged down by an integer factor (the measurements are in mm)
    work_width_px: int = 320
    # below this fraction of valid depth pixels the frame is not judged
    min_valid_fraction: float = 0.2
    # plate fit: residual band that counts as plate (the noise estimate widens it when larger)
    plate_inlier_mm: float = 0.5
    # seam finding: smoothed height above (bead) or below (open joint) the plate
    seam_min_height_mm: float = 0.5
    # fraction of the (working) image the seam pixels must cover to call it a bead in view
    min_seam_fraction: float = 0.01
    # the toes are where the bead profile falls below this fraction of the crown height
    toe_fraction: float = 0.1
    # length of the seam stretches the local bead surface and the toe grooves are measured over
    seam_step_mm: float = 2.0
    # Depth noise sets how deep a 'pit', how high a 'droplet' and how deep a 'groove' the noise alone
    # makes on a clean weld (the extremes of many noisy pixels); each defect must exceed its mm floor
    # and its factor times the frame's depth noise (robust spread of the plate around its plane).
    # --- porosity: pits on the crown
    pit_depth_mm: float = 0.2
    pit_noise_factor: float = 2.9
    pit_softness_mm: float = 0.08
    pit_smoothing_px: float = 0.7
    # fraction of the bead half-width around the centre line that is crown
    crown_band_fraction: float = 0.6
    # --- spatter: droplets on the plates
    droplet_height_mm: float = 0.12
    droplet_noise_factor: float = 2.2
    droplet_max_diameter_mm: float = 3.0
    droplet_min_area_mm2: float = 0.1
    droplet_smoothing_px: float = 0.8
    # plate strip next to the toes left out of the droplet search (toe ripples, grooves)
    droplet_toe_clearance_mm: float = 0.6
    spatter_min_count: float = 1.0
    spatter_softness: float = 0.3
    # --- gap: missing fill along the seam
    # a seam stretch is unfilled where the crown is below this fraction of the nominal bead height
    fill_fraction: float = 0.5
    gap_length_mm: float = 3.0
    gap_softness_mm: float = 0.8
    # --- undercut: grooves below plate level just outside the toes
    toe_zone_mm: float = 1.5
    undercut_depth_mm: float = 0.12
    undercut_softness_mm: float = 0.06
    # ... and at least this multiple of the depth noise (the groove measure's level on clean welds)
    groove_noise_factor: float = 1.35

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f'RuleConfig.{name} must be a positive finite number, got {value!r}')
        if not 0 < self.toe_fraction < 1 or not 0 < self.fill_fraction < 1:
            raise ValueError('RuleConfig.toe_fraction and fill_fraction must lie strictly between 0 and 1')
        if not 0 < self.crown_band_fraction <= 1 or not 0 < self.min_valid_fraction <= 1:
            raise ValueError('RuleConfig.crown_band_fraction and min_valid_fraction must lie in (0, 1]')


@dataclass(frozen=True)
class RuleResult:
    """One judgement: the winning class, all scores (order of ``class_names``, sum 1) and the mm figures."""

    label: str
    confidence: float
    scores: tuple[float, ...]
    class_names: tuple[str, ...]
    measurements: dict[str, float] = field(default_factory=dict)
    # per defect class, 0..1, before normalisation (what each threshold said)
    evidence: dict[str, float] = field(default_factory=dict)
    # why the frame could not be judged ('' when it was measured)
    reason: str = ''


@dataclass
class _Plane:
    """A plane as inverse depth ``1/z = a*x + b*y + c`` over centred pixel coordinates."""

    a: float
    b: float
    c: float
    fx: float
    fy: float

    def inverse_depth(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.a * x + self.b * y + self.c

    @property
    def inv_normal_length(self) -> float:
        # distance of the plane from the camera centre; turns (1 - z / z_plane) into metres
        return 1.0 / math.sqrt((self.a * self.fx) ** 2 + (self.b * self.fy) ** 2 + self.c**2)

    @property
    def tilt_deg(self) -> float:
        lateral = math.hypot(self.a * self.fx, self.b * self.fy)
        return math.degrees(math.atan2(lateral, abs(self.c)))


@dataclass
class _SeamGrid:
    """Cell means of the height around the seam; ``keys`` index ``means.ravel()`` for ``near`` pixels."""

    near: np.ndarray
    keys: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    reach: int


def _logistic(value: float, threshold: float, softness: float) -> float:
    # softness is where the ramp reaches ~0.88; the factor 2 makes it so
    arg = 2.0 * (value - threshold) / softness
    return float(1.0 / (1.0 + math.exp(-max(min(arg, 50.0), -50.0))))


def _blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that ignores pixels of weight 0 (normalised convolution)."""
    num = cv2.GaussianBlur(values * weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    out = np.zeros_like(values)
    np.divide(num, den, out=out, where=den > 1e-3)
    return out


def _interior(shape: tuple[int, ...]) -> np.ndarray:
    """Pixels away from the image border: a pit or droplet cut by the border cannot be measured."""
    inside = np.zeros(shape, dtype=bool)
    inside[_BORDER_PX:-_BORDER_PX, _BORDER_PX:-_BORDER_PX] = True
    return inside


def _supported_blur(values: np.ndarray, valid: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`_blur` of ``values`` over ``valid`` times sqrt of the kernel's share (in ``region``) with depth.

    A mean over fewer pixels is noisier by 1/sqrt(share): multiplying a smoothed deviation by this
    keeps holes in the depth (dropout) from producing pits and droplets out of noise. The blur of
    the valid mask serves both (one Gaussian pass fewer than the two separately).
    """
    weight = valid.astype(np.float32)
    num = cv2.GaussianBlur(values * weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    have = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    could = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    out = np.zeros_like(values)
    np.divide(num, have, out=out, where=have > 1e-3)
    share = np.zeros_like(have)
    np.divide(have, could, out=share, where=could > 1e-3)
    out *= np.sqrt(np.clip(share, 0.0, 1.0, out=share), out=share)
    return out


def _box_mean(values: np.ndarray, weight: np.ndarray, size: int) -> np.ndarray:
    """Box mean over ``size`` px that ignores pixels of weight 0 (cost independent of the size)."""
    num = cv2.blur(values * weight, (size, size), borderType=cv2.BORDER_REFLECT)
    den = cv2.blur(weight, (size, size), borderType=cv2.BORDER_REFLECT)
    out = np.zeros_like(values)
    np.divide(num, den, out=out, where=den > 1e-3)
    return out


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of every row ignoring NaN (np.nanmedian along an axis is many times slower)."""
    ordered = np.sort(values, axis=1)  # NaN sort to the end
    count = np.isfinite(values).sum(axis=1)
    rows = np.arange(values.shape[0])
    low = ordered[rows, np.maximum((count - 1) // 2, 0)]
    high = ordered[rows, np.maximum(count // 2, 0)]
    return np.where(count > 0, 0.5 * (low + high), np.nan)


def _binned_mean(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.bincount(keys, weights=values, minlength=size)[:size]
    counts = np.bincount(keys, minlength=size)[:size].astype(np.float64)
    means = np.full(size, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means, counts


def _components(mask: np.ndarray, values: np.ndarray, extreme: np.ufunc) -> tuple[np.ndarray, np.ndarray]:
    """Per 8-connected component of ``mask``: the extreme (np.minimum / np.maximum) of ``values``, area.

    The labelling runs on the mask's bounding box only (no component leaves it): the pits and
    droplets are small and few, the frame is not.
    """
    x, y, width, height = cv2.boundingRect(mask.view(np.uint8))
    if width == 0 or height == 0:
        return np.zeros(0), np.zeros(0, np.int32)
    inside = mask[y : y + height, x : x + width]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inside.view(np.uint8), connectivity=8)
    extremes = np.zeros(count)
    extreme.at(extremes, labels[inside], values[y : y + height, x : x + width][inside])
    return extremes[1:], stats[1:, cv2.CC_STAT_AREA]


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True in a 1-D boolean array."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


class RuleDetector:
    """Measures a weld in one RGB-D pair and classifies it; callable, stateless between calls."""

    def __init__(
        self, config: RuleConfig | None = None, class_names: Sequence[str] = DEFAULT_CLASSES
    ) -> None:
        self.config = config or RuleConfig()
        self.class_names = check_class_list(class_names)
        self._grid_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ public
    def __call__(
        self,
        rgb: np.ndarray | None,
        depth_m: np.ndarray,
        fx: float | None = None,
        fy: float | None = None,
        cx: float | None = None,
        cy: float | None = None,
    ) -> RuleResult:
        """Judge one pair. ``rgb`` HxWx3 uint8 (or None), ``depth_m`` HxW float metres (0/NaN = no data).

        ``fx, fy, cx, cy`` are the intrinsics in pixels of these arrays (from the camera_info; by
        default the configured focal length scaled to the width and the principal point at the
        centre). Raises ImageFormatError for arrays of the wrong shape or dtype, IntrinsicsError for
        intrinsics that are not positive finite numbers; any other odd frame gets a low-confidence
        result with ``reason`` set.
        """
        depth = self._check_inputs(rgb, depth_m)
        height, width = depth.shape
        cfg = self.config
        scale = max(width, 1) / cfg.default_width_px
        fx = cfg.default_fx_px * scale if fx is None else fx
        fy = fx if fy is None else fy
        cx = (width - 1) / 2.0 if cx is None else cx
        cy = (height - 1) / 2.0 if cy is None else cy
        for name, value in (('fx', fx), ('fy', fy), ('cx', cx), ('cy', cy)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise IntrinsicsError(f'{name} must be a finite number of pixels, got {value!r}')
        if fx <= 0 or fy <= 0:
            raise IntrinsicsError(f'focal lengths must be positive pixels, got fx={fx}, fy={fy}')
        return self._judge(depth, float(fx), float(fy), float(cx), float(cy))

    # ------------------------------------------------------------------ input
    @staticmethod
    def _check_inputs(rgb: np.ndarray | None, depth_m: np.ndarray) -> np.ndarray:
        if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2:
            shape = getattr(depth_m, 'shape', type(depth_m).__name__)
            raise ImageFormatError(f'depth must be an HxW array of metres, got {shape}')
        if depth_m.dtype.kind != 'f':
            raise ImageFormatError(
                f'depth must be float metres (float32), got {depth_m.dtype}; convert millimetre images '
                'with weld_core.images.depth_m_from_msg'
            )
        if rgb is not None:
            if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                shape = getattr(rgb, 'shape', type(rgb).__name__)
                dtype = getattr(rgb, 'dtype', '')
                raise ImageFormatError(f'rgb must be an HxWx3 uint8 array, got {shape} {dtype}')
            if rgb.shape[:2] != depth_m.shape:
                raise ImageFormatError(
                    f'rgb {rgb.shape[1]}x{rgb.shape[0]} and depth {depth_m.shape[1]}x{depth_m.shape[0]} '
                    'differ in size; register the depth to the colour image'
                )
        return depth_m

    # ------------------------------------------------------------------ results
    def _result(
        self, evidence: dict[str, float], measurements: dict[str, float], reason: str = ''
    ) -> RuleResult:
        raw: dict[str, float] = dict(evidence)
        raw[GOOD_CLASS] = float(np.prod([1.0 - value for value in evidence.values()]))
        values = np.array([raw.get(name, 0.0) for name in self.class_names], dtype=np.float64)
        if reason or values.sum() <= 0:
            # nothing to judge by: no class is preferred, the caller sees it in confidence and reason
            values = np.ones(len(self.class_names))
        scores = values / values.sum()
        best = int(np.argmax(scores))
        measurements = {key: float(value) for key, value in measurements.items()}
        return RuleResult(
            label=self.class_names[best],
            confidence=float(scores[best]),
            scores=tuple(float(score) for score in scores),
            class_names=self.class_names,
            measurements=measurements,
            evidence={key: float(value) for key, value in evidence.items()},
            reason=reason,
        )

    # ------------------------------------------------------------------ pipeline
    def _grid(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        key = (height, width)
        if key not in self._grid_cache:
            ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
            self._grid_cache = {key: (xs, ys)}
        return self._grid_cache[key]

    def _working_depth(
        self, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float
    ) -> tuple[np.ndarray, float, float, float, float, int]:
        """Depth in metres as float32 with NaN for no data, averaged down to the working width."""
        factor = max(1, round(depth.shape[1] / self.config.work_width_px))
        if factor == 1 or depth.shape[0] < 2 * factor:
            z = depth.astype(np.float32, copy=True)
            with np.errstate(invalid='ignore'):
                z[~(np.isfinite(z) & (z > 0))] = np.nan
            return z, fx, fy, cx, cy, 1
        rows, cols = (depth.shape[0] // factor) * factor, (depth.shape[1] // factor) * factor
        # block means over the pixels with depth: an area resize of the depth with 0 for no data,
        # divided by that of the valid mask (OpenCV: a tenth of the time of numpy's 4-D reductions)
        masked = cv2.threshold(np.asarray(depth[:rows, :cols], np.float32), 0.0, 0.0, cv2.THRESH_TOZERO)[1]
        cv2.patchNaNs(masked, 0.0)
        cv2.threshold(masked, _FLOAT32_MAX, 0.0, cv2.THRESH_TOZERO_INV, dst=masked)  # inf -> 0
        valid = cv2.threshold(masked, 0.0, 1.0, cv2.THRESH_BINARY)[1]
        size = (cols // factor, rows // factor)
        sums = cv2.resize(masked, size, interpolation=cv2.INTER_AREA)
        counts = cv2.resize(valid, size, interpolation=cv2.INTER_AREA)
        z = np.full(sums.shape, np.nan, dtype=np.float32)
        np.divide(sums, counts, out=z, where=counts > 0)
        fx, fy = fx / factor, fy / factor
        cx, cy = (cx + 0.5) / factor - 0.5, (cy + 0.5) / factor - 0.5
        return z, fx, fy, cx, cy, factor

    def _fit_plane(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray, fx: float, fy: float, iterations: int = 4
    ) -> tuple[_Plane, float] | None:
        """Robust plane through points (x, y centred pixels, z metres); returns it and the noise in mm."""
        cfg_points = 2000  # plenty for three parameters; the medians dominate the cost
        if z.size < 20:
            return None
        if z.size > cfg_points:
            step = z.size // cfg_points + 1
            x, y, z = x[::step], y[::step], z[::step]
        x, y, z = x.astype(np.float64), y.astype(np.float64), z.astype(np.float64)
        inv = 1.0 / z
        keep = np.ones(z.size, dtype=bool)
        plane: _Plane | None = None
        noise_mm = 0.0
        for _ in range(iterations):
            if np.count_nonzero(keep) < 10:
                break
            coeffs = least_squares_3(x, y, inv, keep)
            plane = _Plane(float(coeffs[0]), float(coeffs[1]), float(coeffs[2]), fx, fy)
            inverse_depth = coeffs[0] * x + coeffs[1] * y + coeffs[2]
            heights = (1.0 - z * inverse_depth) * plane.inv_normal_length * 1000.0
            kept = heights[keep]
            centre = median(kept)
            kept -= centre
            noise_mm = 1.4826 * median(np.abs(kept, out=kept))
            keep = np.abs(heights) < max(2.5 * noise_mm, self.config.plate_inlier_mm)
        if plane is None:
            return None
        return plane, noise_mm

    def _judge(self, depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> RuleResult:
        cfg = self.config
        evidence = dict.fromkeys(DEFECT_CLASSES, 0.0)
        z, fx, fy, cx, cy, downsample = self._working_depth(depth, fx, fy, cx, cy)
        rows, cols = z.shape
        valid = np.isfinite(z)
        valid_fraction = float(valid.mean()) if z.size else 0.0
        measurements: dict[str, float] = {'valid_depth_fraction': valid_fraction, 'downsample': downsample}
        if rows < 16 or cols < 16:
            return self._result(evidence, measurements, f'image too small to judge ({cols}x{rows} px)')
        if valid_fraction < cfg.min_valid_fraction:
            return self._result(
                evidence, measurements, f'too little valid depth ({100 * valid_fraction:.0f} % of pixels)'
            )
        xs, ys = self._grid(rows, cols)
        xc = xs - np.float32(cx)
        yc = ys - np.float32(cy)

        # the plate planes are fitted on a sparse grid: three parameters need far fewer pixels
        sparse = (slice(None, None, _PLANE_STRIDE), slice(None, None, _PLANE_STRIDE))
        xs_sparse, ys_sparse, z_sparse, valid_sparse = xc[sparse], yc[sparse], z[sparse], valid[sparse]
        fitted = self._fit_plane(
            xs_sparse[valid_sparse], ys_sparse[valid_sparse], z_sparse[valid_sparse], fx, fy
        )
        if fitted is None:
            return self._result(evidence, measurements, 'plate plane could not be fitted')
        plate, noise_mm = fitted
        plate_z_mm = 1000.0 / float(plate.inverse_depth(np.float32(0), np.float32(0)))
        if not math.isfinite(plate_z_mm) or plate_z_mm <= 0:
            return self._result(evidence, measurements, 'plate plane lies behind the camera')
        mm_per_px = plate_z_mm / math.sqrt(fx * fy)
        measurements.update(
            depth_noise_mm=noise_mm,
            plate_distance_mm=plate_z_mm,
            plate_tilt_deg=plate.tilt_deg,
            mm_per_px=mm_per_px,
        )
        zf = np.where(valid, z, 0).astype(np.float32)
        weight = valid.astype(np.float32)
        heights = self._heights(plate, zf, xc, yc)

        seam = self._find_seam(heights, weight, xc, yc, mm_per_px)
        if seam is None:
            return self._result(evidence, measurements, 'no bead or joint in view')
        along, offset = seam

        profile = self._profile(heights, valid, offset, mm_per_px)
        if profile is None:
            return self._result(evidence, measurements, 'bead profile could not be measured')
        left_toe, right_toe, _ = profile

        # two plates: refit each side of the seam on its own and blend them across the bead
        margin = cfg.toe_zone_mm / mm_per_px + 2.0
        planes = []
        offset_sparse = offset[sparse]
        for side_mask in (offset_sparse < left_toe - margin, offset_sparse > right_toe + margin):
            side_mask &= valid_sparse
            side = self._fit_plane(
                xs_sparse[side_mask], ys_sparse[side_mask], z_sparse[side_mask], fx, fy, iterations=2
            )
            planes.append(side[0] if side is not None and side_mask.sum() > 0.03 * side_mask.size else plate)
        left_heights = self._heights(planes[0], zf, xc, yc)
        right_heights = self._heights(planes[1], zf, xc, yc)
        right_weight = np.clip((offset - left_toe) / max(right_toe - left_toe, 1.0), 0.0, 1.0)
        heights = left_heights + (right_heights - left_heights) * right_weight
        centre = np.abs(offset) < 1.0
        step = right_heights[centre & valid] - left_heights[centre & valid]
        measurements['plate_step_mm'] = float(np.median(step)) if step.size else 0.0

        profile = self._profile(heights, valid, offset, mm_per_px)
        if profile is None:
            return self._result(evidence, measurements, 'bead profile could not be measured')
        left_toe, right_toe, crown_mm = profile
        half_width = (right_toe - left_toe) / 2.0
        measurements.update(
            bead_width_mm=(right_toe - left_toe) * mm_per_px,
            bead_height_mm=crown_mm,
            seam_offset_mm=float((right_toe + left_toe) / 2.0 * mm_per_px),
        )
        heights = np.where(valid, heights, np.nan).astype(np.float32)

        reach = int(max(abs(left_toe), abs(right_toe)) + 2.0 * cfg.toe_zone_mm / mm_per_px + 4)
        step_px = max(4.0, cfg.seam_step_mm / mm_per_px)
        grid = self._seam_grid(heights, valid, along, offset, reach, step_px)
        # share of the pixels around the seam that have depth: dropout leaves noisier cell means
        around = int(np.count_nonzero(np.abs(offset) <= reach))
        measurements['seam_depth_coverage'] = np.count_nonzero(grid.near) / around if around else 1.0
        centre = (left_toe + right_toe) / 2.0
        measurements.update(self._pits(heights, grid, along, offset, half_width, centre, noise_mm))
        measurements.update(self._fill(heights, valid, along, offset, half_width, crown_mm, mm_per_px))
        measurements.update(self._grooves(grid, left_toe, right_toe, mm_per_px))
        measurements.update(self._droplets(heights, valid, offset, left_toe, right_toe, mm_per_px, noise_mm))

        evidence['porosity'] = _logistic(
            measurements['max_pit_depth_mm'], measurements['pit_threshold_mm'], cfg.pit_softness_mm
        )
        evidence['spatter'] = _logistic(
            measurements['spatter_count'], cfg.spatter_min_count - 0.5, cfg.spatter_softness
        )
        evidence['gap'] = _logistic(
            measurements['missing_fill_length_mm'], cfg.gap_length_mm, cfg.gap_softness_mm
        )
        # the groove measure is a minimum over many noisy cell means: its level on a clean weld follows
        # the depth noise and, where dropout thins the cells, the noise of fewer pixels
        cell_noise_mm = noise_mm / math.sqrt(max(measurements['seam_depth_coverage'], 0.1))
        groove_threshold = max(cfg.undercut_depth_mm, cfg.groove_noise_factor * cell_noise_mm)
        measurements['groove_threshold_mm'] = groove_threshold
        evidence['undercut'] = _logistic(
            measurements['toe_groove_depth_mm'], groove_threshold, cfg.undercut_softness_mm
        )
        # an unfilled stretch shows the open joint: deep 'pits' on the crown and a sunken profile at
        # the toes are the gap itself, not porosity or undercut (where the site has no 'gap' class,
        # they are left to report the frame as defective)
        if 'gap' in self.class_names:
            for name in ('porosity', 'undercut'):
                evidence[name] *= 1.0 - evidence['gap']
        return self._result(evidence, measurements)

    @staticmethod
    def _heights(plane: _Plane, zf: np.ndarray, xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
        """Perpendicular height above the plane in mm (positive towards the camera)."""
        inv_plane = plane.inverse_depth(xc, yc)
        return ((1.0 - zf * inv_plane) * (plane.inv_normal_length * 1000.0)).astype(np.float32)

    def _find_seam(
        self, heights: np.ndarray, weight: np.ndarray, xc: np.ndarray, yc: np.ndarray, mm_per_px: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Seam coordinates of every pixel: (position along the seam, signed offset from its centre) in px."""
        cfg = self.config
        # half resolution is plenty for a direction and a quadratic through the seam
        rows, cols = heights.shape[0] // 2, heights.shape[1] // 2
        weight_half = cv2.resize(weight[: 2 * rows, : 2 * cols], (cols, rows), interpolation=cv2.INTER_AREA)
        heights_half = cv2.resize(
            (heights * weight)[: 2 * rows, : 2 * cols], (cols, rows), interpolation=cv2.INTER_AREA
        )
        smooth = _blur(heights_half, weight_half, 0.75)
        strength = np.abs(smooth) * (weight_half > 0.5)
        seam = strength > cfg.seam_min_height_mm
        if seam.sum() < cfg.min_seam_fraction * seam.size:
            return None
        w = strength[seam].astype(np.float64)
        # a half-resolution pixel covers two full-resolution ones: its centre is between them
        px = xc[: 2 * rows : 2, : 2 * cols : 2][seam].astype(np.float64) + 0.5
        py = yc[: 2 * rows : 2, : 2 * cols : 2][seam].astype(np.float64) + 0.5
        mx, my = np.average(px, weights=w), np.average(py, weights=w)
        cov = np.cov(np.stack([px - mx, py - my]), aweights=w)
        _eigvals, eigvecs = np.linalg.eigh(cov)
        direction = eigvecs[:, 1]
        cos_a, sin_a = float(direction[0]), float(direction[1])
        along = (xc - mx) * cos_a + (yc - my) * sin_a
        across = -(xc - mx) * sin_a + (yc - my) * cos_a
        # centre line: robust quadratic across(along) through the seam pixels, refined twice
        t = (px - mx) * cos_a + (py - my) * sin_a
        n = -(px - mx) * sin_a + (py - my) * cos_a
        keep = np.ones(t.size, dtype=bool)
        band_px = max(6.0, 4.0 / mm_per_px)
        # the quadratic in t / scale (|.| <= 1): its normal equations stay well conditioned
        scale = max(float(np.abs(t).max()), 1.0)
        u = t / scale
        uu = u * u
        coeffs = np.zeros(3)
        for _ in range(3):
            if np.count_nonzero(keep) < 10:
                return None
            coeffs = least_squares_3(uu, u, n, w * keep)
            keep = np.abs(n - (coeffs[0] * uu + coeffs[1] * u + coeffs[2])) < band_px
        coeffs = coeffs / np.array([scale * scale, scale, 1.0])
        centre = coeffs[0] * along * along + coeffs[1] * along + coeffs[2]
        slope = 2.0 * coeffs[0] * along + coeffs[1]
        offset = ((across - centre) / np.sqrt(1.0 + slope * slope)).astype(np.float32)
        return along.astype(np.float32), offset

    def _profile(
        self, heights: np.ndarray, valid: np.ndarray, offset: np.ndarray, mm_per_px: float
    ) -> tuple[float, float, float] | None:
        """Toe offsets (px, left < 0 < right) and crown height (mm) of the mean cross profile."""
        reach = int(min(max(heights.shape) / 2, 12.0 / mm_per_px))
        keys = np.rint(offset[valid]).astype(np.int64) + reach
        inside = (keys >= 0) & (keys <= 2 * reach)
        means, counts = _binned_mean(keys[inside], heights[valid][inside].astype(np.float64), 2 * reach + 1)
        means[counts < 5] = np.nan
        if np.isnan(means[reach]):
            return None
        smooth = np.convolve(np.nan_to_num(means), np.ones(3) / 3, mode='same')
        centre_zone = slice(reach - 3, reach + 4)
        crown = float(np.nanmax(smooth[centre_zone]))
        level = max(self.config.toe_fraction * crown, 0.1)

        def toe(direction: int) -> float:
            position = reach
            while 0 < position < 2 * reach and not smooth[position] < level:
                position += direction
            return float(position - reach)

        left, right = toe(-1), toe(+1)
        if right - left < 2:
            left, right = -1.0, 1.0
        return left, right, crown

    def _seam_grid(
        self,
        heights: np.ndarray,
        valid: np.ndarray,
        along: np.ndarray,
        offset: np.ndarray,
        reach: int,
        step_px: float,
    ) -> _SeamGrid:
        """Mean height per cell of (stretch along the seam, 1 px of offset) around the centre line.

        Pixels far below their cell (pits) are left out of a second pass so a pit does not lower its
        own reference.
        """
        near = valid & (np.abs(offset) <= reach)
        t_key = np.floor((along[near] - along.min()) / step_px).astype(np.int64)
        d_key = np.rint(offset[near]).astype(np.int64) + reach
        n_t = int(t_key.max()) + 1 if t_key.size else 1
        width = 2 * reach + 1
        keys = t_key * width + d_key
        values = heights[near].astype(np.float64)
        means, counts = _binned_mean(keys, values, n_t * width)
        if values.size:
            spread = float(np.nanmedian(np.abs(values - means[keys]))) * 1.4826 + 1e-3
            kept = values - means[keys] > -3.0 * spread
            means, counts = _binned_mean(keys[kept], values[kept], n_t * width)
        means[counts < 3] = np.nan
        return _SeamGrid(near, keys, means.reshape(n_t, width), counts.reshape(n_t, width), reach)

    def _pits(
        self,
        heights: np.ndarray,
        grid: _SeamGrid,
        along: np.ndarray,
        offset: np.ndarray,
        half_width: float,
        centre: float,
        noise_mm: float,
    ) -> dict[str, float]:
        cfg = self.config
        # a pore as long as one stretch would be its own reference: the reference of a stretch is the
        # median of it and its neighbours along the seam
        half = _PIT_REFERENCE_STRETCHES // 2
        padded = np.pad(grid.means, ((half, half), (0, 0)), constant_values=np.nan)
        windows = np.stack([padded[i : i + grid.means.shape[0]] for i in range(2 * half + 1)], axis=-1)
        reference = _nanmedian_rows(windows.reshape(-1, 2 * half + 1))
        local = np.full(heights.shape, np.nan, dtype=np.float32)
        local[grid.near] = reference[grid.keys]
        band = (np.abs(offset - centre) <= cfg.crown_band_fraction * half_width) & _interior(offset.shape)
        crown = grid.near & band & np.isfinite(local)
        if crown.sum() < 20:
            return {'pit_count': 0.0, 'max_pit_depth_mm': 0.0, 'pit_threshold_mm': cfg.pit_depth_mm}
        residual = np.where(crown, heights - local, 0).astype(np.float32)
        # weld ripples are troughs across the whole crown at one position along the seam; a pore is
        # local in both directions, so what the crown shares at one position is removed
        t_key = np.floor(along[crown] - along[crown].min()).astype(np.int64)
        values = residual[crown].astype(np.float64)
        size = int(t_key.max()) + 1
        ripple, _ = _binned_mean(t_key, values, size)
        # second pass without the pit pixels, or a pore would lift its own reference
        spread = 1.4826 * float(np.median(np.abs(values - ripple[t_key]))) + 1e-3
        kept = values - ripple[t_key] > -2.0 * spread
        ripple_kept, counts = _binned_mean(t_key[kept], values[kept], size)
        ripple = np.where(counts >= 3, ripple_kept, ripple)
        residual[crown] -= ripple[t_key].astype(np.float32)
        smooth = _supported_blur(residual, crown, band, cfg.pit_smoothing_px)
        threshold = max(cfg.pit_depth_mm, cfg.pit_noise_factor * noise_mm)
        deep = (smooth < -0.5 * threshold) & crown
        lowest, _areas = _components(deep, smooth, np.minimum)
        depths = -lowest
        pits = int((depths >= threshold).sum())
        deepest = float(depths.max()) if depths.size else 0.0
        return {
            'pit_count': float(pits),
            'max_pit_depth_mm': deepest,
            'pit_threshold_mm': threshold,
        }

    def _fill(
        self,
        heights: np.ndarray,
        valid: np.ndarray,
        along: np.ndarray,
        offset: np.ndarray,
        half_width: float,
        crown_mm: float,
        mm_per_px: float,
    ) -> dict[str, float]:
        cfg = self.config
        step_px = max(3.0, 1.0 / mm_per_px)
        band = valid & (np.abs(offset) <= max(2.0, 0.5 * half_width))
        keys = np.floor((along[band] - along[band].min()) / step_px).astype(np.int64)
        if keys.size == 0:
            return {'min_fill_height_mm': 0.0, 'missing_fill_length_mm': 0.0, 'nominal_fill_height_mm': 0.0}
        means, counts = _binned_mean(keys, heights[band].astype(np.float64), int(keys.max()) + 1)
        means[counts < 3] = np.nan
        filled = np.isfinite(means)
        if filled.sum() < 3:
            return {'min_fill_height_mm': 0.0, 'missing_fill_length_mm': 0.0, 'nominal_fill_height_mm': 0.0}
        fill = means[filled]
        nominal = max(float(np.percentile(fill, 80)), crown_mm * 0.5, 0.2)
        low = fill < cfg.fill_fraction * nominal
        longest = max((stop - start for start, stop in _runs(low)), default=0)
        return {
            'min_fill_height_mm': float(fill.min()),
            'missing_fill_length_mm': longest * step_px * mm_per_px,
            'nominal_fill_height_mm': nominal,
        }

    def _grooves(
        self, grid: _SeamGrid, left_toe: float, right_toe: float, mm_per_px: float
    ) -> dict[str, float]:
        """Depth of the deepest toe groove below the plate beside it, over a few mm of seam."""
        cfg = self.config
        zone = cfg.toe_zone_mm / mm_per_px
        depths = []
        for toe, side in ((left_toe, -1), (right_toe, +1)):
            inner = round(toe - side * 2.0) + grid.reach
            outer = round(toe + side * zone) + grid.reach
            far = round(toe + side * 2.0 * zone) + grid.reach
            lo, hi = sorted((inner, outer))
            ref_lo, ref_hi = sorted((outer + side, far))
            lo, ref_lo = max(lo, 0), max(ref_lo, 0)
            cells = grid.means[:, lo : hi + 1]
            reference = grid.means[:, ref_lo : ref_hi + 1]
            usable = np.isfinite(cells).sum(axis=1) >= 2
            usable &= np.isfinite(reference).sum(axis=1) >= 2
            if usable.sum() < 3:
                depths.append(0.0)
                continue
            groove = np.full(cells.shape[0], np.nan)
            groove[usable] = _nanmedian_rows(reference[usable]) - np.nanmin(cells[usable], axis=1)
            # a groove has length: average over neighbouring stretches so one noisy cell is not one
            run = np.convolve(np.nan_to_num(groove), np.ones(3), mode='same')
            runs = np.convolve(np.isfinite(groove).astype(float), np.ones(3), mode='same')
            with np.errstate(invalid='ignore', divide='ignore'):
                smooth = np.where(runs >= 2, run / runs, np.nan)
            depths.append(float(np.nanmax(smooth)) if np.isfinite(smooth).any() else 0.0)
        return {
            'toe_groove_depth_mm': max(max(depths), 0.0),
            'toe_groove_left_mm': depths[0],
            'toe_groove_right_mm': depths[1],
        }

    def _droplets(
        self,
        heights: np.ndarray,
        valid: np.ndarray,
        offset: np.ndarray,
        left_toe: float,
        right_toe: float,
        mm_per_px: float,
        noise_mm: float,
    ) -> dict[str, float]:
        cfg = self.config
        clearance = cfg.droplet_toe_clearance_mm / mm_per_px
        region = ((offset < left_toe - clearance) | (offset > right_toe + clearance)) & _interior(
            offset.shape
        )
        plate = valid & region
        weight = plate.astype(np.float32)
        values = np.where(plate, heights, 0).astype(np.float32)
        fine = _supported_blur(values, plate, region, cfg.droplet_smoothing_px)
        box_px = max(7, round(2.5 * cfg.droplet_max_diameter_mm / mm_per_px))
        threshold = max(cfg.droplet_height_mm, cfg.droplet_noise_factor * noise_mm)
        background = _box_mean(values, weight, box_px)
        # a groove or scratch in the plate lowers the mean around it, and the plate beside it would
        # stand out as a droplet: the background is taken again without what lies far from it
        # (both ways, so noise does not bias it)
        outlying = np.abs(values - background) > 3.0 * noise_mm
        background = _box_mean(values, weight * ~outlying, box_px)
        relief = np.where(plate, fine - background, 0)
        raised = (relief > 0.5 * threshold) & plate
        peaks, areas = _components(raised, relief, np.maximum)
        min_area = cfg.droplet_min_area_mm2 / (mm_per_px * mm_per_px)
        max_area = (cfg.droplet_max_diameter_mm / mm_per_px) ** 2
        blobs = (areas >= min_area) & (areas <= max_area)
        ranked = np.sort(peaks[blobs])[::-1]
        droplets = int((ranked >= threshold).sum())
        highest = float(peaks[blobs].max()) if blobs.any() else 0.0
        return {
            'spatter_count': float(droplets),
            'max_droplet_height_mm': highest,
            'droplet_threshold_mm': threshold,
            'second_droplet_height_mm': float(ranked[1]) if ranked.size > 1 else 0.0,
        }
