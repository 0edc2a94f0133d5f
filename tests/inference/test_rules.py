"""The rule-based detector on synthetic height maps of known geometry (no ROS).

Every scene is a flat plate 100 mm from a 320x240 camera (fx = fy = 300 px, so 1 px = 1/3 mm) with
a parabolic bead along a chosen direction, depth noise and a little dropout; the defects are added
with known millimetre sizes and the measurements are checked against them.
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest

from weld_core.errors import ImageFormatError
from weld_inference.rules import IntrinsicsError, RuleConfig, RuleDetector, RuleResult

PLATE_M = 0.1
FX = 300.0
CLASSES = ('good', 'porosity', 'spatter', 'gap', 'undercut')


@dataclass
class Scene:
    """Heights in mm above the plate, with the seam coordinates of every pixel in mm."""

    height_mm: np.ndarray
    along_mm: np.ndarray
    across_mm: np.ndarray
    half_width_mm: float
    bead_height_mm: float
    mm_per_px: float
    fx: float

    def frame(
        self,
        seed: int = 0,
        noise_mm: float = 0.05,
        dropout: float = 0.005,
        plate_step_mm: float = 0.0,
        tilt_deg: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, depth_m) of the scene: a plain grey image and noisy depth with speckle dropout.

        The plate is the plane n.X = PLATE_M with n tilted by ``tilt_deg`` about the image's y axis; a
        point h above it lies on n.X = PLATE_M - h, so along a pixel's ray z = (PLATE_M - h) / (n.ray).
        """
        rng = np.random.default_rng(seed)
        height = self.height_mm + np.where(self.across_mm > 0, plate_step_mm, 0.0)
        xs = np.arange(height.shape[1], dtype=np.float64)[None, :]
        cols = height.shape[1]
        tilt = math.radians(tilt_deg)
        n_dot_ray = math.sin(tilt) * (xs - (cols - 1) / 2) / self.fx + math.cos(tilt)
        depth = (PLATE_M - (height + rng.normal(0.0, noise_mm, height.shape)) / 1000.0) / n_dot_ray
        depth[rng.random(depth.shape) < dropout] = 0.0
        shade = np.clip(110 + 40 * self.height_mm, 0, 255).astype(np.uint8)
        rgb = np.repeat(shade[:, :, None], 3, axis=2)
        return rgb, depth.astype(np.float32)


def bead_scene(
    angle_deg: float = 30.0,
    half_width_mm: float = 4.0,
    bead_height_mm: float = 2.0,
    width: int = 320,
    height: int = 240,
) -> Scene:
    fx = FX * width / 320
    mm_per_px = PLATE_M * 1000.0 / fx
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    x_mm, y_mm = (xs - (width - 1) / 2) * mm_per_px, (ys - (height - 1) / 2) * mm_per_px
    angle = math.radians(angle_deg)
    along = x_mm * math.cos(angle) + y_mm * math.sin(angle)
    across = -x_mm * math.sin(angle) + y_mm * math.cos(angle)
    bead = np.clip(bead_height_mm * (1.0 - (across / half_width_mm) ** 2), 0.0, None)
    return Scene(bead, along, across, half_width_mm, bead_height_mm, mm_per_px, fx)


def add_pit(scene: Scene, along_mm: float, radius_mm: float, depth_mm: float) -> None:
    r2 = (scene.along_mm - along_mm) ** 2 + scene.across_mm**2
    scene.height_mm -= depth_mm * np.clip(1.0 - r2 / radius_mm**2, 0.0, None)


def add_droplet(scene: Scene, along_mm: float, across_mm: float, radius_mm: float, height_mm: float) -> None:
    r2 = (scene.along_mm - along_mm) ** 2 + (scene.across_mm - across_mm) ** 2
    scene.height_mm += height_mm * np.sqrt(np.clip(1.0 - r2 / radius_mm**2, 0.0, None))


def add_missing_fill(scene: Scene, start_mm: float, length_mm: float, joint_depth_mm: float = 0.5) -> None:
    inside = (scene.along_mm >= start_mm) & (scene.along_mm < start_mm + length_mm)
    joint = np.abs(scene.across_mm) < 0.6
    scene.height_mm[inside] = 0.0
    scene.height_mm[inside & joint] = -joint_depth_mm


def add_toe_groove(scene: Scene, side: int, start_mm: float, length_mm: float, depth_mm: float) -> None:
    toe = side * scene.half_width_mm
    inside = (scene.along_mm >= start_mm) & (scene.along_mm < start_mm + length_mm)
    groove = depth_mm * np.clip(1.0 - ((scene.across_mm - toe - side * 0.4) / 0.5) ** 2, 0.0, None)
    scene.height_mm -= np.where(inside, groove, 0.0)


