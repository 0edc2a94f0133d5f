"""What the live view shows of one frame pair: JPEG previews, a colourised depth with its range in
mm, and whether the pair is fit to judge (depth dropout, saturated glare).

Plain functions on arrays (no ROS), so they are tested and benchmarked alone. The depth colours are
OpenCV's TURBO map over the frame's own range (2nd to 98th percentile of the valid depth), so the
bead's millimetres stay visible at any stand-off; the page draws the legend from
:func:`legend_colours` with the range sent beside each frame.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from weld_core.errors import ImageFormatError
from weld_core.images import compress_rgb

SATURATED_LEVEL = 250  # an 8-bit channel at or above this is clipped highlight (glare)
_COLOUR_MAP = cv2.COLORMAP_TURBO


@dataclass(frozen=True)
class SensorHealth:
    depth_dropout: float  # share of pixels without depth (0 or NaN)
    saturated: float  # share of pixels whose brightest channel is clipped
    fit: bool
    warning: str  # '' when fit

    def as_dict(self) -> dict[str, object]:
        return {
            'depth_dropout': round(self.depth_dropout, 4),
            'saturated': round(self.saturated, 4),
            'fit': self.fit,
            'warning': self.warning,
        }


@dataclass(frozen=True)
class Preview:
    rgb_jpeg: bytes
    depth_jpeg: bytes
    near_mm: float  # depth at the colour map's first colour
    far_mm: float  # ... and at its last
    health: SensorHealth
    width: int
    height: int


def sensor_health(
    rgb: np.ndarray, depth_m: np.ndarray, max_depth_dropout: float, max_saturated: float
) -> SensorHealth:
    """Shares of missing depth and of clipped colour, and a warning when either passes its limit."""
    # NaN fails both comparisons and inf the second: valid = finite and > 0, without temporaries
    valid = np.count_nonzero((depth_m > 0) & (depth_m < np.inf))
    dropout = 1.0 - float(valid) / max(depth_m.size, 1)
    # a pixel is clipped when any channel reaches SATURATED_LEVEL (OpenCV's inRange: one SIMD pass)
    below = cv2.inRange(rgb, (0, 0, 0), (SATURATED_LEVEL - 1,) * 3)
    saturated = 1.0 - float(cv2.countNonZero(below)) / max(below.size, 1)
    problems = []
    if dropout > max_depth_dropout:
        problems.append(f'{dropout:.0%} of the depth is missing (limit {max_depth_dropout:.0%})')
    if saturated > max_saturated:
        problems.append(f'{saturated:.0%} of the image is saturated glare (limit {max_saturated:.0%})')
    warning = 'not fit to judge: ' + '; '.join(problems) if problems else ''
    return SensorHealth(dropout, saturated, not problems, warning)


def depth_range_mm(depth_m: np.ndarray) -> tuple[float, float]:
    """(near, far) in mm: the 2nd and 98th percentile of the valid depth; (0, 0) when there is none."""
    sample = depth_m[::2, ::2]  # a quarter of the pixels decides the colour range just as well
    valid = sample[(sample > 0) & (sample < np.inf)]
    if valid.size == 0:
        return 0.0, 0.0
    near, far = np.percentile(valid, (2.0, 98.0)) * 1000.0
    return float(near), float(max(far, near + 1.0))


def colourise_depth(depth_m: np.ndarray, near_mm: float, far_mm: float) -> np.ndarray:
    """HxW metres -> HxWx3 BGR: TURBO from ``near_mm`` (blue) to ``far_mm`` (red), no data black."""
    valid = ((depth_m > 0) & (depth_m < np.inf)).view(np.uint8)
    span_mm = max(far_mm - near_mm, 1e-6)
    # OpenCV's scale-and-saturate in one pass; clamping below at near first keeps its |x| harmless
    levels = cv2.convertScaleAbs(
        np.maximum(depth_m, near_mm / 1000.0), alpha=255.0 * 1000.0 / span_mm, beta=-255.0 * near_mm / span_mm
    )
    coloured = cv2.applyColorMap(levels, _COLOUR_MAP)
    return cv2.bitwise_and(coloured, coloured, mask=valid)


def legend_colours(steps: int = 9) -> list[str]:
    """The depth colour map as CSS colours from near to far, for the page's legend."""
    levels = np.linspace(0, 255, steps).astype(np.uint8).reshape(-1, 1)
    bgr = cv2.applyColorMap(levels, _COLOUR_MAP).reshape(-1, 3)
    return [f'#{r:02x}{g:02x}{b:02x}' for b, g, r in bgr.tolist()]


def _scaled(image: np.ndarray, width_px: int, interpolation: int) -> np.ndarray:
    height, width = image.shape[:2]
    if width <= width_px:
        return image
    return cv2.resize(
        image, (width_px, max(1, round(height * width_px / width))), interpolation=interpolation
    )


def encode_jpeg_bgr(bgr: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageFormatError(f'OpenCV could not encode a {bgr.shape} image as JPEG')
    return buffer.tobytes()


def render_preview(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    width_px: int,
    jpeg_quality: int,
    max_depth_dropout: float,
    max_saturated: float,
) -> Preview:
    """The live view of one registered pair, scaled to at most ``width_px`` wide."""
    if rgb.shape[:2] != depth_m.shape[:2]:
        raise ImageFormatError(
            f'rgb {rgb.shape[1]}x{rgb.shape[0]} and depth {depth_m.shape[1]}x{depth_m.shape[0]} '
            'differ in size'
        )
    health = sensor_health(rgb, depth_m, max_depth_dropout, max_saturated)
    small_rgb = _scaled(rgb, width_px, cv2.INTER_LINEAR)  # INTER_AREA costs 4x for a 0.75 scale
    # nearest neighbour: averaging depth across an edge or a hole would invent surfaces
    small_depth = _scaled(depth_m, width_px, cv2.INTER_NEAREST)
    near_mm, far_mm = depth_range_mm(small_depth)
    rgb_jpeg = compress_rgb(small_rgb, 'jpeg', jpeg_quality).data
    depth_jpeg = encode_jpeg_bgr(colourise_depth(small_depth, near_mm, far_mm), jpeg_quality)
    return Preview(
        bytes(rgb_jpeg),
        depth_jpeg,
        near_mm,
        far_mm,
        health,
        int(small_rgb.shape[1]),
        int(small_rgb.shape[0]),
    )


def thumbnail_jpeg(rgb: np.ndarray, width_px: int = 160, jpeg_quality: int = 70) -> bytes:
    """A small colour JPEG (capture history, review list)."""
    return bytes(compress_rgb(_scaled(rgb, width_px, cv2.INTER_AREA), 'jpeg', jpeg_quality).data)
