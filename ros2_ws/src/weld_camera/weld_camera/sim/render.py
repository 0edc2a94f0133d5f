"""Turn :class:`~weld_camera.sim.scene.SceneParams` into a registered RGB + depth pair, fast.

The bead, its defects and the heat tint are computed in a band of "seam coordinates" (columns run
along the seam, rows across it, one pixel per image pixel) where every along-seam profile is a
cheap broadcast, then rotated into the image with one ``cv2.warpAffine``. The plate, lighting,
noise and dropout are computed in image coordinates from banks of noise precomputed once per
simulator, so a frame costs a few dozen vectorised passes and no full-frame random draws.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from weld_camera.sim.config import CameraIntrinsics
from weld_camera.sim.scene import MAX_BEND_MM, MAX_TINT_MM, SPATTER_REACH_MM, SceneParams

# Oxide colours of heat-tinted steel from the toe outwards: straw, brown, purple, blue, pale blue.
_TINT_STOPS = np.array(
    [
        (0.00, 1.10, 1.00, 0.72),
        (0.18, 1.05, 0.88, 0.62),
        (0.38, 0.88, 0.70, 0.78),
        (0.58, 0.72, 0.70, 1.05),
        (0.78, 0.92, 0.97, 1.08),
        (1.00, 1.00, 1.00, 1.00),
    ],
    dtype=np.float32,
)
_TINT_LUT_SIZE = 256
_TINT_STEP = 4
_TINT_SCALE = 200.0  # tint factors travel as uint8: 200 = 1.0
# slope (|grad h|) beyond which a structured-light/stereo sensor starts to lose returns
_STEEP_SLOPE = 1.0
_VERY_STEEP_SLOPE = 2.5
_JOINT_DEPTH_MM = 6.0  # looking into the root opening of a 6 mm butt joint
# beyond the bead's widest half-width: room for the undercut groove and the hi-lo step
_TOE_MARGIN_MM = 4.5
# specular light (fraction of full scale) beyond which the depth sensor sees only glare
_BLINDING_HIGHLIGHT = 0.6


@dataclass(frozen=True)
class RenderedFrame:
    rgb: np.ndarray
    depth_m: np.ndarray
    height_mm: np.ndarray  # noise-free height above the plate plane, for ground truth
    truth: dict


def _tint_lut() -> np.ndarray:
    positions = np.linspace(0.0, 1.0, _TINT_LUT_SIZE)
    return np.stack(
        [np.interp(positions, _TINT_STOPS[:, 0], _TINT_STOPS[:, c]) for c in (1, 2, 3)], axis=1
    ).astype(np.float32)


def _brushed_texture(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Ground/brushed steel: fine noise smeared along one random direction, mean 1."""
    fine = rng.standard_normal(shape).astype(np.float32)
    length = max(5, round(rng.uniform(12, 40) * scale) | 1)
    kernel = np.zeros((length, length), np.float32)
    angle = rng.uniform(0, np.pi)
    centre = length // 2
    dx, dy = math.cos(angle) * centre, math.sin(angle) * centre
    cv2.line(
        kernel,
        (round(centre - dx), round(centre - dy)),
        (round(centre + dx), round(centre + dy)),
        1.0,
        1,
        cv2.LINE_AA,
    )
    kernel /= kernel.sum()
    streaks = cv2.filter2D(fine, -1, kernel, borderType=cv2.BORDER_REFLECT)
    streaks /= streaks.std() + 1e-6
    blotch_small = rng.standard_normal((max(2, shape[0] // 32), max(2, shape[1] // 32))).astype(np.float32)
    blotch = cv2.resize(blotch_small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    strength = rng.uniform(0.06, 0.15)
    texture = 1.0 + strength * streaks + 0.02 * fine + 0.035 * blotch
    return texture.astype(np.float32)


class SceneRenderer:
    """Renders scenes for one image size; holds the noise banks (built once from ``seed``)."""

    def __init__(self, intrinsics: CameraIntrinsics, seed: int, texture_count: int = 4) -> None:
        self.intrinsics = intrinsics
        width, height = intrinsics.width, intrinsics.height
        self.scale = width / 320.0
        pad = max(16, height // 4)
        self.bank_shape = (height + pad, width + pad)
        rng = np.random.default_rng([seed, 0xBA4C])
        self.textures = [_brushed_texture(rng, self.bank_shape, self.scale) for _ in range(texture_count)]
        self.rgb_noise = rng.standard_normal((*self.bank_shape, 3)).astype(np.float32)
        self.depth_noise = rng.standard_normal(self.bank_shape).astype(np.float32)
        self.uniform = _clustered_uniform(rng, self.bank_shape, 0.6 * self.scale)
        grain = cv2.GaussianBlur(
            rng.standard_normal(self.bank_shape).astype(np.float32), (0, 0), 1.6 * self.scale
        )
        self.grain = grain / (grain.std() + 1e-6)
        self.tint_lut = _tint_lut()
        small = (max(4, height // 8), max(4, width // 8))
        # the full-resolution pixel each small pixel's centre lands on under cv2.resize
        sx = ((np.arange(small[1]) + 0.5) * (width / small[1]) - 0.5).astype(np.float32)
        sy = ((np.arange(small[0]) + 0.5) * (height / small[0]) - 0.5).astype(np.float32)
        self.small_x, self.small_y = np.meshgrid(sx, sy)
        # the plate plane's depth is smooth: computed small and scaled up with the illumination
        self.small_xn = ((self.small_x - intrinsics.cx) / intrinsics.fx).astype(np.float32)
        self.small_yn = ((self.small_y - intrinsics.cy) / intrinsics.fy).astype(np.float32)

    # ------------------------------------------------------------------ seam band
    def _seam_band(self, scene: SceneParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Seam-coordinate surface (height mm, weld-metal weight, albedo factor), uint8 tint at 1/4
        resolution, the centre line's offset per column (mm) and where the band sits (u0, v0)."""
        width, height = self.intrinsics.width, self.intrinsics.height
        mmpp = scene.mm_per_px
        px, py = scene.seam_point_px
        reach = max(px, width - px) ** 2 + max(py, height - py) ** 2
        u0 = math.ceil(math.sqrt(reach)) + 2
        hw_max = scene.half_width_mm * float(scene.width_wobble.max())
        meander_max = sum(a for a, _, _ in scene.meander) + (MAX_BEND_MM if scene.bend_per_mm else 0.0)
        v0 = math.ceil((hw_max + meander_max + max(MAX_TINT_MM, SPATTER_REACH_MM) + 2.0) / mmpp)
        n_u, n_v = 2 * u0, 2 * v0
        u_mm = (np.arange(n_u, dtype=np.float32) - u0) * mmpp
        v_mm = (np.arange(n_v, dtype=np.float32) - v0) * mmpp

        meander = np.zeros(n_u, np.float32)
        if scene.bend_per_mm:
            # a gently curved seam: a parabola near the seam point that saturates at MAX_BEND_MM
            sag = 0.5 * scene.bend_per_mm * u_mm * u_mm
            meander += MAX_BEND_MM * np.tanh(sag / MAX_BEND_MM)
        for amplitude, wavelength, phase in scene.meander:
            meander += amplitude * np.sin(2 * np.pi * u_mm / wavelength + phase)
        knots = np.linspace(u_mm[0], u_mm[-1], len(scene.width_wobble))
        half_width = scene.half_width_mm * np.interp(u_mm, knots, scene.width_wobble).astype(np.float32)
        bead_height = scene.bead_height_mm * np.interp(u_mm, knots, scene.height_wobble).astype(np.float32)
        joint_open = None
        gap = scene.gap
        if gap is not None:
            window = _segment_window(u_mm, gap.segment.u_mm, gap.segment.length_mm, gap.segment.taper_mm)
            bead_height *= 1.0 - (1.0 - gap.height_factor) * window
            half_width *= 1.0 - (1.0 - gap.width_factor) * window
            # the root shows where little filler is left in the joint
            joint_open = np.clip((0.3 - gap.height_factor) / 0.2, 0.0, 1.0) * np.clip(
                (window - 0.5) * 2.5, 0.0, 1.0
            )

        # the bead, its root and its toes only occupy the middle rows; the rest is bare plate
        bead_reach_mm = hw_max + meander_max + _TOE_MARGIN_MM
        r0 = max(0, int((-bead_reach_mm / mmpp) + v0))
        r1 = min(n_v, math.ceil(bead_reach_mm / mmpp) + v0 + 1)
        across = v_mm[r0:r1, None] - meander[None, :]
        t2 = (across / half_width[None, :]) ** 2
        base = np.clip(1.0 - t2, 0.0, 1.0)
        profile = base ** np.float32(scene.profile_power)
        phase = (2 * np.pi / scene.ripple_pitch_mm) * (
            scene.ripple_direction * u_mm[None, :] + (scene.ripple_curvature * half_width)[None, :] * t2
        )
        phase += np.interp(
            u_mm, np.linspace(u_mm[0], u_mm[-1], len(scene.ripple_jitter)), scene.ripple_jitter
        )[None, :].astype(np.float32)
        ripple = np.sin(phase)
        ripple_amp = scene.ripple_amp_mm * np.interp(
            u_mm, np.linspace(u_mm[0], u_mm[-1], len(scene.ripple_strength)), scene.ripple_strength
        ).astype(np.float32)
        h = bead_height[None, :] * profile + (ripple_amp[None, :] * ripple) * np.sqrt(base)
        if scene.hi_lo_mm:
            h += scene.hi_lo_mm * np.clip(0.5 + across / 1.0, 0.0, 1.0)
        metal = np.clip(base * 5.0, 0.0, 1.0)
        albedo = 1.0 + 0.08 * ripple * metal
        if joint_open is not None and gap is not None:
            slit = np.clip(gap.joint_width_mm / 2 - np.abs(across), 0.0, mmpp) / mmpp * joint_open[None, :]
            h -= _JOINT_DEPTH_MM * slit
            metal = np.maximum(metal, slit)
            albedo *= 1.0 - 0.92 * slit
            # the plate edges of the open root are bright, freshly cut metal
            edge = np.clip(1.0 - np.abs(np.abs(across) - gap.joint_width_mm / 2 - 0.3) / 0.4, 0, 1)
            albedo *= 1.0 + 0.25 * edge * joint_open[None, :]
        undercut = scene.undercut
        if undercut is not None:
            window = _segment_window(
                u_mm, undercut.segment.u_mm, undercut.segment.length_mm, undercut.segment.taper_mm
            )
            sides = (-1, 1) if undercut.both_sides else (undercut.side,)
            for side in sides:
                centre = side * half_width * 0.97 + side * undercut.width_mm * 0.25
                groove = np.exp(-(((across - centre[None, :]) / (undercut.width_mm * 0.5)) ** 2))
                groove *= window[None, :]
                h -= undercut.depth_mm * groove
                albedo *= 1.0 - 0.35 * groove

        bead_h, bead_metal, bead_albedo = h, metal, albedo
        h = np.zeros((n_v, n_u), np.float32)
        h[r1:] = scene.hi_lo_mm
        h[r0:r1] = bead_h
        metal = np.zeros((n_v, n_u), np.float32)
        metal[r0:r1] = bead_metal
        albedo = np.ones((n_v, n_u), np.float32)
        albedo[r0:r1] = bead_albedo

        self._stamp_islands(scene, albedo, meander, u0, v0)
        truth_defects: list[dict] = []
        self._stamp_pits(scene, h, metal, albedo, meander, u0, v0, truth_defects)
        self._stamp_droplets(scene, h, metal, albedo, meander, u0, v0, truth_defects)

        # heat tint varies over millimetres: computed on a grid _TINT_STEP times coarser
        step = _TINT_STEP
        across_small = v_mm[::step, None] - meander[None, ::step]
        tint_noise = cv2.resize(
            scene.tint_noise, (across_small.shape[1], across_small.shape[0]), interpolation=cv2.INTER_CUBIC
        )
        distance = (np.abs(across_small) - half_width[None, ::step]) * (255.0 / scene.tint_width_mm)
        distance += (0.07 * 255.0) * tint_noise
        index = cv2.convertScaleAbs(np.maximum(distance, 0.0))
        lut = np.clip((1.0 + scene.tint_strength * (self.tint_lut - 1.0)) * _TINT_SCALE, 0, 255)
        tint = cv2.LUT(cv2.merge([index, index, index]), lut.astype(np.uint8).reshape(1, 256, 3))
        surface = cv2.merge([h.astype(np.float32), metal.astype(np.float32), albedo.astype(np.float32)])
        return surface, tint, meander, {'u0': u0, 'v0': v0, 'defects': truth_defects}

    def _centre_line(self, scene: SceneParams, meander: np.ndarray, u0: int) -> np.ndarray:
        """The bead centre line (meander and bend included) as image points, Nx2 (x, y), in the image."""
        c, s = math.cos(scene.seam_angle_rad), math.sin(scene.seam_angle_rad)
        u = np.arange(0, len(meander), 2, dtype=np.float64)
        v = meander[::2].astype(np.float64) / scene.mm_per_px
        x = scene.seam_point_px[0] + (u - u0) * c - v * s
        y = scene.seam_point_px[1] + (u - u0) * s + v * c
        inside = (x >= 0) & (x <= self.intrinsics.width - 1) & (y >= 0) & (y <= self.intrinsics.height - 1)
        return np.stack([x[inside], y[inside]], axis=1).astype(np.float32)

    def _to_image(self, scene: SceneParams, col: float, row: float, u0: int, v0: int) -> tuple[float, float]:
        c, s = math.cos(scene.seam_angle_rad), math.sin(scene.seam_angle_rad)
        u, v = col - u0, row - v0
        return scene.seam_point_px[0] + u * c - v * s, scene.seam_point_px[1] + u * s + v * c

    def _stamp_islands(
        self, scene: SceneParams, albedo: np.ndarray, meander: np.ndarray, u0: int, v0: int
    ) -> None:
        mmpp = scene.mm_per_px
        for island in scene.islands:
            col = u0 + island.u_mm / mmpp
            row = v0 + (island.v_mm + meander[int(np.clip(round(col), 0, len(meander) - 1))]) / mmpp
            half_u, half_v = island.length_mm / (2 * mmpp), island.width_mm / (2 * mmpp)
            r0, r1 = max(0, int(row - half_v) - 1), min(albedo.shape[0], int(row + half_v) + 2)
            c0, c1 = max(0, int(col - half_u) - 1), min(albedo.shape[1], int(col + half_u) + 2)
            if r0 >= r1 or c0 >= c1:
                continue
            rr, cc = np.ogrid[r0:r1, c0:c1]
            inside = 1.0 - ((cc - col) / max(half_u, 0.5)) ** 2 - ((rr - row) / max(half_v, 0.5)) ** 2
            patch = np.clip(inside * 3.0, 0.0, 1.0).astype(np.float32)
            albedo[r0:r1, c0:c1] *= 1.0 - island.darkness * patch

    def _stamp_pits(
        self,
        scene: SceneParams,
        h: np.ndarray,
        metal: np.ndarray,
        albedo: np.ndarray,
        meander: np.ndarray,
        u0: int,
        v0: int,
        truth: list[dict],
    ) -> None:
        mmpp = scene.mm_per_px
        for pit in scene.pits:
            col = u0 + pit.u_mm / mmpp
            row = v0 + (pit.v_mm + meander[int(np.clip(round(col), 0, len(meander) - 1))]) / mmpp
            radius = pit.radius_mm / mmpp
            mask, sl = _disc(h.shape, row, col, radius)
            if mask is None:
                continue
            h[sl] -= pit.depth_mm * np.sqrt(mask)
            albedo[sl] *= 1.0 - 0.75 * np.sqrt(mask)
            metal[sl] = np.maximum(metal[sl], mask > 0)
            x, y = self._to_image(scene, col, row, u0, v0)
            truth.append({'kind': 'pit', 'x_px': x, 'y_px': y, 'radius_px': radius, 'depth_mm': pit.depth_mm})

    def _stamp_droplets(
        self,
        scene: SceneParams,
        h: np.ndarray,
        metal: np.ndarray,
        albedo: np.ndarray,
        meander: np.ndarray,
        u0: int,
        v0: int,
        truth: list[dict],
    ) -> None:
        mmpp = scene.mm_per_px
        for drop in scene.droplets:
            col = u0 + drop.u_mm / mmpp
            row = v0 + (drop.v_mm + meander[int(np.clip(round(col), 0, len(meander) - 1))]) / mmpp
            radius = drop.radius_mm / mmpp
            mask, sl = _disc(h.shape, row, col, radius)
            if mask is None:
                continue
            dome = np.sqrt(mask)
            h[sl] += drop.height_mm * dome
            inside = mask > 0
            metal[sl] = np.maximum(metal[sl], np.clip(mask * 4.0, 0, 1))
            albedo[sl] = np.where(inside, 1.0 - 0.75 * drop.darkness, albedo[sl])
            x, y = self._to_image(scene, col, row, u0, v0)
            truth.append(
                {'kind': 'droplet', 'x_px': x, 'y_px': y, 'radius_px': radius, 'height_mm': drop.height_mm}
            )

    # ------------------------------------------------------------------ image
    def render(self, scene: SceneParams) -> RenderedFrame:
        width, height = self.intrinsics.width, self.intrinsics.height
        mmpp = scene.mm_per_px
        surface, tint, meander, band = self._seam_band(scene)
        c, s = math.cos(scene.seam_angle_rad), math.sin(scene.seam_angle_rad)
        px, py = scene.seam_point_px
        u0, v0 = band['u0'], band['v0']
        to_band = np.array([[c, s, -px * c - py * s + u0], [-s, c, px * s - py * c + v0]], np.float64)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        # planes, not HxWx3 arrays: numpy broadcasts over a trailing axis of 3 several times slower
        h, metal, bead_albedo = cv2.split(
            cv2.warpAffine(surface, to_band, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        )
        step = _TINT_STEP
        small_size = ((width + step - 1) // step, (height + step - 1) // step)
        to_small_band = to_band.copy()
        to_small_band[:, 2] /= step
        tint_small = cv2.warpAffine(
            tint, to_small_band, small_size, flags=flags, borderMode=cv2.BORDER_REPLICATE
        )
        tint_planes = cv2.split(cv2.resize(tint_small, (width, height), interpolation=cv2.INTER_LINEAR))

        oy, ox = scene.texture_offset
        bead_albedo *= 1.0 + scene.grain * self.grain[oy : oy + height, ox : ox + width]

        # geometry: normals from the height map, Blinn-Phong with the camera looking straight down
        grad_scale = 1.0 / (8.0 * mmpp)
        gx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3, scale=grad_scale)
        gy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3, scale=grad_scale)
        slope2 = gx * gx
        slope2 += gy * gy
        inv_norm = slope2 + 1.0
        np.sqrt(inv_norm, out=inv_norm)
        np.reciprocal(inv_norm, out=inv_norm)
        lx, ly, lz = scene.light_dir
        hx, hy, hz = lx, ly, lz + 1.0
        hn = math.sqrt(hx * hx + hy * hy + hz * hz)
        hx, hy, hz = hx / hn, hy / hn, hz / hn
        n_dot_l = _facing(gx, gy, inv_norm, lx, ly, lz)
        specular = _facing(gx, gy, inv_norm, hx, hy, hz)
        for _ in range(5):  # (n.h)^32: tight highlights on the ripples
            np.multiply(specular, specular, out=specular)
        illumination = cv2.resize(self._illumination(scene), (width, height), interpolation=cv2.INTER_LINEAR)
        # diffuse and specular light reaching the camera per pixel, before surface colour
        diffuse = n_dot_l
        diffuse *= 1.0 - scene.ambient
        diffuse += scene.ambient
        diffuse *= illumination
        gloss = metal * (scene.bead_gloss - scene.plate_gloss)
        gloss += scene.plate_gloss
        specular *= gloss
        specular *= illumination

        # albedo: brushed plate, stains, scratches, oxide tint, weld metal
        plate = self.textures[scene.texture_index][oy : oy + height, ox : ox + width]
        if scene.texture_flip in (-1, 0, 1):
            plate = cv2.flip(plate, scene.texture_flip)
        if scene.scratches or scene.specks:
            marks = np.ones((height, width), np.float32)
            for speck in scene.specks:
                cv2.circle(
                    marks,
                    (round(speck.x_px), round(speck.y_px)),
                    max(1, round(speck.radius_px)),
                    1.0 + speck.contrast,
                    -1,
                    cv2.LINE_AA,
                )
            for scratch in scene.scratches:
                cv2.line(
                    marks,
                    (int(scratch.x0_px), int(scratch.y0_px)),
                    (int(scratch.x1_px), int(scratch.y1_px)),
                    1.0 + scratch.contrast,
                    scratch.width_px,
                    cv2.LINE_AA,
                )
            plate = plate * marks
        stain = None
        if scene.stain_strength > 0:
            blotch = cv2.resize(scene.stain_noise, (width, height), interpolation=cv2.INTER_CUBIC)
            stain = np.clip((blotch - 0.6) * (1.5 * scene.stain_strength), 0.0, scene.stain_strength)
        planes = []
        for channel in range(3):
            albedo = plate * tint_planes[channel]
            albedo *= scene.plate_rgb[channel] / _TINT_SCALE
            if stain is not None:
                albedo *= 1.0 - stain * (1.0 - scene.stain_rgb[channel])
            weld = bead_albedo * scene.bead_rgb[channel]
            weld -= albedo
            weld *= metal
            albedo += weld
            albedo *= diffuse
            albedo += specular
            albedo *= 255.0 * scene.light_rgb[channel]
            planes.append(albedo)
        rgb = cv2.merge(planes)
        glare_mask = self._add_glare(scene, rgb)
        rgb = cv2.GaussianBlur(rgb, (3, 3), 0.6 * self.scale)
        # sensor noise after the optics' blur; added interleaved, as a split and merge cost more
        ny, nx = scene.rgb_noise_offset
        noise = self.rgb_noise[ny : ny + height, nx : nx + width]
        rgb += scene.rgb_noise * noise
        np.maximum(rgb, 0.0, out=rgb)
        rgb_u8 = cv2.convertScaleAbs(rgb)

        depth_m = self._depth(scene, h, slope2, specular, glare_mask)
        truth = {
            'mm_per_px': mmpp,
            'distance_m': scene.distance_mm / 1000.0,
            'seam_point_px': scene.seam_point_px,
            'seam_angle_deg': math.degrees(scene.seam_angle_rad),
            'bead_half_width_mm': scene.half_width_mm,
            'bead_height_mm': scene.bead_height_mm,
            'seam_centre_px': self._centre_line(scene, meander, u0),
            'defects': band['defects'],
            'glare': [
                {'x_px': spot.x_px, 'y_px': spot.y_px, 'radius_px': spot.radius_px} for spot in scene.glare
            ],
        }
        truth['defects'] += self._segment_truth(scene, u0, v0, meander)
        return RenderedFrame(rgb_u8, depth_m, h, truth)

    def _illumination(self, scene: SceneParams) -> np.ndarray:
        width, height = self.intrinsics.width, self.intrinsics.height
        hx, hy = scene.hotspot_px
        sigma2 = scene.hotspot_sigma_px**2
        d2 = (self.small_x - hx) ** 2 + (self.small_y - hy) ** 2
        r2 = ((self.small_x - width / 2) / (width / 2)) ** 2 + (
            (self.small_y - height / 2) / (width / 2)
        ) ** 2
        return (
            scene.exposure
            * (1.0 + scene.hotspot_gain * np.exp(-d2 / (2 * sigma2)))
            * (1.0 - scene.vignette * r2)
        ).astype(np.float32)

    def _add_glare(self, scene: SceneParams, rgb: np.ndarray) -> list[tuple[slice, slice, np.ndarray]]:
        saturated = []
        for spot in scene.glare:
            reach = spot.radius_px * 2.2
            y0, y1 = max(0, int(spot.y_px - reach)), min(rgb.shape[0], int(spot.y_px + reach) + 1)
            x0, x1 = max(0, int(spot.x_px - reach)), min(rgb.shape[1], int(spot.x_px + reach) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            c, s = math.cos(spot.angle_rad), math.sin(spot.angle_rad)
            along = (xx - spot.x_px) * c + (yy - spot.y_px) * s
            across = (yy - spot.y_px) * c - (xx - spot.x_px) * s
            r2 = (along**2 + (across * spot.aspect) ** 2) / spot.radius_px**2
            blob = (spot.strength * 255.0 * np.exp(-(r2**2))).astype(np.float32)
            rgb[y0:y1, x0:x1] += blob[:, :, None]
            saturated.append((slice(y0, y1), slice(x0, x1), r2 < 0.85))
        return saturated

    def _depth(
        self,
        scene: SceneParams,
        h: np.ndarray,
        slope2: np.ndarray,
        highlight: np.ndarray,
        glare: list[tuple[slice, slice, np.ndarray]],
    ) -> np.ndarray:
        width, height = self.intrinsics.width, self.intrinsics.height
        tx, ty = scene.tilt
        plane = cv2.resize(
            scene.distance_mm / (1.0 - tx * self.small_xn - ty * self.small_yn),
            (width, height),
            interpolation=cv2.INTER_LINEAR,
        )
        measured = cv2.GaussianBlur(h, (0, 0), scene.depth_blur_px)
        ny, nx = scene.depth_noise_offset
        wobble = cv2.resize(scene.depth_wobble, (width, height), interpolation=cv2.INTER_CUBIC)
        depth_mm = (
            plane
            - measured
            + wobble
            + scene.depth_noise_mm * self.depth_noise[ny : ny + height, nx : nx + width]
        )
        dy, dx = scene.dropout_offset
        chance = self.uniform[dy : dy + height, dx : dx + width]
        dropout = (
            ((slope2 > _STEEP_SLOPE**2) & (chance < scene.edge_dropout))
            | ((slope2 > _VERY_STEEP_SLOPE**2) & (chance < 0.5))
            | (chance > 1.0 - scene.speckle_dropout)
            | ((h < -_JOINT_DEPTH_MM * 0.5) & (chance < 0.6))
        )
        for ys, xs, spot in glare:
            dropout[ys, xs] |= spot
        # saturated highlights blind a stereo/structured-light sensor as glare spots do
        dropout |= (highlight > _BLINDING_HIGHLIGHT) & (chance < 0.5)
        # sensors lose the outermost pixels (rectification and matching windows)
        border = max(1, round(1.5 * self.scale))
        for edge in (np.s_[:, :border], np.s_[:, -border:], np.s_[:border, :], np.s_[-border:, :]):
            dropout[edge] |= chance[edge] < scene.border_dropout
        depth_m = depth_mm * np.float32(0.001)
        depth_m[dropout] = 0.0
        return depth_m.astype(np.float32, copy=False)

    def _segment_truth(self, scene: SceneParams, u0: int, v0: int, meander: np.ndarray) -> list[dict]:
        entries = []
        mmpp = scene.mm_per_px
        for kind, defect in (('gap', scene.gap), ('undercut', scene.undercut)):
            if defect is None:
                continue
            seg = defect.segment
            ends = []
            for u_mm in (seg.u_mm - seg.length_mm / 2, seg.u_mm + seg.length_mm / 2):
                col = u0 + u_mm / mmpp
                row = v0 + meander[int(np.clip(round(col), 0, len(meander) - 1))] / mmpp
                ends.append(self._to_image(scene, col, row, u0, v0))
            entry = {'kind': kind, 'start_px': ends[0], 'end_px': ends[1], 'length_mm': seg.length_mm}
            if kind == 'undercut':
                entry.update(
                    side=defect.side,
                    both_sides=defect.both_sides,
                    depth_mm=defect.depth_mm,
                    width_mm=defect.width_mm,
                )
            else:
                entry.update(height_factor=defect.height_factor)
            entries.append(entry)
        return entries


def _clustered_uniform(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Uniform 0..1 values correlated over ``sigma_px``: thresholds give specks, not single pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma_px)
    ranks = np.empty(field.size, np.float32)
    ranks[np.argsort(field, axis=None)] = np.arange(field.size, dtype=np.float32) / field.size
    return ranks.reshape(shape)


def _facing(gx: np.ndarray, gy: np.ndarray, inv_norm: np.ndarray, x: float, y: float, z: float) -> np.ndarray:
    """max(0, n . d) for unit direction d, with n = (-gx, -gy, 1) * inv_norm."""
    dot = gx * -x
    dot -= gy * y
    dot += z
    dot *= inv_norm
    return np.maximum(dot, 0.0, out=dot)


def _segment_window(u_mm: np.ndarray, centre: float, length: float, taper: float) -> np.ndarray:
    """1 inside the segment, smooth (cosine) taper of ``taper`` mm to 0 outside."""
    outside = np.maximum(np.abs(u_mm - centre) - length / 2, 0.0)
    ramp = np.clip(outside / max(taper, 1e-3), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


def _disc(
    shape: tuple[int, ...], row: float, col: float, radius: float
) -> tuple[np.ndarray | None, tuple[slice, slice]]:
    """1 - r^2/R^2 (clipped at 0) around (row, col), and the slice of ``shape`` it covers."""
    r0, r1 = max(0, int(row - radius) - 1), min(shape[0], int(row + radius) + 2)
    c0, c1 = max(0, int(col - radius) - 1), min(shape[1], int(col + radius) + 2)
    sl = (slice(r0, r1), slice(c0, c1))
    if r0 >= r1 or c0 >= c1:
        return None, sl
    rr, cc = np.ogrid[r0:r1, c0:c1]
    mask = np.clip(1.0 - ((rr - row) ** 2 + (cc - col) ** 2) / max(radius, 0.5) ** 2, 0.0, 1.0)
    return mask.astype(np.float32), sl