@pytest.fixture(scope='module')
def detector() -> RuleDetector:
    return RuleDetector(RuleConfig(), class_names=CLASSES)


def check_result(result: RuleResult, classes: tuple[str, ...] = CLASSES) -> None:
    assert result.class_names == classes
    assert len(result.scores) == len(classes)
    assert math.isclose(sum(result.scores), 1.0, abs_tol=1e-6)
    assert all(0.0 <= score <= 1.0 for score in result.scores)
    assert result.label == classes[int(np.argmax(result.scores))]
    assert result.confidence == pytest.approx(max(result.scores))


@pytest.mark.parametrize('angle_deg', [0.0, 37.0, 90.0, 140.0])
def test_clean_bead_is_good_and_measured(detector: RuleDetector, angle_deg: float) -> None:
    scene = bead_scene(angle_deg, half_width_mm=4.0, bead_height_mm=2.0)
    result = detector(*scene.frame(seed=1), fx=FX, fy=FX)
    check_result(result)
    assert result.label == 'good', result.measurements
    assert result.reason == ''
    # toes where the parabola is at 10 % of the crown: 2 * 4 mm * sqrt(0.9)
    assert result.measurements['bead_width_mm'] == pytest.approx(8.0 * math.sqrt(0.9), rel=0.12)
    assert result.measurements['bead_height_mm'] == pytest.approx(2.0, abs=0.15)
    assert result.measurements['pit_count'] == 0
    assert result.measurements['spatter_count'] == 0
    assert result.measurements['missing_fill_length_mm'] == 0
    assert result.measurements['plate_tilt_deg'] < 1.0
    assert result.measurements['valid_depth_fraction'] == pytest.approx(0.995, abs=0.003)


@pytest.mark.parametrize('angle_deg', [10.0, 100.0])
def test_pit_on_the_crown_is_porosity(detector: RuleDetector, angle_deg: float) -> None:
    scene = bead_scene(angle_deg)
    add_pit(scene, along_mm=5.0, radius_mm=1.0, depth_mm=0.7)
    result = detector(*scene.frame(seed=2))
    check_result(result)
    assert result.label == 'porosity', result.measurements
    assert result.measurements['pit_count'] == 1
    # the smoothing that keeps noise out also rounds the pit's bottom a little
    assert result.measurements['max_pit_depth_mm'] == pytest.approx(0.7, abs=0.15)


def test_several_pits_are_counted(detector: RuleDetector) -> None:
    scene = bead_scene(60.0)
    for along in (-20.0, -6.0, 9.0):
        add_pit(scene, along_mm=along, radius_mm=0.9, depth_mm=0.8)
    result = detector(*scene.frame(seed=3))
    assert result.label == 'porosity'
    assert result.measurements['pit_count'] == 3


def test_droplets_beside_the_bead_are_spatter(detector: RuleDetector) -> None:
    scene = bead_scene(20.0)
    spots = [(-25.0, 8.0), (-10.0, -9.0), (5.0, 12.0), (22.0, -7.5)]
    for along, across in spots:
        add_droplet(scene, along, across, radius_mm=0.7, height_mm=0.6)
    result = detector(*scene.frame(seed=4))
    check_result(result)
    assert result.label == 'spatter', result.measurements
    assert result.measurements['spatter_count'] == len(spots)
    assert result.measurements['max_droplet_height_mm'] == pytest.approx(0.6, rel=0.35)


@pytest.mark.parametrize('length_mm', [6.0, 15.0])
def test_missing_fill_is_gap(detector: RuleDetector, length_mm: float) -> None:
    scene = bead_scene(75.0)
    add_missing_fill(scene, start_mm=-5.0, length_mm=length_mm)
    result = detector(*scene.frame(seed=5))
    check_result(result)
    assert result.label == 'gap', result.measurements
    assert result.measurements['missing_fill_length_mm'] == pytest.approx(length_mm, abs=2.5)
    assert result.measurements['min_fill_height_mm'] < 0.2
    # the open joint is not taken for pores or grooves
    assert result.scores[CLASSES.index('gap')] > 0.8


@pytest.mark.parametrize('side', [-1, 1])
def test_toe_groove_is_undercut(detector: RuleDetector, side: int) -> None:
    scene = bead_scene(-25.0)
    add_toe_groove(scene, side=side, start_mm=-15.0, length_mm=25.0, depth_mm=0.45)
    result = detector(*scene.frame(seed=6))
    check_result(result)
    assert result.label == 'undercut', result.measurements
    assert result.measurements['toe_groove_depth_mm'] == pytest.approx(0.45, abs=0.15)
    # one toe only (which one is 'left' depends on the seam direction the detector estimates)
    sides = sorted((result.measurements['toe_groove_left_mm'], result.measurements['toe_groove_right_mm']))
    assert sides[1] > sides[0] + 0.2


