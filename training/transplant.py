"""Defect transplant: real spatter droplets and pores cut from training frames, set into good welds.

Spatter and porosity are the classes the default network learns worst (docs/training.md): many of
those frames carry two or three droplets or pores of one or two pixels, and about 80 training
frames of each are too few examples of that. This augmentation makes more of them out of the data
itself. At the start of a fit the clearest defects of the training split are found: spatter
droplets as relief bumps on the plate, off the bead, and pores as relief pits on the bead's crown,
each well above the frame's own relief noise there. A small window around each is kept as its
*deviation* from its surroundings, in colour, height and relief. During training a share of the good
welds in a batch get one to a few of them, at reduced strength as often as at full strength (the
missed ones are the faint ones), at random places of the same kind (plate or crown), and are then
labelled with that defect. It runs before the geometric augmentation, so a set defect is turned,
scaled and resampled like a real one.

Only the training split is looked at, and a good frame only ever gains a defect: the one thing that
makes a weld a spatter or porosity weld in these data.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from training.errors import DatasetError
from weld_core.preprocess import RGB_CHANNELS, Preprocessor

# deviation channels: colour and the surface heights; ``valid`` stays the good frame's own
_MOVED_CHANNELS = (*RGB_CHANNELS, 'height', 'relief')
# class -> (sign of its relief deviation, where it sits)
DEFECT_SITES: dict[str, tuple[int, str]] = {'spatter': (1, 'plate'), 'porosity': (-1, 'crown')}


@dataclass(frozen=True)
class TransplantConfig:
    # defect classes to transplant (keys of DEFECT_SITES)
    classes: tuple[str, ...] = ('spatter',)
    # share of the good welds in a batch that gain defects (and change class)
    p: float = 0.25
    count: tuple[int, int] = (1, 4)
    # deviation scale, all channels together: the faint defects are the missed ones
    strength: tuple[float, float] = (0.35, 1.0)
    # a defect is a relief bump (pit) this many times the robust relief noise of its site above
    # (below) the site's median relief
    min_snr: float = 6.0
    # bead = height above the plate over this (mm); plate = off the bead widened by
    # ``bead_margin_px``; crown = the bead narrowed by ``crown_margin_px`` (away from its toes)
    bead_mm: float = 0.5
    bead_margin_px: int = 6
    crown_margin_px: int = 3
    window_px: int = 9

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(DEFECT_SITES))
        if unknown or not self.classes:
            raise DatasetError(
                f'transplant classes must be among {", ".join(DEFECT_SITES)}, got {list(self.classes)}'
            )
        if not 0 <= self.p <= 1 or not 1 <= self.count[0] <= self.count[1]:
            raise DatasetError(
                f'transplant p must be 0..1 and count a range from 1, got {self.p}, {self.count}'
            )
        if self.window_px < 3 or self.window_px % 2 == 0:
            raise DatasetError(f'transplant window_px must be odd and >= 3, got {self.window_px}')


@dataclass(frozen=True)
class DefectBank:
    """Per class, defect windows (N, C, w, w): deviations from their surroundings, normalised units."""

    deviations: dict[str, np.ndarray]
    source_frames: dict[str, int]

    def summary(self) -> str:
        return ', '.join(
            f'{len(self.deviations[name])} {name} from {self.source_frames[name]} frames'
            for name in self.deviations
        )


def site_masks(height_mm: np.ndarray, valid: np.ndarray, config: TransplantConfig) -> dict[str, np.ndarray]:
    """The plate (off the bead) and the bead's crown of one frame, as boolean masks."""
    bead = ((height_mm > config.bead_mm) & valid).astype(np.uint8)
    wide = 2 * config.bead_margin_px + 1
    narrow = 2 * config.crown_margin_px + 1
    near_bead = cv2.dilate(bead, np.ones((wide, wide), np.uint8)) > 0
    crown = cv2.erode(bead, np.ones((narrow, narrow), np.uint8)) > 0
    return {'plate': valid & ~near_bead, 'crown': valid & crown}


