"""Random scene parameters of one simulated frame: geometry, bead, defects and nuisances.

Everything random about a frame is drawn here from one generator seeded with (seed, index), so a
frame is reproducible; :mod:`weld_camera.sim.render` turns the parameters into pixels without
drawing anything but crops of its precomputed noise banks (whose offsets are drawn here too).
Lengths are millimetres on the plate unless a name says ``_px``.
"""

from dataclasses import dataclass

import numpy as np

from weld_camera.sim.config import CameraIntrinsics

RENDERABLE_CLASSES: tuple[str, ...] = ('good', 'porosity', 'spatter', 'gap', 'undercut')

# The lowest severity a drawn defect of each class gets: below it the sensor does not show the defect
# (a porosity frame of severity 0 has one pore one pixel wide and twice the depth noise deep), and a
# label nobody can see teaches a model nothing. Each floor is the lower edge of the first severity
# band from which the board's rules find most of the class (bench/bench_sim_severity.py prints the
# table; docs/results.md). Drawn severities span floor..1; a severity forced by the caller is kept.
SEVERITY_FLOOR: dict[str, float] = {'porosity': 0.4, 'spatter': 0.4, 'gap': 0.0, 'undercut': 0.2}

# How far from the bead toe spatter lands and heat tint reaches; the renderer sizes its band by it.
SPATTER_REACH_MM = 9.0
MAX_TINT_MM = 11.0
# a curved seam leaves the straight line by at most this much inside the band
MAX_BEND_MM = 4.0


@dataclass(frozen=True)
class Pit:
    """A gas pore open at the crown: a round depression."""

    u_mm: float  # along the seam from the seam point
    v_mm: float  # across, from the bead centre line (meander included by the renderer)
    radius_mm: float
    depth_mm: float


@dataclass(frozen=True)
class Droplet:
    """A spatter droplet fused to the plate beside the bead: a flattened sphere."""

    u_mm: float
    v_mm: float  # across, from the bead centre line
    radius_mm: float
    height_mm: float
    darkness: float  # oxide colour of the droplet, < 0 brighter than the bead .. 1 dark


@dataclass(frozen=True)
class Segment:
    """A stretch of the seam affected by a gap or undercut."""

    u_mm: float  # centre along the seam
    length_mm: float
    taper_mm: float


@dataclass(frozen=True)
class GapDefect:
    segment: Segment
    height_factor: float  # bead height left in the segment (0 = no bead at all)
    width_factor: float
    joint_width_mm: float  # root opening between the plates, visible where the bead is missing


@dataclass(frozen=True)
class UndercutDefect:
    segment: Segment
    side: int  # +1 or -1: which toe
    depth_mm: float  # below the plate surface
    width_mm: float
    both_sides: bool


@dataclass(frozen=True)
class Speck:
    """Flat debris on the plate (dust, grinding grit, paint): colour only, no height."""

    x_px: float
    y_px: float
    radius_px: float
    contrast: float  # multiplies the albedo by 1 + contrast


@dataclass(frozen=True)
class Island:
    """A flat glassy silicate island on the bead: a dark patch that is not a defect."""

    u_mm: float
    v_mm: float  # from the bead centre line
    length_mm: float
    width_mm: float
    darkness: float


@dataclass(frozen=True)
class GlareSpot:
    x_px: float
    y_px: float
    radius_px: float  # along the long axis
    strength: float
    aspect: float = 1.0  # long / short axis
    angle_rad: float = 0.0


@dataclass(frozen=True)
class Scratch:
    x0_px: float
    y0_px: float
    x1_px: float
    y1_px: float
    contrast: float  # multiplies the albedo by 1 + contrast along the line
    width_px: int