def test_stains_glare_and_dropout_leave_a_clean_weld_good(detector: RuleDetector) -> None:
    scene = bead_scene(50.0)
    rgb, depth = scene.frame(seed=7)
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
    for _ in range(6):  # dark stains and scratches in colour only
        cy, cx = rng.integers(0, depth.shape[0]), rng.integers(0, depth.shape[1])
        rgb[(ys - cy) ** 2 + (xs - cx) ** 2 < rng.integers(20, 200)] = (40, 30, 20)
    rgb[100:102, 20:300] = (20, 20, 20)
    for cy, cx, radius in ((60, 80, 9), (120, 160, 7), (200, 250, 12)):  # glare: saturated, no depth
        spot = (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2
        rgb[spot] = 255
        depth[spot] = 0.0
    result = detector(rgb, depth)
    assert result.label == 'good', result.measurements
    assert result.measurements['valid_depth_fraction'] < 0.99


@pytest.mark.parametrize('seed', [16, 17])
def test_heavy_dropout_raises_no_false_defects(detector: RuleDetector, seed: int) -> None:
    clean = bead_scene(30.0)
    assert detector(*clean.frame(seed=seed, noise_mm=0.15, dropout=0.4)).label == 'good'
    pitted = bead_scene(30.0)
    add_pit(pitted, along_mm=3.0, radius_mm=1.0, depth_mm=0.8)
    assert detector(*pitted.frame(seed=seed, noise_mm=0.15, dropout=0.4)).label == 'porosity'


def test_plates_at_different_heights_are_levelled(detector: RuleDetector) -> None:
    scene = bead_scene(15.0)
    result = detector(*scene.frame(seed=8, plate_step_mm=0.35))
    assert result.label == 'good', result.measurements
    assert abs(result.measurements['plate_step_mm']) == pytest.approx(0.35, abs=0.1)


def test_tilted_plate_is_measured_perpendicular_to_it(detector: RuleDetector) -> None:
    scene = bead_scene(80.0, half_width_mm=4.0, bead_height_mm=2.0)
    add_pit(scene, along_mm=4.0, radius_mm=1.0, depth_mm=0.7)
    result = detector(*scene.frame(seed=15, tilt_deg=12.0))
    assert result.label == 'porosity', result.measurements
    assert result.measurements['plate_tilt_deg'] == pytest.approx(12.0, abs=0.5)
    assert result.measurements['bead_height_mm'] == pytest.approx(2.0, abs=0.15)
    assert result.measurements['plate_distance_mm'] == pytest.approx(
        PLATE_M * 1000 / math.cos(math.radians(12)), rel=0.01
    )


def test_vga_frame_gives_the_same_answer_in_millimetres(detector: RuleDetector) -> None:
    small = bead_scene(30.0)
    add_pit(small, along_mm=0.0, radius_mm=1.0, depth_mm=0.7)
    large = bead_scene(30.0, width=640, height=480)
    add_pit(large, along_mm=0.0, radius_mm=1.0, depth_mm=0.7)
    small_result = detector(*small.frame(seed=9))
    large_result = detector(*large.frame(seed=9), fx=large.fx, fy=large.fx)
    assert small_result.label == large_result.label == 'porosity'
    assert large_result.measurements['bead_width_mm'] == pytest.approx(
        small_result.measurements['bead_width_mm'], rel=0.1
    )
    # VGA is measured at half resolution: the same millimetres per working pixel
    assert large_result.measurements['downsample'] == 2
    assert large_result.measurements['mm_per_px'] == pytest.approx(
        small_result.measurements['mm_per_px'], rel=0.01
    )


def test_default_intrinsics_scale_with_the_width(detector: RuleDetector) -> None:
    large = bead_scene(30.0, width=640, height=480)
    rgb, depth = large.frame(seed=10)
    assert detector(rgb, depth).measurements['mm_per_px'] == pytest.approx(2 * large.mm_per_px, rel=0.02)


def test_class_list_of_a_site(detector: RuleDetector) -> None:
    scene = bead_scene(0.0)
    add_missing_fill(scene, start_mm=0.0, length_mm=12.0)
    frame = scene.frame(seed=11)
    extended = RuleDetector(class_names=(*CLASSES, 'crack'))(*frame)
    check_result(extended, (*CLASSES, 'crack'))
    assert extended.label == 'gap'
    assert extended.scores[-1] == 0.0
    without_gap = RuleDetector(class_names=('good', 'porosity', 'undercut'))(*frame)
    check_result(without_gap, ('good', 'porosity', 'undercut'))
    # the open seam is still no good weld: one of the site's defect classes reports it
    assert without_gap.label in ('porosity', 'undercut'), without_gap.measurements


def unjudged(result: RuleResult) -> bool:
    return result.reason != '' and result.confidence <= 1.0 / len(result.class_names) + 1e-9


@pytest.mark.parametrize(
    'depth',
    [
        np.zeros((240, 320), np.float32),
        np.full((240, 320), np.nan, np.float32),
        np.full((240, 320), np.inf, np.float32),
        np.full((240, 320), -0.1, np.float32),
        np.zeros((4, 4), np.float32),
        np.zeros((1, 320), np.float32),
        np.zeros((0, 0), np.float32),
    ],
    ids=['zeros', 'nan', 'inf', 'negative', 'tiny', 'one-row', 'empty'],
)
def test_frames_without_usable_depth_get_an_unjudged_result(depth: np.ndarray) -> None:
    result = RuleDetector()(None, depth)
    check_result(result, CLASSES)
    assert unjudged(result), result


def test_flat_plate_without_a_bead(detector: RuleDetector) -> None:
    rng = np.random.default_rng(12)
    depth = (PLATE_M + rng.normal(0, 5e-5, (240, 320))).astype(np.float32)
    result = detector(None, depth)
    assert unjudged(result)
    assert 'bead' in result.reason


@pytest.mark.parametrize('seed', range(6))
def test_odd_depth_never_raises(detector: RuleDetector, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 300)), int(rng.integers(5, 400)))
    depth = rng.choice([0.0, np.nan, np.inf, -1.0, 0.1, 0.08, 5.0], size=shape).astype(np.float32)
    depth += rng.normal(0, 0.01, shape).astype(np.float32)
    result = detector(np.zeros((*shape, 3), np.uint8), depth)
    check_result(result)
    half_nan = bead_scene(45.0).frame(seed=seed)[1]
    half_nan[:, : 100 + 20 * seed] = np.nan
    check_result(detector(None, half_nan))


