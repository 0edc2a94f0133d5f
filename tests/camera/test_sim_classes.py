"""Each defect class changes the depth image the way that defect changes a real weld.

Every check renders the defect frame and the good frame of the same index (same plate, bead, light
and nuisances) and measures both at the places the ground truth names: a class whose rendering
broke would look like its good twin and fail.
"""

import numpy as np
import pytest

from tests.camera.test_sim_measure import across_centre, median_in, relief_mm, seam_coordinates, to_seam
from weld_camera.sim import SimConfig, SimFrame, WeldSimulator

INDICES = (0, 1, 2)


@pytest.fixture(scope='module')
def sim() -> WeldSimulator:
    return WeldSimulator(SimConfig(width=640, height=480, seed=11))


def _twins(sim: WeldSimulator, index: int, label: str, severity: float) -> tuple[SimFrame, SimFrame]:
    return sim.render(index, label=label, severity=severity), sim.render(index, label='good')


def _disc(shape: tuple[int, ...], x: float, y: float, radius: float) -> np.ndarray:
    ys, xs = np.ogrid[0 : shape[0], 0 : shape[1]]
    return (xs - x) ** 2 + (ys - y) ** 2 <= radius**2


@pytest.mark.parametrize('index', INDICES)
def test_porosity_is_pits_in_the_crown(sim: WeldSimulator, index: int) -> None:
    porous, good = _twins(sim, index, 'porosity', 0.9)
    pits = [d for d in porous.truth['defects'] if d['kind'] == 'pit']
    assert len(pits) >= 3
    relief, good_relief = relief_mm(porous), relief_mm(good)
    half_width_px = porous.truth['bead_half_width_mm'] / porous.truth['mm_per_px']
    u, v = seam_coordinates(porous)
    other_pits = np.zeros(relief.shape, bool)
    for pit in pits:
        other_pits |= _disc(relief.shape, pit['x_px'], pit['y_px'], 1.5 * pit['radius_px'])
    found = 0
    for pit in pits:
        pit_u, _ = to_seam(porous, pit['x_px'], pit['y_px'])
        pit_v = across_centre(porous, pit['x_px'], pit['y_px'])
        assert abs(pit_v) < 0.6 * half_width_px  # on the crown, not the flank
        centre = _disc(relief.shape, pit['x_px'], pit['y_px'], max(1.0, 0.5 * pit['radius_px']))
        drop = median_in(good_relief, centre) - median_in(relief, centre)
        # a local depression: lower than the crown on the same line a few radii along the seam
        radius = pit['radius_px']
        along = (
            (np.abs(np.abs(u - pit_u) - 3.5 * radius) < radius) & (np.abs(v - pit_v) < radius) & ~other_pits
        )
        local = median_in(relief, along) - median_in(relief, centre)
        found += drop > 0.3 * pit['depth_mm'] and local > 0.15 * pit['depth_mm']
    assert found >= 0.7 * len(pits)


@pytest.mark.parametrize('index', INDICES)
def test_spatter_is_raised_droplets_beside_the_bead(sim: WeldSimulator, index: int) -> None:
    spattered, good = _twins(sim, index, 'spatter', 0.9)
    drops = [d for d in spattered.truth['defects'] if d['kind'] == 'droplet']
    assert len(drops) >= 8
    relief, good_relief = relief_mm(spattered), relief_mm(good)
    half_width_px = spattered.truth['bead_half_width_mm'] / spattered.truth['mm_per_px']
    raised = 0
    for drop in drops:
        v = across_centre(spattered, drop['x_px'], drop['y_px'])
        assert abs(v) > 0.9 * half_width_px  # beside the bead, not on it
        centre = _disc(relief.shape, drop['x_px'], drop['y_px'], max(1.0, 0.4 * drop['radius_px']))
        if not np.isfinite(median_in(relief, centre)):
            continue
        rise = median_in(relief, centre) - median_in(good_relief, centre)
        raised += rise > 0.3 * drop['height_mm']
    assert raised >= 0.6 * len(drops)