@dataclass
class SceneParams:
    """Everything :class:`~weld_camera.sim.render.SceneRenderer` needs to draw one frame."""

    label: str
    severity: float
    intrinsics: CameraIntrinsics
    distance_mm: float
    mm_per_px: float
    tilt: tuple[float, float]  # dz/dX, dz/dY of the plate plane
    seam_point_px: tuple[float, float]
    seam_angle_rad: float
    visible_u_mm: tuple[float, float]  # seam centre line inside the image between these
    # bead
    half_width_mm: float
    bead_height_mm: float
    profile_power: float
    ripple_pitch_mm: float
    ripple_amp_mm: float
    ripple_curvature: float
    ripple_direction: int
    ripple_jitter: np.ndarray  # phase wander of the ripples along the seam (rad, knots over the band)
    ripple_strength: np.ndarray  # relative ripple amplitude along the seam
    grain: float  # surface grain of the weld metal (albedo modulation)
    meander: tuple[tuple[float, float, float], ...]  # (amplitude_mm, wavelength_mm, phase)
    bend_per_mm: float  # curvature of the seam (1 / radius)
    width_wobble: np.ndarray  # relative half-width along the seam, sampled evenly over the band
    height_wobble: np.ndarray
    hi_lo_mm: float  # plate misalignment across the joint
    joint_width_mm: float
    # colours and light
    plate_rgb: tuple[float, float, float]
    bead_rgb: tuple[float, float, float]
    tint_width_mm: float
    tint_strength: float
    tint_noise: np.ndarray  # low-res noise roughening the oxide band edges
    light_dir: tuple[float, float, float]
    light_rgb: tuple[float, float, float]
    ambient: float
    plate_gloss: float
    bead_gloss: float
    exposure: float
    hotspot_px: tuple[float, float]
    hotspot_gain: float
    hotspot_sigma_px: float
    vignette: float
    texture_index: int
    texture_flip: int  # cv2.flip code, or 2 for none
    texture_offset: tuple[int, int]
    stain_noise: np.ndarray
    stain_strength: float
    stain_rgb: tuple[float, float, float]
    scratches: tuple[Scratch, ...]
    specks: tuple[Speck, ...]
    islands: tuple[Island, ...]
    glare: tuple[GlareSpot, ...]
    rgb_noise: float  # sigma in 0..255 units
    rgb_noise_offset: tuple[int, int]
    depth_noise_mm: float
    depth_noise_offset: tuple[int, int]
    depth_blur_px: float
    depth_wobble: np.ndarray  # low-res correlated depth error, mm
    edge_dropout: float  # probability of no data on steep surfaces
    speckle_dropout: float
    border_dropout: float
    dropout_offset: tuple[int, int]
    pits: tuple[Pit, ...] = ()
    droplets: tuple[Droplet, ...] = ()
    gap: GapDefect | None = None
    undercut: UndercutDefect | None = None