def _robust_std(values: np.ndarray) -> float:
    if values.size < 16:
        return float('inf')
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _denormalise(x: np.ndarray, channels: Sequence[str], preprocessor: Preprocessor, name: str) -> np.ndarray:
    mean, std = preprocessor.normalization[name]
    return x[list(channels).index(name)].astype(np.float32) * np.float32(std) + np.float32(mean)


def _valid_mask(x: np.ndarray, channels: Sequence[str], preprocessor: Preprocessor) -> np.ndarray:
    if 'valid' in channels:
        return _denormalise(x, channels, preprocessor, 'valid') > 0.5
    return _denormalise(x, channels, preprocessor, 'height') != 0


def find_defects(
    x: np.ndarray, defect: str, channels: Sequence[str], preprocessor: Preprocessor, config: TransplantConfig
) -> list[tuple[int, int, float]]:
    """(row, col, radius px) of the clear ``defect`` marks (droplets, pores) in one frame (C, H, W)."""
    sign, site = DEFECT_SITES[defect]
    height_mm = _denormalise(x, channels, preprocessor, 'height')
    relief_mm = _denormalise(x, channels, preprocessor, 'relief') * np.float32(sign)
    where = site_masks(height_mm, _valid_mask(x, channels, preprocessor), config)[site]
    noise = _robust_std(relief_mm[where])
    if not np.isfinite(noise) or noise <= 0:
        return []
    # measured from the site's typical relief: a bead's crown has a relief of its own (its curvature)
    level = np.median(relief_mm[where]) + config.min_snr * noise
    marks = ((relief_mm > level) & where).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(marks, connectivity=8)
    half = config.window_px // 2
    rows, cols = relief_mm.shape
    found = []
    for index in range(1, count):
        area = int(stats[index, cv2.CC_STAT_AREA])
        if area > config.window_px**2 // 4:  # too large for a droplet or a pore: a bead edge, a stain
            continue
        ys, xs = np.nonzero(labels == index)
        peak = int(np.argmax(relief_mm[ys, xs]))
        row, col = int(ys[peak]), int(xs[peak])
        if half <= row < rows - half and half <= col < cols - half:
            found.append((row, col, float(np.sqrt(area / np.pi))))
    return found


def build_defect_bank(
    inputs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    channels: Sequence[str],
    preprocessor: Preprocessor,
    config: TransplantConfig,
) -> DefectBank:
    """Cut the clear defects out of the frames of their class in ``inputs`` (N, C, H, W, normalised)."""
    missing = [name for name in ('height', 'relief') if name not in channels]
    if missing:
        raise DatasetError(
            f'the defect transplant needs the {" and ".join(missing)} input channel(s) to find '
            'defects: add them or turn the transplant off (model.transplant: null)'
        )
    absent = [name for name in (*config.classes, 'good') if name not in class_names]
    if absent:
        raise DatasetError(f'the defect transplant needs the class(es) {", ".join(absent)}')
    channels = list(channels)
    moved = [i for i, name in enumerate(channels) if name in _MOVED_CHANNELS]
    half = config.window_px // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    distance = np.hypot(yy, xx)
    ring = (distance >= half - 0.5).ravel()
    deviations: dict[str, np.ndarray] = {}
    sources: dict[str, int] = {}
    for defect in config.classes:
        frames = np.flatnonzero(labels == list(class_names).index(defect))
        windows = []
        for frame in frames:
            x = np.asarray(inputs[frame], np.float32)
            for row, col, radius in find_defects(x, defect, channels, preprocessor, config):
                window = x[:, row - half : row + half + 1, col - half : col + half + 1]
                deviation = np.zeros_like(window)
                for index in moved:
                    deviation[index] = window[index] - np.median(window[index].ravel()[ring])
                # a soft disc a pixel wider than the mark: its rim and shadow come along
                windows.append(deviation * np.clip(radius + 1.5 - distance, 0.0, 1.0))
        shape = (len(channels), config.window_px, config.window_px)
        deviations[defect] = np.stack(windows) if windows else np.zeros((0, *shape), np.float32)
        sources[defect] = len(frames)
    return DefectBank(deviations, sources)


