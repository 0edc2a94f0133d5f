"""Live-view rendering: sensor health shares and warning, depth colours and range, JPEG sizes."""

import cv2
import numpy as np
import pytest

from weld_console.preview import (
    colourise_depth,
    depth_range_mm,
    legend_colours,
    render_preview,
    sensor_health,
    thumbnail_jpeg,
)
from weld_core.errors import ImageFormatError


def _frame(height: int = 240, width: int = 320) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.full((height, width, 3), 90, np.uint8)
    depth = np.linspace(0.10, 0.12, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    return rgb, depth


def test_health_counts_missing_depth_and_clipped_colour() -> None:
    rgb, depth = _frame()
    assert sensor_health(rgb, depth, 0.25, 0.05).fit
    depth[:, :160] = 0.0  # half the depth missing
    depth[0, 200] = np.nan
    rgb[:24, :, 0] = 255  # a tenth of the image clipped in one channel (glare)
    health = sensor_health(rgb, depth, 0.25, 0.05)
    assert health.depth_dropout == pytest.approx(0.5 + 1 / depth.size)
    assert health.saturated == pytest.approx(0.1)
    assert not health.fit
    assert 'depth is missing' in health.warning and 'saturated glare' in health.warning


def test_depth_colours_span_the_frame_range_and_no_data_is_black() -> None:
    _, depth = _frame()
    near, far = depth_range_mm(depth)
    assert 100.0 <= near < 101.0 and 119.0 < far <= 120.0
    depth[5, 5] = 0.0
    coloured = colourise_depth(depth, near, far)
    assert coloured.shape == (*depth.shape, 3) and coloured.dtype == np.uint8
    assert coloured[5, 5].tolist() == [0, 0, 0]
    # TURBO: near is blue-ish, far is red-ish (BGR)
    assert coloured[0, 0, 0] > coloured[0, 0, 2] and coloured[0, -1, 2] > coloured[0, -1, 0]
    assert depth_range_mm(np.zeros((4, 4), np.float32)) == (0.0, 0.0)
    colours = legend_colours()
    assert len(colours) == 9 and all(c.startswith('#') and len(c) == 7 for c in colours)


def test_preview_is_scaled_and_decodes_as_jpeg() -> None:
    rgb, depth = _frame(480, 640)
    preview = render_preview(rgb, depth, 320, 75, 0.25, 0.05)
    assert (preview.width, preview.height) == (320, 240)
    for data in (preview.rgb_jpeg, preview.depth_jpeg):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
    small = cv2.imdecode(np.frombuffer(thumbnail_jpeg(rgb, 96), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (72, 96, 3)
    with pytest.raises(ImageFormatError, match='differ in size'):
        render_preview(rgb, depth[:100], 320, 75, 0.25, 0.05)
