"""Measurements on simulator output, made the way a model would see it: from the depth image alone.

Ground truth (seam geometry, defect places) only says WHERE to look; what is found there comes
from ``depth_m``.
"""

import numpy as np
import pytest

from weld_camera.sim import SimFrame


def seam_coordinates(frame: SimFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (u along the seam, v across it from the bead's centre line) in pixels."""
    height, width = frame.depth_m.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = to_seam(frame, xs, ys)
    return u, v - _centre_offset(frame, u)


def _centre_offset(frame: SimFrame, u: np.ndarray | float) -> np.ndarray:
    """How far the bead's centre line (meander, bend) lies off the straight seam line at ``u``."""
    centre = np.asarray(frame.truth.get('seam_centre_px', np.zeros((0, 2))), np.float64)
    if len(centre) < 2:
        return np.zeros_like(np.asarray(u, np.float64))
    centre_u, centre_v = to_seam(frame, centre[:, 0], centre[:, 1])
    order = np.argsort(centre_u)
    return np.interp(u, centre_u[order], centre_v[order])


def across_centre(frame: SimFrame, x: float, y: float) -> float:
    """Signed distance (px) of an image point from the bead's centre line."""
    u, v = to_seam(frame, x, y)
    return float(v - _centre_offset(frame, u))


def to_seam(frame: SimFrame, x: np.ndarray | float, y: np.ndarray | float) -> tuple:
    """Image point(s) -> (u along, v across) the straight seam line through the seam point, in pixels."""
    px, py = frame.truth['seam_point_px']
    angle = np.radians(frame.truth['seam_angle_deg'])
    c, s = np.cos(angle), np.sin(angle)
    return (x - px) * c + (y - py) * s, -(x - px) * s + (y - py) * c


def relief_mm(frame: SimFrame) -> np.ndarray:
    """Height above the plate (mm, + towards the camera) from depth; NaN where there is no data.

    Each side of the joint gets its own quadratic plate surface, fitted to the depth far from the
    seam (plates may sit at different heights).
    """
    depth_mm = frame.depth_m.astype(np.float64) * 1000.0
    valid = depth_mm > 0
    _, v = seam_coordinates(frame)
    mm_per_px = frame.truth['mm_per_px']
    far_px = (1.3 * frame.truth['bead_half_width_mm'] + 11.0) / mm_per_px
    height, width = depth_mm.shape
    x = np.arange(width, dtype=np.float64)[None, :] / width
    y = np.arange(height, dtype=np.float64)[:, None] / height
    terms = (np.ones_like(x * y), x, y, x * x, x * y, y * y)
    step = 3  # a sparse grid is plenty for six coefficients and keeps the fit fast
    sparse = np.stack([np.broadcast_to(t, (height, width))[::step, ::step].ravel() for t in terms], axis=1)
    relief = np.full_like(depth_mm, np.nan)
    for side in (-1, 1):
        fit = valid & (side * v > far_px)
        if fit.sum() < 200:  # the seam runs close to an image edge: one surface for both plates
            fit = valid & (np.abs(v) > far_px)
        use = fit[::step, ::step].ravel()
        coefficients, *_ = np.linalg.lstsq(sparse[use], depth_mm[::step, ::step].ravel()[use], rcond=None)
        plate = sum(c * t for c, t in zip(coefficients, terms, strict=True))
        this_side = (side * v >= 0) & valid
        relief[this_side] = plate[this_side] - depth_mm[this_side]
    return relief


def median_in(relief: np.ndarray, mask: np.ndarray) -> float:
    values = relief[mask & np.isfinite(relief)]
    return float(np.median(values)) if values.size else float('nan')


def test_relief_recovers_a_known_bead_on_a_tilted_plate() -> None:
    """The measuring helpers themselves: a hand-made depth image with a 2 mm ridge on a tilted plate."""
    height, width, mm_per_px = 240, 320, 0.3
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    plate_mm = 100.0 + 0.05 * (xs - 160) * mm_per_px - 0.03 * (ys - 120) * mm_per_px
    v_px = ys - 120.0  # seam along +x through the image centre
    ridge_mm = 2.0 * np.clip(1 - (v_px * mm_per_px / 4.0) ** 2, 0, None)
    depth_m = ((plate_mm - ridge_mm) / 1000.0).astype(np.float32)
    depth_m[::17, ::13] = 0.0  # dropout
    truth = {
        'seam_point_px': (160.0, 120.0),
        'seam_angle_deg': 0.0,
        'mm_per_px': mm_per_px,
        'bead_half_width_mm': 4.0,
    }
    frame = SimFrame(
        index=0,
        rgb=np.zeros((height, width, 3), np.uint8),
        depth_m=depth_m,
        label='good',
        severity=0.0,
        camera_info=None,
        height_mm=np.zeros_like(depth_m),
        truth=truth,
    )
    relief = relief_mm(frame)
    assert np.isnan(relief[0, 0])
    assert median_in(relief, np.abs(v_px) < 1) == pytest.approx(2.0, abs=0.01)
    assert median_in(relief, np.abs(v_px) > 60) == pytest.approx(0.0, abs=0.01)
    assert to_seam(frame, 170.0, 110.0) == pytest.approx((10.0, -10.0))
