"""Batch augmentation on preprocessed inputs that respects the sensor.

Geometric transforms move every channel together (colour and depth stay registered); photometric
changes touch the colour channels only; the depth channels get sensor-like noise, a change of bead
height scale, and dropout of pixels and blobs (marked invalid, as the sensor would report them).
Runs on whole batches on the training device, so it costs no data-loader time.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from weld_core.preprocess import RGB_CHANNELS, Preprocessor

SURFACE_CHANNELS = ('height', 'relief', 'relief_min', 'relief_max', 'pits', 'bumps')


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate_deg: float = 25.0
    scale: tuple[float, float] = (0.9, 1.12)
    shift: float = 0.08
    affine_p: float = 0.7
    brightness: float = 0.12
    contrast: float = 0.25
    colour_gain: float = 0.06
    rgb_noise: float = 0.02
    height_scale: tuple[float, float] = (0.85, 1.15)
    depth_noise_mm: float = 0.03
    pixel_dropout: float = 0.03
    blob_dropout: float = 0.03


class BatchAugmenter:
    def __init__(self, preprocessor: Preprocessor, config: AugmentConfig) -> None:
        self.config = config
        channels = preprocessor.channels
        self.rgb = [i for i, name in enumerate(channels) if name in RGB_CHANNELS]
        self.surface = [i for i, name in enumerate(channels) if name in SURFACE_CHANNELS]
        self.valid = channels.index('valid') if 'valid' in channels else None
        norm = preprocessor.normalization
        self.rgb_std = [norm[channels[i]][1] for i in self.rgb]
        self.rgb_mean = [norm[channels[i]][0] for i in self.rgb]
        self.surface_norm = [norm[channels[i]] for i in self.surface]
        self.valid_norm = norm.get('valid', (0.0, 1.0))

    def _uniform(self, batch: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(batch, device=like.device, dtype=like.dtype).uniform_(low, high)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = x.float().clone()
        batch = x.shape[0]
        if cfg.flip:
            flip_h = torch.rand(batch, device=x.device) < 0.5
            flip_v = torch.rand(batch, device=x.device) < 0.5
            x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
            x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
        if cfg.affine_p > 0:
            x = self._affine(x)
        if self.rgb:
            x = self._photometric(x)
        if self.surface:
            x = self._depth(x)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        batch, _, height, width = x.shape
        apply = (torch.rand(batch, device=x.device) < cfg.affine_p).to(x.dtype)
        angle = self._uniform(batch, -cfg.rotate_deg, cfg.rotate_deg, x) * math.pi / 180 * apply
        scale = 1 + (self._uniform(batch, *cfg.scale, x) - 1) * apply
        shift = self._uniform(batch * 2, -cfg.shift, cfg.shift, x).view(batch, 2) * apply[:, None]
        aspect = height / width
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # rotation in pixel space, expressed in the normalised coordinates of a non-square image
        theta = torch.stack(
            [
                torch.stack([cos, -sin * aspect, shift[:, 0]], 1),
                torch.stack([sin / aspect, cos, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # zeros outside the image: normalised colour at its mean, height 0 and valid 0 (no data)
        filler = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype)
        if self.valid is not None:
            filler[self.valid] = (0.0 - self.valid_norm[0]) / self.valid_norm[1]
        shifted = x - filler[None, :, None, None]
        warped = F.grid_sample(shifted, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        return warped + filler[None, :, None, None]

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        batch = x.shape[0]
        idx = self.rgb
        mean = torch.tensor(self.rgb_mean, device=x.device)[None, :, None, None]
        std = torch.tensor(self.rgb_std, device=x.device)[None, :, None, None]
        colour = x[:, idx] * std + mean
        contrast = self._uniform(batch, 1 - cfg.contrast, 1 + cfg.contrast, x)[:, None, None, None]
        brightness = self._uniform(batch, -cfg.brightness, cfg.brightness, x)[:, None, None, None]
        gain = 1 + self._uniform(batch * len(idx), -cfg.colour_gain, cfg.colour_gain, x).view(
            batch, len(idx), 1, 1
        )
        grey = colour.mean((1, 2, 3), keepdim=True)
        colour = (colour - grey) * contrast + grey + brightness
        colour = colour * gain + torch.randn_like(colour) * cfg.rgb_noise
        x[:, idx] = (colour.clamp(0, 1) - mean) / std
        return x

    def _depth(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        batch, _, height, width = x.shape
        scale = self._uniform(batch, *cfg.height_scale, x)[:, None, None]
        noise_mm = self._uniform(batch, 0, cfg.depth_noise_mm, x)[:, None, None]
        drop = (
            torch.rand(batch, height, width, device=x.device)
            < self._uniform(batch, 0, cfg.pixel_dropout, x)[:, None, None]
        )
        blobs = torch.rand(batch, 1, max(height // 6, 1), max(width // 6, 1), device=x.device)
        blobs = blobs < self._uniform(batch, 0, cfg.blob_dropout, x)[:, None, None, None]
        drop |= F.interpolate(blobs.float(), size=(height, width), mode='nearest')[:, 0] > 0
        for index, (mean, std) in zip(self.surface, self.surface_norm, strict=True):
            mm = x[:, index] * std + mean
            mm = mm * scale + torch.randn_like(mm) * noise_mm
            mm = torch.where(drop, torch.zeros_like(mm), mm)
            x[:, index] = (mm - mean) / std
        if self.valid is not None:
            mean, std = self.valid_norm
            x[:, self.valid] = torch.where(
                drop, torch.full_like(x[:, self.valid], (0 - mean) / std), x[:, self.valid]
            )
        return x