def frame_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of stream ``seed``; independent of every other frame."""
    return np.random.default_rng([seed, index, 0x5EED])


def draw_label(rng: np.random.Generator, mix: dict[str, float]) -> str:
    names = list(mix)
    weights = np.array([mix[name] for name in names])
    return names[
        int(
            np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side='right').clip(
                0, len(names) - 1
            )
        )
    ]


def _visible_span(
    point: tuple[float, float], angle: float, width: int, height: int, margin: float
) -> tuple[float, float]:
    """Parameter range (px) of the line point + t * (cos, sin) inside the image less a margin."""
    lo, hi = -1e9, 1e9
    for p, d, size in ((point[0], np.cos(angle), width), (point[1], np.sin(angle), height)):
        if abs(d) < 1e-9:
            continue
        t0, t1 = (margin - p) / d, (size - margin - p) / d
        lo, hi = max(lo, min(t0, t1)), min(hi, max(t0, t1))
    return lo, hi


def sample_scene(
    rng: np.random.Generator,
    label: str,
    intrinsics: CameraIntrinsics,
    distance_range_mm: tuple[float, float],
    bank_shape: tuple[int, int],
    bank_count: int,
    severity: float | None = None,
) -> SceneParams:
    """Draw the parameters of one frame of class ``label`` (``severity`` None: drawn)."""
    width, height = intrinsics.width, intrinsics.height
    scale = width / 320.0
    # drawn whatever the class, so one index gives the same plate, bead and nuisances for every label
    drawn_severity = float(rng.uniform(0.0, 1.0))
    if label == 'good':
        severity = 0.0
    elif severity is None:
        floor = SEVERITY_FLOOR.get(label, 0.0)
        severity = floor + (1.0 - floor) * drawn_severity
    distance_mm = float(rng.uniform(*distance_range_mm))
    mm_per_px = distance_mm / intrinsics.fx
    tilt_mag = rng.uniform(0.0, 0.05)
    tilt_dir = rng.uniform(0, 2 * np.pi)
    tilt = (float(tilt_mag * np.cos(tilt_dir)), float(tilt_mag * np.sin(tilt_dir)))

    seam_point = (
        float(width / 2 + rng.uniform(-0.18, 0.18) * width),
        float(height / 2 + rng.uniform(-0.18, 0.18) * height),
    )
    seam_angle = float(rng.uniform(0, np.pi))
    t_lo, t_hi = _visible_span(seam_point, seam_angle, width, height, margin=6 * scale)
    visible = (t_lo * mm_per_px, t_hi * mm_per_px)

    half_width = float(rng.uniform(2.4, 6.0))
    bead_height = float(rng.uniform(0.35, 0.6) * half_width)
    meander = tuple(
        (
            float(rng.uniform(0.0, 0.07) * half_width),
            float(rng.uniform(60, 250)),
            float(rng.uniform(0, 2 * np.pi)),
        )
        for _ in range(2)
    )

    steel = rng.uniform(0.48, 0.68)
    warm = rng.uniform(-0.05, 0.03)
    plate_rgb = (float(steel * (1 + warm)), float(steel), float(steel * (1 - warm * 1.3)))
    bead_level = rng.uniform(0.45, 0.7)
    bead_warm = rng.uniform(-0.03, 0.08)
    bead_rgb = (float(bead_level * (1 + bead_warm)), float(bead_level), float(bead_level * (1 - bead_warm)))

    elevation = rng.uniform(np.radians(10), np.radians(45))
    azimuth = rng.uniform(0, 2 * np.pi)
    light_dir = (
        float(np.sin(elevation) * np.cos(azimuth)),
        float(np.sin(elevation) * np.sin(azimuth)),
        float(np.cos(elevation)),
    )
    light_warm = rng.uniform(-0.05, 0.05)

    pad_y, pad_x = bank_shape[0] - height, bank_shape[1] - width

    def offset() -> tuple[int, int]:
        return int(rng.integers(0, pad_y + 1)), int(rng.integers(0, pad_x + 1))

    scratches = []
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3, 5]))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        length = rng.uniform(0.1, 0.8) * width
        ang = rng.uniform(0, 2 * np.pi)
        scratches.append(
            Scratch(
                float(x0),
                float(y0),
                float(x0 + length * np.cos(ang)),
                float(y0 + length * np.sin(ang)),
                float(rng.choice([-1, 1]) * rng.uniform(0.08, 0.35)),
                int(rng.integers(1, max(2, round(2 * scale)) + 1)),
            )
        )
    glare = []
    for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2]))):
        if rng.random() < 0.5:  # a specular hot spot on the shiny bead
            t = rng.uniform(max(t_lo, -1e4), min(t_hi, 1e4)) if t_hi > t_lo else 0.0
            x, y = seam_point[0] + t * np.cos(seam_angle), seam_point[1] + t * np.sin(seam_angle)
            angle = seam_angle + rng.normal(0, 0.2)
        else:
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            angle = rng.uniform(0, np.pi)
        glare.append(
            GlareSpot(
                float(x),
                float(y),
                float(rng.uniform(3.0, 11.0) * scale),
                float(rng.uniform(0.8, 2.5)),
                float(rng.uniform(1.0, 2.2)),
                float(angle),
            )
        )

    specks = tuple(
        Speck(
            float(rng.uniform(0, width)),
            float(rng.uniform(0, height)),
            float(rng.uniform(0.1, 0.45) / (distance_mm / intrinsics.fx)),
            float(rng.choice([-0.6, -0.4, 0.3])),
        )
        for _ in range(int(rng.choice([0, 0, 2, 5, 12])))
    )
    island_span = (t_lo * mm_per_px, t_hi * mm_per_px) if t_hi > t_lo else (0.0, 0.0)
    islands = tuple(
        Island(
            float(rng.uniform(*island_span)),
            float(rng.uniform(-0.4, 0.4) * half_width),
            float(rng.uniform(1.5, 4.5)),
            float(rng.uniform(0.8, 2.0)),
            float(rng.uniform(0.2, 0.45)),
        )
        for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2])))
    )

    scene = SceneParams(
        label=label,
        severity=severity,
        intrinsics=intrinsics,
        distance_mm=distance_mm,
        mm_per_px=mm_per_px,
        tilt=tilt,
        seam_point_px=seam_point,
        seam_angle_rad=seam_angle,
        visible_u_mm=visible,
        half_width_mm=half_width,
        bead_height_mm=bead_height,
        profile_power=float(rng.uniform(0.45, 0.9)),
        ripple_pitch_mm=float(rng.uniform(0.9, 1.7)),
        ripple_amp_mm=float(rng.uniform(0.02, 0.07)),
        ripple_curvature=float(rng.uniform(0.2, 0.8)),
        ripple_direction=int(rng.choice([-1, 1])),
        ripple_jitter=(rng.uniform(0.5, 2.5) * rng.standard_normal(40)).astype(np.float32),
        ripple_strength=np.clip(1.0 + 0.35 * rng.standard_normal(16), 0.3, 1.8).astype(np.float32),
        grain=float(rng.uniform(0.02, 0.06)),
        meander=meander,
        bend_per_mm=float(rng.choice([0.0, 1.0]) * rng.uniform(-1.0, 1.0) / 250.0),
        width_wobble=1 + rng.uniform(0.03, 0.1) * rng.standard_normal(12),
        height_wobble=1 + rng.uniform(0.03, 0.1) * rng.standard_normal(12),
        hi_lo_mm=float(rng.choice([0.0, 1.0]) * rng.uniform(-0.5, 0.5)),
        joint_width_mm=float(rng.uniform(0.5, 1.8)),
        plate_rgb=plate_rgb,
        bead_rgb=bead_rgb,
        tint_width_mm=float(rng.uniform(3.0, MAX_TINT_MM)),
        tint_strength=float(rng.uniform(0.3, 1.0)),
        tint_noise=rng.standard_normal((8, 128)).astype(np.float32),
        light_dir=light_dir,
        light_rgb=(1.0 + light_warm, 1.0, 1.0 - light_warm),
        ambient=float(rng.uniform(0.25, 0.45)),
        plate_gloss=float(rng.uniform(0.05, 0.25)),
        bead_gloss=float(rng.uniform(0.35, 0.8)),
        exposure=float(rng.uniform(0.55, 0.75)),
        hotspot_px=(float(rng.uniform(-0.2, 1.2) * width), float(rng.uniform(-0.2, 1.2) * height)),
        hotspot_gain=float(rng.uniform(0.2, 1.5)),
        hotspot_sigma_px=float(rng.uniform(0.2, 0.5) * width),
        vignette=float(rng.uniform(0.15, 0.5)),
        texture_index=int(rng.integers(0, bank_count)),
        texture_flip=int(rng.integers(-1, 3)),
        texture_offset=offset(),
        stain_noise=rng.standard_normal((max(2, height // 24), max(2, width // 24))).astype(np.float32),
        stain_strength=float(rng.choice([0.0, 1.0]) * rng.uniform(0.05, 0.3)),
        stain_rgb=(
            float(rng.uniform(0.55, 0.8)),
            float(rng.uniform(0.5, 0.7)),
            float(rng.uniform(0.45, 0.65)),
        ),
        scratches=tuple(scratches),
        specks=specks,
        islands=islands,
        glare=tuple(glare),
        rgb_noise=float(rng.uniform(1.5, 5.0)),
        rgb_noise_offset=offset(),
        depth_noise_mm=float(rng.uniform(0.06, 0.15) * (distance_mm / 100.0) ** 2),
        depth_noise_offset=offset(),
        depth_blur_px=float(rng.uniform(0.5, 1.0) * scale),
        depth_wobble=(rng.uniform(0.02, 0.08) * rng.standard_normal((4, 5))).astype(np.float32),
        edge_dropout=float(rng.uniform(0.05, 0.3)),
        speckle_dropout=float(rng.uniform(0.0003, 0.0015)),
        dropout_offset=offset(),
        border_dropout=float(rng.uniform(0.0, 0.25)),
    )
    _add_defect(scene, rng)
    return scene


def _uniform_u(rng: np.random.Generator, scene: SceneParams, margin_mm: float = 0.0) -> float:
    lo, hi = scene.visible_u_mm
    lo, hi = lo + margin_mm, hi - margin_mm
    if hi <= lo:
        return float((scene.visible_u_mm[0] + scene.visible_u_mm[1]) / 2)
    return float(rng.uniform(lo, hi))


def _add_defect(scene: SceneParams, rng: np.random.Generator) -> None:
    s = scene.severity
    hw = scene.half_width_mm
    if scene.label == 'porosity':
        count = 1 + round(s * 7 * rng.uniform(0.6, 1.0))
        cluster_u = _uniform_u(rng, scene, margin_mm=4.0)
        spread = rng.uniform(2.0, 12.0)
        pits = []
        for _ in range(count):
            u = float(np.clip(cluster_u + rng.normal(0, spread), *scene.visible_u_mm))
            radius = float(np.clip((0.3 + 0.5 * s) * rng.uniform(0.7, 1.3), 0.25, min(1.1, 0.45 * hw)))
            pits.append(
                Pit(
                    u,
                    float(rng.uniform(-0.45, 0.45) * hw),
                    radius,
                    float(min(scene.bead_height_mm * 0.8, (0.25 + 0.9 * s) * rng.uniform(0.7, 1.2))),
                )
            )
        scene.pits = tuple(pits)
    elif scene.label == 'spatter':
        count = 2 + round(s * 22 * rng.uniform(0.6, 1.0))
        droplets = []
        for _ in range(count):
            side = rng.choice([-1.0, 1.0])
            radius = float(np.clip((0.2 + 0.45 * s) * rng.lognormal(0.0, 0.35), 0.2, 1.2))
            distance = radius + rng.uniform(0.3, 0.4) + rng.exponential(2.0 + 1.5 * s)
            distance = min(distance, SPATTER_REACH_MM - radius)
            droplets.append(
                Droplet(
                    _uniform_u(rng, scene, margin_mm=1.0),
                    float(side * (hw + distance)),
                    radius,
                    float(radius * rng.uniform(0.6, 0.95)),
                    float(rng.uniform(-0.3, 0.9)),
                )
            )
        scene.droplets = tuple(droplets)
    elif scene.label == 'gap':
        length = 4.0 + 30.0 * s * rng.uniform(0.7, 1.0)
        taper = rng.uniform(2.0, 5.0)
        span = scene.visible_u_mm[1] - scene.visible_u_mm[0]
        length = float(min(length, max(3.0, span - 2 * taper - 4.0)))
        u = _uniform_u(rng, scene, margin_mm=length / 2 + taper)
        scene.gap = GapDefect(
            Segment(u, length, float(taper)),
            height_factor=float(0.55 * (1.0 - s) ** 1.4),
            width_factor=float(0.75 - 0.4 * s),
            joint_width_mm=float(max(scene.joint_width_mm, rng.uniform(0.6, 1.8))),
        )
    elif scene.label == 'undercut':
        span = scene.visible_u_mm[1] - scene.visible_u_mm[0]
        length = float(min(8.0 + 60.0 * s * rng.uniform(0.6, 1.0), max(4.0, span - 4.0)))
        u = _uniform_u(rng, scene, margin_mm=length / 2)
        scene.undercut = UndercutDefect(
            Segment(u, length, float(rng.uniform(1.0, 3.0))),
            side=int(rng.choice([-1, 1])),
            depth_mm=float((0.15 + 0.7 * s) * rng.uniform(0.8, 1.2)),
            width_mm=float((0.5 + 1.1 * s) * rng.uniform(0.8, 1.2)),
            both_sides=bool(s > 0.6 and rng.random() < 0.4),
        )
