"""Synthetic RGB-D weld frames for the inference tests: a tilted plate with a bead along the image."""

import numpy as np


def weld_frame(
    seed: int = 0, height: int = 240, width: int = 320, pits: int = 0, plate_m: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 RGB, HxW float32 metres): plate at ``plate_m``, a 6 mm wide 1.5 mm high bead."""
    rng = np.random.default_rng(seed)
    mm_per_px = plate_m * 1000.0 / 300.0 * (320 / width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    across_mm = (xs - width / 2.0 + 3.0 * np.sin(ys / 40.0)) * mm_per_px
    bead_mm = np.clip(1.5 * (1.0 - (across_mm / 3.0) ** 2), 0.0, None)
    for _ in range(pits):
        cy, cx = rng.integers(20, height - 20), width / 2.0 + rng.normal(0, 3)
        bead_mm -= 0.8 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 6.0) * (bead_mm > 0.5)
    tilt = (xs - width / 2.0) * 1e-5 + (ys - height / 2.0) * 5e-6
    depth = plate_m + tilt - bead_mm / 1000.0 + rng.normal(0.0, 2e-5, (height, width))
    rgb = np.empty((height, width, 3), np.uint8)
    shade = np.clip(120 + 60 * bead_mm / 1.5 + rng.normal(0, 6, (height, width)), 0, 255)
    rgb[:, :, 0] = shade.astype(np.uint8)
    rgb[:, :, 1] = (shade * 0.9).astype(np.uint8)
    rgb[:, :, 2] = (shade * 0.8).astype(np.uint8)
    return rgb, depth.astype(np.float32)
