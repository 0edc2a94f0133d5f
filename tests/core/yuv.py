"""NV12 frames for tests: what D-Robotics' camera and stereo nodes publish as colour."""

import cv2
import numpy as np


def nv12_from_rgb(rgb: np.ndarray) -> bytes:
    """HxWx3 RGB (H, W even) -> NV12 bytes: the Y plane, then U and V interleaved at half size."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    luma, chroma = i420[: height * width], i420[height * width :]
    u, v = chroma[: chroma.size // 2], chroma[chroma.size // 2 :]
    interleaved = np.empty(chroma.size, np.uint8)
    interleaved[0::2], interleaved[1::2] = u, v
    return luma.tobytes() + interleaved.tobytes()


def blocky_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random colours constant over 2x2 blocks, so NV12's half-size chroma loses nothing but rounding."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(2, axis=0).repeat(2, axis=1))
