"""Batch augmentation: colour and depth move together, photometric changes stay on the colour,
depth noise and dropout stay on the depth."""

import torch

from training.augment import AugmentConfig, BatchAugmenter
from weld_core.preprocess import Preprocessor

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
NOTHING = {
    'flip': False,
    'affine_p': 0.0,
    'brightness': 0.0,
    'contrast': 0.0,
    'colour_gain': 0.0,
    'rgb_noise': 0.0,
    'height_scale': (1.0, 1.0),
    'depth_noise_mm': 0.0,
    'pixel_dropout': 0.0,
    'blob_dropout': 0.0,
}


def _augmenter(**changes: object) -> tuple[BatchAugmenter, Preprocessor]:
    pre = Preprocessor(input_size=(64, 80), channels=CHANNELS)
    return BatchAugmenter(pre, AugmentConfig(**{**NOTHING, **changes})), pre


def _spot_batch(batch: int = 8) -> torch.Tensor:
    """A bright spot in colour and a bump in height at the same off-centre place, all valid."""
    x = torch.zeros(batch, len(CHANNELS), 64, 80)
    x[:, 5] = 1.0
    x[:, 0:3, 14:18, 20:24] = 2.0
    x[:, 3, 14:18, 20:24] = 2.0
    return x


def test_geometric_transforms_keep_colour_and_depth_registered() -> None:
    torch.manual_seed(0)
    augmenter, _ = _augmenter(flip=True, affine_p=1.0)
    out = augmenter(_spot_batch())
    moved = 0
    for sample in out:
        colour_peak = divmod(int(sample[0].argmax()), 80)
        height_peak = divmod(int(sample[3].argmax()), 80)
        assert colour_peak == height_peak
        moved += colour_peak != (14, 20)
    assert moved >= 4


def test_photometric_changes_leave_depth_alone() -> None:
    torch.manual_seed(1)
    augmenter, _ = _augmenter(brightness=0.2, contrast=0.3, colour_gain=0.1, rgb_noise=0.05)
    x = _spot_batch()
    out = augmenter(x)
    assert not torch.allclose(out[:, :3], x[:, :3])
    assert torch.equal(out[:, 3:], x[:, 3:])


def test_depth_noise_stays_on_the_height_within_its_amplitude() -> None:
    torch.manual_seed(2)
    augmenter, pre = _augmenter(depth_noise_mm=0.03)
    x = _spot_batch(16)
    out = augmenter(x)
    assert torch.equal(out[:, :3], x[:, :3])
    assert torch.equal(out[:, 5], x[:, 5])
    noise_mm = (out[:, 3] - x[:, 3]) * pre.normalization['height'][1]
    per_frame = noise_mm.std(dim=(1, 2))
    assert torch.all(per_frame < 0.03 * 1.1)
    assert float(per_frame.max()) > 0.01
    # the band-passed relief gets none: white specks there would look like spatter droplets
    assert torch.equal(out[:, 4], x[:, 4])
    # unless asked for
    augmenter, _ = _augmenter(depth_noise_mm=0.03, depth_noise_channels=('height', 'relief'))
    assert float(((augmenter(x)[:, 4] - x[:, 4]) * pre.normalization['relief'][1]).std()) > 0.005


def test_dropout_marks_pixels_invalid_and_clears_their_depth() -> None:
    torch.manual_seed(3)
    augmenter, pre = _augmenter(pixel_dropout=0.3, blob_dropout=0.3)
    x = _spot_batch()
    x[:, 3:5] = 1.0
    out = augmenter(x)
    dropped = out[:, 5] == (0.0 - pre.normalization['valid'][0]) / pre.normalization['valid'][1]
    assert 0 < dropped.float().mean() < 1
    assert torch.all(out[:, 3][dropped] == 0)
    assert torch.all(out[:, 4][dropped] == 0)
    assert torch.all(out[:, 3][~dropped] == 1)


def test_the_bead_height_scale_leaves_the_height_over_the_crown_alone() -> None:
    torch.manual_seed(4)
    pre = Preprocessor(input_size=(64, 80), channels=('height', 'height_rel', 'valid'))
    augmenter = BatchAugmenter(
        pre, AugmentConfig(**{**NOTHING, 'height_scale': (1.5, 2.0), 'pixel_dropout': 0.2})
    )
    x = torch.ones(8, 3, 64, 80)
    out = augmenter(x)
    dropped = out[:, 2] == 0
    assert 0 < dropped.float().mean() < 1
    assert torch.all(out[:, 0][~dropped] >= 1.5)  # millimetres scale with the bead
    assert torch.all(out[:, 1][~dropped] == 1)  # a ratio does not
    assert torch.all(out[:, 1][dropped] == 0)  # and drops out with the rest of the depth