class DefectTransplant:
    """Sets bank defects into a share of a batch's good welds and relabels them."""

    def __init__(
        self,
        bank: DefectBank,
        class_names: Sequence[str],
        channels: Sequence[str],
        preprocessor: Preprocessor,
        config: TransplantConfig,
    ) -> None:
        self.config = config
        self.good_label = list(class_names).index('good')
        self.kinds = [
            (list(class_names).index(name), DEFECT_SITES[name][1], torch.from_numpy(bank.deviations[name]))
            for name in config.classes
            if len(bank.deviations[name])
        ]
        channels = list(channels)
        self.height_index = channels.index('height')
        self.height_norm = preprocessor.normalization['height']
        self.valid_index = channels.index('valid') if 'valid' in channels else None
        self.valid_norm = preprocessor.normalization.get('valid', (0.0, 1.0))
        self.depth_indices = [i for i, name in enumerate(channels) if name in ('height', 'relief')]
        # the normalised value of 0 mm in each depth channel (what a no-data pixel holds)
        self.depth_fill = torch.tensor(
            [
                -preprocessor.normalization[channels[i]][0] / preprocessor.normalization[channels[i]][1]
                for i in self.depth_indices
            ]
        )[:, None, None]

    def _sites(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One frame's valid pixels and, per site, the centres (K, 2) where a whole window fits."""
        cfg = self.config
        mean, std = self.height_norm
        height_mm = x[self.height_index] * std + mean
        valid = height_mm != 0
        if self.valid_index is not None:
            v_mean, v_std = self.valid_norm
            valid = (x[self.valid_index] * v_std + v_mean) > 0.5
        bead = ((height_mm > cfg.bead_mm) & valid)[None, None].float()
        wide, narrow = 2 * cfg.bead_margin_px + 1, 2 * cfg.crown_margin_px + 1
        near_bead = F.max_pool2d(bead, wide, 1, wide // 2)[0, 0] > 0
        # erosion as the complement of a dilation of the complement (the border counts as bead)
        crown = F.max_pool2d(1 - bead, narrow, 1, narrow // 2)[0, 0] == 0
        inside = torch.zeros_like(valid)
        half = cfg.window_px // 2
        inside[half:-half, half:-half] = True
        return valid, {
            'plate': torch.nonzero(valid & ~near_bead & inside),
            'crown': torch.nonzero(valid & crown & inside),
        }

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch (B, C, H, W) float, labels (B,) -> the same with some good welds given defects."""
        cfg = self.config
        if not self.kinds or cfg.p <= 0:
            return x, y
        good = torch.nonzero(y == self.good_label).flatten()
        chosen = good[torch.rand(len(good), generator=generator) < cfg.p]
        if not len(chosen):
            return x, y
        x, y = x.clone(), y.clone()
        half = cfg.window_px // 2
        fill = self.depth_fill.to(x)

        def draw(high: int) -> int:
            return int(torch.randint(high, (), generator=generator))

        for sample in chosen.tolist():
            label, site, bank = self.kinds[draw(len(self.kinds))]
            valid, sites = self._sites(x[sample])
            positions = sites[site]
            if not len(positions):
                continue
            for _ in range(cfg.count[0] + draw(cfg.count[1] - cfg.count[0] + 1)):
                row, col = positions[draw(len(positions))].tolist()
                mark = bank[draw(len(bank))].to(x)
                if draw(2):
                    mark = mark.flip(2)
                strength = float(torch.empty(()).uniform_(*cfg.strength, generator=generator))
                rows, cols = slice(row - half, row + half + 1), slice(col - half, col + half + 1)
                x[sample, :, rows, cols].add_(mark, alpha=strength)
                # no surface change where the sensor had no data: those heights stay 0
                depth = x[sample, self.depth_indices, rows, cols]
                x[sample, self.depth_indices, rows, cols] = torch.where(valid[rows, cols], depth, fill)
            y[sample] = label
        return x, y