def _bead_heights(frame: SimFrame, relief: np.ndarray) -> tuple[float, float]:
    """Median crown height inside the gap segment's middle and well outside the segment."""
    (gap,) = [d for d in frame.truth['defects'] if d['kind'] == 'gap']
    u, v = seam_coordinates(frame)
    mm_per_px = frame.truth['mm_per_px']
    start, end = sorted((to_seam(frame, *gap['start_px'])[0], to_seam(frame, *gap['end_px'])[0]))
    middle, half = (start + end) / 2, (end - start) / 2
    crown = np.abs(v) < 0.2 * frame.truth['bead_half_width_mm'] / mm_per_px
    inside = crown & (np.abs(u - middle) < max(0.6 * half, 1.5 / mm_per_px))
    outside = crown & (np.abs(u - middle) > half + 6.0 / mm_per_px)
    return median_in(relief, inside), median_in(relief, outside)


@pytest.mark.parametrize('index', INDICES)
def test_gap_lowers_the_bead_in_a_segment(sim: WeldSimulator, index: int) -> None:
    obvious = sim.render(index, label='gap', severity=0.9)
    inside, outside = _bead_heights(obvious, relief_mm(obvious))
    assert inside < 0.25 * outside  # the bead is missing: the joint shows
    subtle = sim.render(index, label='gap', severity=0.1)
    inside, outside = _bead_heights(subtle, relief_mm(subtle))
    assert inside < 0.75 * outside  # thin bead, lower than elsewhere
    # the same segment of the good twin is as high as the rest
    good = sim.render(index, label='good')
    good_with_segment = SimFrame(**{**good.__dict__, 'truth': obvious.truth})
    inside, outside = _bead_heights(good_with_segment, relief_mm(good))
    assert inside > 0.8 * outside


def _toe_low(frame: SimFrame, truth: dict, side: int, relief: np.ndarray) -> float:
    """How far below the plate the toe dips along the undercut segment (mm, negative = below).

    The seam meanders, so the toe is looked for in each 4 mm slice of the segment: the lowest
    strip (0.2 mm or a pixel wide) across the toe region, mean over the slice; then the median
    over the slices.
    """
    u, v = seam_coordinates(frame)
    mm_per_px = frame.truth['mm_per_px']
    half_width_px = frame.truth['bead_half_width_mm'] / mm_per_px
    start, end = sorted((to_seam(frame, *truth['start_px'])[0], to_seam(frame, *truth['end_px'])[0]))
    middle, half = (start + end) / 2, (end - start) / 2
    across = side * v
    low, high = 0.6 * half_width_px, 1.5 * half_width_px + 2.0 / mm_per_px
    use = (np.abs(u - middle) < 0.7 * half) & (across > low) & (across < high) & np.isfinite(relief)
    slice_index = ((u[use] - (middle - 0.7 * half)) / (4.0 / mm_per_px)).astype(int)
    strip_index = ((across[use] - low) / max(1.0, 0.2 / mm_per_px)).astype(int)
    strips = strip_index.max() + 1
    key = slice_index * strips + strip_index
    cells = (slice_index.max() + 1) * strips
    sums = np.bincount(key, weights=relief[use], minlength=cells)
    counts = np.bincount(key, minlength=cells)
    means = np.where(counts >= 5, sums / np.maximum(counts, 1), np.inf).reshape(-1, strips)
    lows = means.min(axis=1)
    return float(np.median(lows[np.isfinite(lows)]))


@pytest.mark.parametrize('index', INDICES)
def test_undercut_is_a_groove_below_the_plate_at_a_toe(sim: WeldSimulator, index: int) -> None:
    cut, good = _twins(sim, index, 'undercut', 0.9)
    (truth,) = [d for d in cut.truth['defects'] if d['kind'] == 'undercut']
    groove = _toe_low(cut, truth, truth['side'], relief_mm(cut))
    plain = _toe_low(good, truth, truth['side'], relief_mm(good))
    assert groove < -0.3 * truth['depth_mm']  # below the plate surface (the sensor blurs narrow grooves)
    assert plain > -0.2  # a good toe meets the plate (give or take the sensor noise)
    assert groove < plain - 0.3 * truth['depth_mm']