def test_float64_depth_is_accepted(detector: RuleDetector) -> None:
    rgb, depth = bead_scene(20.0).frame(seed=13)
    assert detector(rgb, depth.astype(np.float64)).label == 'good'


@pytest.mark.parametrize(
    ('rgb', 'depth'),
    [
        (None, np.zeros((240, 320, 1), np.float32)),
        (None, np.zeros(320, np.float32)),
        (None, np.zeros((240, 320), np.uint16)),
        (None, [[0.1, 0.1], [0.1, 0.1]]),
        (np.zeros((240, 320), np.uint8), np.zeros((240, 320), np.float32)),
        (np.zeros((240, 320, 4), np.uint8), np.zeros((240, 320), np.float32)),
        (np.zeros((240, 320, 3), np.float32), np.zeros((240, 320), np.float32)),
        (np.zeros((120, 160, 3), np.uint8), np.zeros((240, 320), np.float32)),
    ],
    ids=[
        'depth-3d',
        'depth-1d',
        'depth-uint16',
        'depth-list',
        'rgb-2d',
        'rgb-4ch',
        'rgb-float',
        'size-mismatch',
    ],
)
def test_wrong_arrays_raise_image_format_error(detector: RuleDetector, rgb: object, depth: object) -> None:
    with pytest.raises(ImageFormatError):
        detector(rgb, depth)  # type: ignore[arg-type]


@pytest.mark.parametrize('intrinsics', [{'fx': 0.0}, {'fx': -300.0}, {'fy': math.nan}, {'cx': math.inf}])
def test_bad_intrinsics_raise(detector: RuleDetector, intrinsics: dict[str, float]) -> None:
    rgb, depth = bead_scene().frame()
    with pytest.raises(IntrinsicsError):
        detector(rgb, depth, **intrinsics)


@pytest.mark.parametrize('field', ['pit_depth_mm', 'pit_noise_factor', 'gap_length_mm'])
def test_config_rejects_non_positive_thresholds(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RuleConfig(**{field: 0.0})


def test_thresholds_move_the_decision() -> None:
    scene = bead_scene(0.0)
    add_missing_fill(scene, start_mm=0.0, length_mm=6.0)
    frame = scene.frame(seed=14)
    assert RuleDetector()(*frame).label == 'gap'
    assert RuleDetector(RuleConfig(gap_length_mm=12.0))(*frame).label != 'gap'
