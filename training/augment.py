"""Batch augmentation on preprocessed inputs that respects the sensor.

Geometric transforms move every channel together (colour and depth stay registered); photometric
changes touch the colour channels only; the depth channels get a change of bead height scale (not
``height_rel``, a ratio) and dropout of pixels and blobs (marked invalid, as the sensor would report
them), and the height gets white sensor-like pixel noise (the band-passed channels do not: see
``depth_noise_channels``).
Runs on whole batches on the training device, so it costs no data-loader time.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from weld_core.preprocess import RGB_CHANNELS, Preprocessor

SURFACE_CHANNELS = ('height', 'height_rel', 'relief')


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
    # white noise belongs on the per-pixel height only: the band-passed relief carries a fifth of a
    # sensor's pixel noise, smoothed, and white specks there look like spatter
    depth_noise_channels: tuple[str, ...] = ('height',)
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
        self.noisy = [channels[i] in config.depth_noise_channels for i in self.surface]
        # a height over the crown is a ratio: a bead-height scale leaves it as it is
        self.scaled = [channels[i] != 'height_rel' for i in self.surface]
        self.valid_norm = norm.get('valid', (0.0, 1.0))

    def _uniform(self, batch: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(batch, device=like.device, dtype=like.dtype).uniform_(low, high)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        x = x.to(torch.float32, copy=True)  # one copy: the batch's own storage, float
        if cfg.flip or cfg.affine_p > 0:
            x = self._geometric(x)
        if self.rgb:
            x = self._photometric(x)
        if self.surface:
            x = self._depth(x)
        return x

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        """Flips, rotation, scale and shift as one resampling of every channel together.

        A flip alone lands on the pixel centres (an exact copy through the bilinear sampler), so
        folding the flips into the affine matrix costs nothing extra and saves two passes.
        """
        cfg = self.config
        batch, _, height, width = x.shape
        if cfg.flip:
            flip_x = torch.where(torch.rand(batch, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
            flip_y = torch.where(torch.rand(batch, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
        else:
            flip_x = flip_y = torch.ones(batch, device=x.device, dtype=x.dtype)
        apply = (torch.rand(batch, device=x.device) < cfg.affine_p).to(x.dtype)
        angle = self._uniform(batch, -cfg.rotate_deg, cfg.rotate_deg, x) * math.pi / 180 * apply
        scale = 1 + (self._uniform(batch, *cfg.scale, x) - 1) * apply
        shift = self._uniform(batch * 2, -cfg.shift, cfg.shift, x).view(batch, 2) * apply[:, None]
        aspect = height / width
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # rotation in pixel space, expressed in the normalised coordinates of a non-square image;
        # the flips mirror the sampling coordinates (columns of the matrix)
        theta = torch.stack(
            [
                torch.stack([cos * flip_x, -sin * aspect * flip_y, shift[:, 0]], 1),
                torch.stack([sin / aspect * flip_x, cos * flip_y, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # zeros outside the image: normalised colour at its mean and height 0 as they are; valid 0
        # (no data) is not a normalised 0, so that one channel is shifted to 0 and back around it
        filler = 0.0 if self.valid is None else (0.0 - self.valid_norm[0]) / self.valid_norm[1]
        if filler:
            x[:, self.valid] -= filler
        warped = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        if filler:
            warped[:, self.valid] += filler
        return warped

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """Contrast about the frame's grey level, brightness, per-channel gain and pixel noise.

        All of it is one per-sample, per-channel linear map of the normalised values (plus the
        noise and the clamp to the 0..1 colour range), applied in place.
        """
        cfg = self.config
        batch = x.shape[0]
        idx = self.rgb
        mean = torch.tensor(self.rgb_mean, device=x.device, dtype=x.dtype)[None, :]
        std = torch.tensor(self.rgb_std, device=x.device, dtype=x.dtype)[None, :]
        contrast = self._uniform(batch, 1 - cfg.contrast, 1 + cfg.contrast, x)[:, None]
        brightness = self._uniform(batch, -cfg.brightness, cfg.brightness, x)[:, None]
        gain = 1 + self._uniform(batch * len(idx), -cfg.colour_gain, cfg.colour_gain, x).view(batch, len(idx))
        contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
        colour = x[:, idx[0] : idx[0] + len(idx)] if contiguous else x[:, idx]
        grey = (colour.mean((2, 3)) * std + mean).mean(1, keepdim=True)
        # colour' = ((colour - grey) * contrast + grey + brightness) * gain, colour = x * std + mean
        slope = contrast * gain
        offset = (grey * (1 - contrast) + brightness) * gain + mean * slope
        colour.mul_((slope * std)[:, :, None, None]).add_(offset[:, :, None, None])
        if cfg.rgb_noise > 0:
            colour.add_(torch.randn_like(colour), alpha=cfg.rgb_noise)
        colour.clamp_(0, 1).sub_(mean[:, :, None, None]).div_(std[:, :, None, None])
        if not contiguous:
            x[:, idx] = colour
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
        for index, (mean, std), noisy, scaled in zip(
            self.surface, self.surface_norm, self.noisy, self.scaled, strict=True
        ):
            # in normalised units: mm' = mm * scale + noise, mm = x * std + mean, 0 where dropped
            plane = x[:, index]
            if scaled:
                plane.mul_(scale).add_(mean * (scale - 1) / std)
            if noisy and cfg.depth_noise_mm > 0:
                plane.addcmul_(torch.randn_like(plane), noise_mm / std)
            plane.masked_fill_(drop, (0.0 - mean) / std)
        if self.valid is not None:
            mean, std = self.valid_norm
            x[:, self.valid].masked_fill_(drop, (0 - mean) / std)
        return x
