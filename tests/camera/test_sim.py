"""Weld-scene simulator: API, determinism, class mix, geometry and depth plausibility."""

import numpy as np
import pytest

from tests.camera.test_sim_measure import median_in, relief_mm, seam_coordinates
from weld_camera.sim import SimConfig, SimConfigError, SimFrame, WeldSimulator
from weld_core.classes import DEFAULT_CLASSES


@pytest.fixture(scope='module')
def small_sim() -> WeldSimulator:
    return WeldSimulator(SimConfig(width=320, height=240, seed=7))


def _same(a: SimFrame, b: SimFrame) -> bool:
    return (
        a.label == b.label
        and a.severity == b.severity
        and np.array_equal(a.rgb, b.rgb)
        and np.array_equal(a.depth_m, b.depth_m)
    )


@pytest.mark.parametrize(('width', 'height', 'fx'), [(320, 240, 300.0), (640, 480, 600.0)])
def test_shapes_dtypes_and_intrinsics(width: int, height: int, fx: float) -> None:
    frame = WeldSimulator(SimConfig(width=width, height=height, seed=1)).render(0)
    assert frame.rgb.shape == (height, width, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.shape == (height, width) and frame.depth_m.dtype == np.float32
    assert frame.label in DEFAULT_CLASSES and 0.0 <= frame.severity <= 1.0
    info = frame.camera_info
    assert (info.width, info.height, info.fx, info.fy, info.cx, info.cy) == (
        width,
        height,
        fx,
        fx,
        width / 2,
        height / 2,
    )
    assert info.k == (fx, 0.0, width / 2, 0.0, fx, height / 2, 0.0, 0.0, 1.0)
    # the pixel pitch follows the pinhole model: distance / fx
    assert frame.truth['mm_per_px'] == pytest.approx(frame.truth['distance_m'] * 1000 / fx)


def test_other_aspect_ratios_keep_square_pixels() -> None:
    frame = WeldSimulator(SimConfig(width=640, height=360, seed=1)).render(3)
    assert frame.rgb.shape == (360, 640, 3) and frame.depth_m.shape == (360, 640)
    assert frame.camera_info.fx == frame.camera_info.fy == 600.0
    assert (frame.camera_info.cx, frame.camera_info.cy) == (320.0, 180.0)


def test_same_seed_and_index_give_the_same_frame_in_any_order() -> None:
    config = SimConfig(width=320, height=240, seed=3)
    first, second = WeldSimulator(config), WeldSimulator(config)
    stream = [first.next() for _ in range(4)]
    assert [frame.index for frame in stream] == [0, 1, 2, 3]
    assert _same(second.render(2), stream[2])
    assert _same(second.render(0), stream[0])
    assert not np.array_equal(stream[0].rgb, stream[1].rgb)
    other_seed = WeldSimulator(SimConfig(width=320, height=240, seed=4)).render(2)
    assert not np.array_equal(other_seed.depth_m, stream[2].depth_m)


def test_forced_label_and_severity(small_sim: WeldSimulator) -> None:
    for label in DEFAULT_CLASSES:
        frame = small_sim.render(11, label=label)
        assert frame.label == label
        assert (frame.severity == 0.0) == (label == 'good')
    assert small_sim.render(11, label='gap', severity=0.25).severity == 0.25
    with pytest.raises(SimConfigError, match='unknown class'):
        small_sim.render(0, label='crack')
    with pytest.raises(SimConfigError, match='severity'):
        small_sim.render(0, label='gap', severity=1.5)
    with pytest.raises(SimConfigError, match='index'):
        small_sim.render(-1)


def test_forcing_a_label_keeps_the_scene(small_sim: WeldSimulator) -> None:
    good, porous = small_sim.render(5, label='good'), small_sim.render(5, label='porosity')
    assert good.truth['seam_angle_deg'] == porous.truth['seam_angle_deg']
    assert good.truth['distance_m'] == porous.truth['distance_m']
    changed = np.any(good.rgb != porous.rgb, axis=2)
    assert 0 < changed.mean() < 0.1  # only around the pores


def test_bad_config_is_rejected() -> None:
    with pytest.raises(SimConfigError, match='width'):
        SimConfig(width=8)
    with pytest.raises(SimConfigError, match='unknown class'):
        SimConfig(class_mix={'good': 1.0, 'crack': 1.0})
    with pytest.raises(SimConfigError, match='sum to 0'):
        SimConfig(class_mix={'good': 0.0})
    with pytest.raises(SimConfigError, match='>= 0'):
        SimConfig(class_mix={'good': -1.0, 'gap': 2.0})
    with pytest.raises(SimConfigError, match='distance'):
        SimConfig(distance_range_m=(0.2, 0.1))


def test_default_class_mix_statistics(small_sim: WeldSimulator) -> None:
    count = 3000
    labels = [small_sim.label_of(index) for index in range(count)]
    shares = {label: labels.count(label) / count for label in DEFAULT_CLASSES}
    # binomial sd at p = 0.3 and n = 3000 is 0.008; 0.035 is > 4 sd
    assert shares['good'] == pytest.approx(0.3, abs=0.035)
    for label in DEFAULT_CLASSES[1:]:
        assert shares[label] == pytest.approx(0.175, abs=0.035)
    # the stream renders exactly the labels label_of promises
    sim = WeldSimulator(SimConfig(width=64, height=48, seed=7))
    assert [sim.next().label for _ in range(40)] == labels[:40]


def test_custom_class_mix_is_followed() -> None:
    sim = WeldSimulator(SimConfig(width=64, height=48, seed=2, class_mix={'spatter': 3, 'gap': 1}))
    labels = [sim.label_of(index) for index in range(2000)]
    assert set(labels) == {'spatter', 'gap'}
    assert labels.count('spatter') / len(labels) == pytest.approx(0.75, abs=0.04)
    assert sim.config.mix['good'] == 0.0


def test_depth_is_physically_plausible(small_sim: WeldSimulator) -> None:
    dropouts, bead_ratios = [], []
    for index in range(16):
        frame = small_sim.render(index, label='good')
        depth = frame.depth_m
        valid = depth > 0
        assert np.isfinite(depth).all() and (depth >= 0).all()
        assert 0.07 <= float(np.median(depth[valid])) <= 0.125  # camera 75-120 mm above the plate
        dropouts.append(1.0 - valid.mean())
        relief = relief_mm(frame)
        _, v = seam_coordinates(frame)
        mm_per_px = frame.truth['mm_per_px']
        half_width_px = frame.truth['bead_half_width_mm'] / mm_per_px
        crown = median_in(relief, np.abs(v) < 0.25 * half_width_px)
        plate = relief[np.abs(v) > half_width_px * 1.3 + 12.0 / mm_per_px]
        plate = plate[np.isfinite(plate)]
        assert abs(float(np.median(plate))) < 0.05
        assert 0.005 < float(np.std(plate)) < 0.3  # a real sensor is noisy, but not that noisy
        bead_ratios.append(crown / frame.truth['bead_height_mm'])
        assert frame.rgb.std() > 5 and 30 < frame.rgb.mean() < 230
    assert all(0.0 <= fraction <= 0.03 for fraction in dropouts)
    assert sum(fraction > 0 for fraction in dropouts) >= 12
    # the crown stands the bead's height above the plate (less sensor blur and meander)
    assert min(bead_ratios) > 0.6 and max(bead_ratios) < 1.3


def test_good_frames_carry_nuisances(small_sim: WeldSimulator) -> None:
    """Glare spots show up in good frames too: saturated colour and no depth under them."""
    with_glare = 0
    for index in range(20):
        frame = small_sim.render(index, label='good')
        spots = [
            spot
            for spot in frame.truth['glare']
            if 2 <= spot['x_px'] < frame.rgb.shape[1] - 2 and 2 <= spot['y_px'] < frame.rgb.shape[0] - 2
        ]
        with_glare += bool(spots)
        for spot in spots:
            x, y = round(spot['x_px']), round(spot['y_px'])
            assert frame.rgb[y, x].min() >= 240
            assert frame.depth_m[y - 1 : y + 2, x - 1 : x + 2].max() == 0.0
    assert 3 <= with_glare <= 17


def test_drawn_defects_are_at_least_as_severe_as_their_floor(small_sim: WeldSimulator) -> None:
    from weld_camera.sim.scene import SEVERITY_FLOOR

    for label, floor in SEVERITY_FLOOR.items():
        severities = [small_sim.render(index, label=label).severity for index in range(40)]
        assert min(severities) >= floor
        assert max(severities) > floor + 0.3  # still spread up to obvious
    # a forced severity is what the caller asked for, below the floor too (benchmarks measure there)
    assert small_sim.render(3, label='porosity', severity=0.1).severity == 0.1
