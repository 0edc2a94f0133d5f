"""RGB-D frame pair -> model input tensor, written once for training and the board's inference node.

numpy + OpenCV only (the board has no torch). Every setting travels in the ONNX file's
``metadata_props`` (:meth:`Preprocessor.to_metadata` / :meth:`Preprocessor.from_metadata`), so a
model and the preprocessing it was trained with cannot drift apart.

Why the depth is not fed as raw distance: the camera height (75-120 mm) and the plate tilt change
from frame to frame, while the defects are sub-millimetre deviations of the surface. The plate is
therefore fitted as a plane (robustly, so the bead and spatter do not pull it) and the depth is
turned into the height above that plane in millimetres. A second depth channel, ``relief``, is the
height minus its local smooth surface (the bead profile at the scale of a few pixels): pores, spatter
and undercut grooves stand out there whatever the bead's size. A validity channel tells the network
where the sensor gave no data (those pixels are 0 in the height channels).

Channel names (the ``input_channels`` metadata key lists them in model order):
``r, g, b`` (colour, 0..1 before normalisation), ``luma_detail`` (the grey level's band-pass, 1 and
3 px, in units of the frame's own detail noise: the small highlights and dark dots of spatter
droplets and pores whatever the exposure), ``height`` (mm above the plate), ``height_rel`` (the
height over the frame's crown, the highest point of its smooth surface: about 1 on the crown of a
full bead, lower where the bead thins, whatever the bead's own height), ``relief`` (mm above the local
surface) and ``valid`` (share of sensor pixels with depth). ``rgb`` and ``depth`` are accepted as
shorthands for ``r,g,b`` and ``height,relief,valid``.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from weld_core.errors import WeldError
from weld_core.fitting import least_squares_3, median

RGB_CHANNELS: tuple[str, ...] = ('r', 'g', 'b')
# channels computed from the colour image: the network's colour branch takes them with r, g, b
COLOUR_CHANNELS: tuple[str, ...] = (*RGB_CHANNELS, 'luma_detail')
DEPTH_CHANNELS: tuple[str, ...] = ('height', 'height_rel', 'relief', 'valid')
ALL_CHANNELS: tuple[str, ...] = COLOUR_CHANNELS + DEPTH_CHANNELS
_SHORTHANDS: dict[str, tuple[str, ...]] = {'rgb': RGB_CHANNELS, 'depth': ('height', 'relief', 'valid')}

# 2: a depth image larger than the input is brought to the input size (masked area average) before
# the depth features (1 computed them at the sensor's size)
# 3: the block-pooled channels and their ``tophat_px`` setting are gone; the other channels are
# computed as in 2, so a version-2 file that lists none of them is read as well
PREPROCESS_VERSION = '3'
_READABLE_VERSIONS: tuple[str, ...] = ('2', PREPROCESS_VERSION)
_REMOVED_CHANNELS: tuple[str, ...] = ('relief_min', 'relief_max', 'pits', 'bumps')


# Neutral normalisation: colour 0..1 -> about -1..1, heights in mm kept in their unit (a few mm).
DEFAULT_NORMALIZATION: dict[str, tuple[float, float]] = {
    'r': (0.5, 0.25),
    'g': (0.5, 0.25),
    'b': (0.5, 0.25),
    'height': (0.0, 1.0),
    'height_rel': (0.0, 0.5),
    'relief': (0.0, 0.1),
    'luma_detail': (0.0, 3.0),
    'valid': (0.0, 1.0),
}
# luma_detail: a band-pass of the grey level (the fine scale keeps 2-3 px highlights and dark dots,
# the coarse one removes lighting and the bead's shading) in units of the frame's own detail noise
# (its robust spread: brushed, matte and glaring plates differ severalfold); the floor keeps a
# flat image finite, the clip bounds glare edges
_LUMA_DETAIL_SIGMAS_PX = (1.0, 3.0)
_LUMA_NOISE_FLOOR = 0.2  # grey levels (0..255)
# cv2.GaussianBlur's kernels for a float image: 4 sigma each side
_LUMA_DETAIL_KERNELS = tuple(
    cv2.getGaussianKernel(int(np.rint(8.0 * sigma + 1.0)) | 1, sigma, cv2.CV_32F)
    for sigma in _LUMA_DETAIL_SIGMAS_PX
)
_LUMA_DETAIL_CLIP = 30.0
# height_rel's crown is at least this high (mm): a frame with no bead in view stays finite and flat
_CROWN_FLOOR_MM = 0.3

PREPROCESS_METADATA_KEYS: tuple[str, ...] = (
    'input_channels',
    'input_size',
    'normalization',
    'depth_units',
    'depth_range_m',
    'height_clip_mm',
    'relief_sigma_px',
    'relief_denoise_px',
    'plane_fit',
    'preprocess_version',
)


class PreprocessError(WeldError, ValueError):
    """Preprocessing settings or inputs are unusable (bad metadata, wrong array shapes)."""


def luma_detail(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> the grey level's band-pass in units of the frame's detail noise (1.4826 x MAD)."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    # the Gaussian blurs of the grey level as float32, read straight from the 8-bit image: the same
    # values as cv2.GaussianBlur of the float image (same kernels and border) in half the time
    fine, coarse = _LUMA_DETAIL_KERNELS
    detail = cv2.sepFilter2D(grey, cv2.CV_32F, fine, fine, borderType=cv2.BORDER_REFLECT_101)
    detail -= cv2.sepFilter2D(grey, cv2.CV_32F, coarse, coarse, borderType=cv2.BORDER_REFLECT_101)
    # every other pixel in each direction: the same estimate (within a percent) at a tenth of the time
    noise = max(1.4826 * median(np.abs(detail[::2, ::2]).ravel()), _LUMA_NOISE_FLOOR)
    detail *= np.float32(1.0 / noise)
    return np.clip(detail, -_LUMA_DETAIL_CLIP, _LUMA_DETAIL_CLIP, out=detail)


def expand_channels(names: Sequence[str] | str) -> tuple[str, ...]:
    """'rgb,depth' or ['rgb', 'height'] -> the per-channel names the model sees, validated."""
    items = [part.strip() for part in names.split(',')] if isinstance(names, str) else [str(n) for n in names]
    expanded: list[str] = []
    for item in items:
        if not item:
            continue
        for name in _SHORTHANDS.get(item, (item,)):
            if name in _REMOVED_CHANNELS:
                raise PreprocessError(
                    f'input channel {name!r} was removed in preprocess_version 3: '
                    'retrain or use an older weld_core'
                )
            if name not in ALL_CHANNELS:
                raise PreprocessError(
                    f'unknown input channel {name!r}: use {", ".join(ALL_CHANNELS)} (or rgb, depth)'
                )
            if name in expanded:
                raise PreprocessError(f'input channel {name!r} is listed twice in {names!r}')
            expanded.append(name)
    if not expanded:
        raise PreprocessError(f'no input channels in {names!r}')
    return tuple(expanded)


def fit_plate_plane(
    depth_m: np.ndarray, valid: np.ndarray, stride: int = 4, iterations: int = 4
) -> tuple[float, float, float] | None:
    """Robust least-squares plane depth = a*x + b*y + c over the valid pixels (x, y in pixels).

    Iteratively refits on the pixels closest to the current plane, so the bead, spatter and gaps
    (a minority of the image) do not bias it. None when too few pixels are valid.
    """
    sub_valid = valid[::stride, ::stride]
    ys, xs = np.nonzero(sub_valid)
    if ys.size < 10:
        return None
    z = depth_m[::stride, ::stride][sub_valid].astype(np.float64)
    x, y = xs * float(stride), ys * float(stride)
    keep = np.ones(z.shape, bool)
    coeffs = np.zeros(3)
    for _ in range(iterations):
        if np.count_nonzero(keep) < 10:
            break
        coeffs = least_squares_3(x, y, z, keep)
        residual = z - (coeffs[0] * x + coeffs[1] * y + coeffs[2])
        kept = residual[keep]
        centre = median(kept)
        kept -= centre
        spread = 1.4826 * median(np.abs(kept, out=kept))
        # 50 um floor: with a perfectly flat synthetic plate the MAD could reach 0 and keep nothing
        residual -= centre
        keep = np.abs(residual, out=residual) <= max(2.5 * spread, 5e-5)
    return float(coeffs[0]), float(coeffs[1]), float(coeffs[2])


@dataclass(frozen=True)
class Preprocessor:
    """Turns one frame pair (HxWx3 uint8 RGB, HxW float32 metres) into a (C, H, W) float32 input."""

    input_size: tuple[int, int] = (120, 160)
    channels: tuple[str, ...] = ALL_CHANNELS
    normalization: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_NORMALIZATION)
    )
    depth_range_m: tuple[float, float] = (0.03, 2.0)
    height_clip_mm: float = 8.0
    relief_sigma_px: float = 4.0
    relief_denoise_px: float = 1.5

    DEPTH_UNITS: ClassVar[str] = 'm'
    PLANE_FIT: ClassVar[str] = 'robust_plane'

    def __post_init__(self) -> None:
        height, width = (int(v) for v in self.input_size)
        if height < 16 or width < 16:
            raise PreprocessError(f'input_size {height}x{width} is too small (at least 16x16)')
        object.__setattr__(self, 'input_size', (height, width))
        object.__setattr__(self, 'channels', expand_channels(self.channels))
        norm: dict[str, tuple[float, float]] = {}
        for name in self.channels:
            if name not in self.normalization:
                raise PreprocessError(f'no normalisation (mean, std) for input channel {name!r}')
            mean, std = (float(v) for v in self.normalization[name])
            if not np.isfinite(mean) or not np.isfinite(std) or std <= 0:
                raise PreprocessError(
                    f'normalisation of {name!r} must be finite with std > 0, got {mean}, {std}'
                )
            norm[name] = (mean, std)
        object.__setattr__(self, 'normalization', norm)
        near, far = (float(v) for v in self.depth_range_m)
        if not 0 <= near < far:
            raise PreprocessError(f'depth_range_m must be 0 <= near < far, got {near}, {far}')
        object.__setattr__(self, 'depth_range_m', (near, far))
        if self.height_clip_mm <= 0 or self.relief_sigma_px <= 0 or self.relief_denoise_px < 0:
            raise PreprocessError('height_clip_mm and relief_sigma_px must be > 0, relief_denoise_px >= 0')
        if self.relief_denoise_px >= self.relief_sigma_px:
            raise PreprocessError('relief_denoise_px must be smaller than relief_sigma_px')

    @property
    def uses_depth(self) -> bool:
        return any(name in DEPTH_CHANNELS for name in self.channels)

    @property
    def uses_rgb(self) -> bool:
        return any(name in COLOUR_CHANNELS for name in self.channels)

    # --- metadata round trip ---------------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        height, width = self.input_size
        return {
            'input_channels': ','.join(self.channels),
            'input_size': f'{height}x{width}',
            'normalization': json.dumps({name: list(self.normalization[name]) for name in self.channels}),
            'depth_units': self.DEPTH_UNITS,
            'depth_range_m': f'{self.depth_range_m[0]:g},{self.depth_range_m[1]:g}',
            'height_clip_mm': f'{self.height_clip_mm:g}',
            'relief_sigma_px': f'{self.relief_sigma_px:g}',
            'relief_denoise_px': f'{self.relief_denoise_px:g}',
            'plane_fit': self.PLANE_FIT,
            'preprocess_version': PREPROCESS_VERSION,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> 'Preprocessor':
        """The Preprocessor a model file's metadata describes; version 2 is read too (its ``tophat_px``
        is ignored) unless it lists a channel that version 3 removed."""
        missing = [key for key in PREPROCESS_METADATA_KEYS if key not in metadata]
        if missing:
            raise PreprocessError(f'preprocessing metadata lacks {", ".join(missing)}')
        version = metadata['preprocess_version']
        if version not in _READABLE_VERSIONS:
            known = ', '.join(repr(v) for v in _READABLE_VERSIONS)
            raise PreprocessError(
                f'preprocess_version {version!r} is not supported by this weld_core '
                f'(it knows {known}): update weld_core or re-export the model'
            )
        if metadata['depth_units'] != cls.DEPTH_UNITS:
            raise PreprocessError(f'depth_units must be {cls.DEPTH_UNITS!r}, got {metadata["depth_units"]!r}')
        if metadata['plane_fit'] != cls.PLANE_FIT:
            raise PreprocessError(f'plane_fit must be {cls.PLANE_FIT!r}, got {metadata["plane_fit"]!r}')
        try:
            height, width = (int(v) for v in metadata['input_size'].lower().split('x'))
            norm_raw = json.loads(metadata['normalization'])
            normalization = {str(k): (float(v[0]), float(v[1])) for k, v in norm_raw.items()}
            near, far = (float(v) for v in metadata['depth_range_m'].split(','))
            height_clip_mm = float(metadata['height_clip_mm'])
            relief_sigma_px = float(metadata['relief_sigma_px'])
            relief_denoise_px = float(metadata['relief_denoise_px'])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PreprocessError(f'malformed preprocessing metadata: {exc}') from exc
        return cls(
            input_size=(height, width),
            channels=expand_channels(metadata['input_channels']),
            normalization=normalization,
            depth_range_m=(near, far),
            height_clip_mm=height_clip_mm,
            relief_sigma_px=relief_sigma_px,
            relief_denoise_px=relief_denoise_px,
        )

    # --- the transform ---------------------------------------------------------------------
    def _masked_depth(self, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth with 0 where it has no data (outside ``depth_range_m``, NaN, inf), the valid pixels as 0/1.

        Four OpenCV passes instead of numpy's six: this runs on every VGA frame of the node.
        """
        near, far = self.depth_range_m
        masked = cv2.threshold(depth, near, 0.0, cv2.THRESH_TOZERO)[1]  # <= near -> 0
        cv2.patchNaNs(masked, 0.0)  # NaN passes some builds' thresholds
        below_far = float(np.nextafter(np.float32(far), np.float32(0.0)))
        cv2.threshold(masked, below_far, 0.0, cv2.THRESH_TOZERO_INV, dst=masked)  # >= far, inf -> 0
        return masked, cv2.threshold(masked, 0.0, 1.0, cv2.THRESH_BINARY)[1]

    def depth_features(self, depth_m: np.ndarray) -> dict[str, np.ndarray]:
        """Depth in metres -> height, relief (mm) and valid maps at the depth image's resolution."""
        masked, weight = self._masked_depth(np.asarray(depth_m, dtype=np.float32))
        valid = weight > 0
        plane = fit_plate_plane(masked, valid)
        if plane is None:
            empty = np.zeros(masked.shape, np.float32)
            return {'height': empty, 'height_rel': empty, 'relief': empty, 'valid': empty}
        rows, cols = masked.shape
        a, b, c = plane
        height_mm = (np.arange(cols, dtype=np.float32)[None, :] * np.float32(a)) + (
            np.arange(rows, dtype=np.float32)[:, None] * np.float32(b) + np.float32(c)
        )
        height_mm -= masked
        height_mm *= np.float32(1000.0)
        np.clip(height_mm, -self.height_clip_mm, self.height_clip_mm, out=height_mm)
        # every value is finite (no-data pixels are 0 in ``masked``): a product with the 0/1 weight
        # zeroes them at a fraction of the cost of a masked assignment
        height_mm *= weight
        # a band-pass (difference of normalised Gaussians that skip no-data pixels): the fine
        # scale removes the sensor's pixel noise, the coarse one the bead's own profile
        surface = self._masked_blur(height_mm, weight, float(self.relief_sigma_px))
        detail = (
            self._masked_blur(height_mm, weight, float(self.relief_denoise_px))
            if self.relief_denoise_px > 0
            else height_mm
        )
        # the height over the bead's crown (the highest point of the smooth surface, which droplets and
        # single pixels do not reach): a thinned bead reads as a low crown whatever its own height
        height_rel = height_mm * np.float32(1.0 / max(float(surface.max()), _CROWN_FLOOR_MM))
        relief_mm = np.subtract(detail, surface)
        relief_mm *= weight
        return {'height': height_mm, 'height_rel': height_rel, 'relief': relief_mm, 'valid': weight}

    def _area_depth(self, depth_m: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Depth averaged over the valid sensor pixels of each input pixel, and the valid share."""
        masked, weight = self._masked_depth(np.asarray(depth_m, dtype=np.float32))
        height, width = size
        total = cv2.resize(masked, (width, height), interpolation=cv2.INTER_AREA)
        share = cv2.resize(weight, (width, height), interpolation=cv2.INTER_AREA)
        np.clip(share, 0.0, 1.0, out=share)
        small = total / cv2.max(share, 1e-6)
        small *= share > 1e-6  # no valid sensor pixel (or a sliver of one): no data
        return small, share

    @staticmethod
    def _masked_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian blur of ``values`` (already 0 where ``weight`` is 0) over the pixels of weight 1."""
        total = cv2.GaussianBlur(values, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        norm = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        total /= cv2.max(norm, 1e-3, dst=norm)
        return total

    def __call__(self, rgb: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB + HxW float32 metres (0 = no data) -> (C, H, W) float32, normalised.

        A depth image larger than ``input_size`` is first averaged down to it over its valid pixels
        (``valid`` = their share), and the features are computed there, so their scales in pixels do
        not depend on the camera's resolution; any other size has its features computed at its own
        size and then area-resized.
        """
        self._check_inputs(rgb, depth_m)
        height, width = self.input_size
        out = np.empty((len(self.channels), height, width), np.float32)
        index = {name: i for i, name in enumerate(self.channels)}
        if self.uses_rgb:
            if rgb.shape[:2] != (height, width):
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            for plane, name in zip(cv2.split(rgb), RGB_CHANNELS, strict=True):
                if name in index:
                    # colour 0..255 -> (value / 255 - mean) / std, from a contiguous plane
                    mean, std = self.normalization[name]
                    np.multiply(plane, np.float32(1.0 / (255.0 * std)), out=out[index[name]])
                    out[index[name]] -= np.float32(mean / std)
            if 'luma_detail' in index:
                self._normalise(luma_detail(rgb), 'luma_detail', out[index['luma_detail']])
        if self.uses_depth:
            if depth_m.shape[0] > height and depth_m.shape[1] > width:
                # features at the input size: the relief scales (in pixels) then mean the same for a
                # VGA camera as for the 320x240 frames a model was trained on, at a quarter of the cost
                small, share = self._area_depth(depth_m, (height, width))
                features = self.depth_features(small)
                features['valid'] = share * features['valid']
            else:
                features = self.depth_features(depth_m)
            for name in self.channels:
                if name in features:
                    plane = features[name]
                    if plane.shape != (height, width):
                        plane = cv2.resize(plane, (width, height), interpolation=cv2.INTER_AREA)
                    self._normalise(plane, name, out[index[name]])
        return out

    def _normalise(self, plane: np.ndarray, name: str, out: np.ndarray) -> None:
        mean, std = self.normalization[name]
        if mean:
            np.subtract(plane, np.float32(mean), out=out)
            out *= np.float32(1.0 / std)
        else:
            np.multiply(plane, np.float32(1.0 / std), out=out)

    @staticmethod
    def _check_inputs(rgb: np.ndarray, depth_m: np.ndarray) -> None:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise PreprocessError(
                f'HxWx3 uint8 RGB expected, got {getattr(rgb, "shape", None)} '
                f'{getattr(rgb, "dtype", type(rgb).__name__)}'
            )
        if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2:
            raise PreprocessError(f'HxW depth in metres expected, got {getattr(depth_m, "shape", None)}')
        if depth_m.shape != rgb.shape[:2]:
            raise PreprocessError(
                f'depth {depth_m.shape[1]}x{depth_m.shape[0]} is not registered to the colour image '
                f'{rgb.shape[1]}x{rgb.shape[0]}'
            )
