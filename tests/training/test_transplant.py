"""Defect transplant: droplets and pores are found where they are, cut from frames of their class
only, and set into good welds at their own kind of place (plate, bead crown), which then (and only
then) change class."""

import numpy as np
import pytest
import torch

from training.errors import DatasetError
from training.transplant import DefectTransplant, TransplantConfig, build_defect_bank, find_defects
from weld_core.preprocess import Preprocessor

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SIZE = (96, 128)
BEAD_COLUMNS = slice(52, 76)
CLASSES = ('good', 'porosity', 'spatter', 'gap', 'undercut')
GOOD, POROSITY, SPATTER, GAP = 0, 1, 2, 3


def _frame(
    droplets: list[tuple[int, int]], seed: int, dropout: bool = False, pores: tuple[tuple[int, int], ...] = ()
) -> np.ndarray:
    """A preprocessed frame: a plate 100 mm away with sensor noise, a rounded bead 1.5 mm high and
    24 px wide down the middle, 0.4 mm droplets of 2x2 pixels (bright in colour) at ``droplets`` and
    0.4 mm deep 2x2 pores (dark) at ``pores``."""
    rng = np.random.default_rng(seed)
    height_mm = rng.normal(0.0, 0.02, SIZE)
    across = np.arange(SIZE[1]) - 63.5
    height_mm += np.clip(1.5 * (1 - (across / 12) ** 2), 0, None)[None, :]
    rgb = np.full((*SIZE, 3), 90, np.uint8)
    rgb[:, BEAD_COLUMNS] = 160
    for row, col in droplets:
        height_mm[row : row + 2, col : col + 2] += 0.4
        rgb[row : row + 2, col : col + 2] = 230
    for row, col in pores:
        height_mm[row : row + 2, col : col + 2] -= 0.4
        rgb[row : row + 2, col : col + 2] = 40
    depth_m = 0.1 - height_mm / 1000.0
    if dropout:
        depth_m[:, :20] = 0.0
    pre = Preprocessor(input_size=SIZE, channels=CHANNELS)
    return pre(rgb, depth_m.astype(np.float32))


def _preprocessor() -> Preprocessor:
    return Preprocessor(input_size=SIZE, channels=CHANNELS)


def _matches(found: list[tuple[int, int, float]], squares: list[tuple[int, int]]) -> bool:
    """Each 2x2 square (top-left corner) found once, at one of its own pixels, and nothing else."""
    hits = [
        [(row, col) for row, col, _ in found if 0 <= row - top <= 1 and 0 <= col - left <= 1]
        for top, left in squares
    ]
    return len(found) == len(squares) and all(len(hit) == 1 for hit in hits)


def test_droplets_and_pores_are_found_at_their_own_places_and_not_in_noise() -> None:
    pre, config = _preprocessor(), TransplantConfig()
    x = _frame([(20, 20), (70, 100), (40, 62)], seed=0, pores=((30, 63), (50, 30)))
    # the bead droplet is not spatter, the plate pit is not a pore
    assert _matches(find_defects(x, 'spatter', CHANNELS, pre, config), [(20, 20), (70, 100)])
    assert _matches(find_defects(x, 'porosity', CHANNELS, pre, config), [(30, 63)])
    plain = _frame([], seed=1)
    assert find_defects(plain, 'spatter', CHANNELS, pre, config) == []
    assert find_defects(plain, 'porosity', CHANNELS, pre, config) == []


def test_bank_is_cut_from_frames_of_the_class_only() -> None:
    pre, config = _preprocessor(), TransplantConfig(classes=('spatter', 'porosity'))
    inputs = np.stack(
        [
            _frame([(20, 20)], seed=0),
            _frame([(30, 30), (60, 100)], seed=1),
            _frame([(50, 20)], seed=2, pores=((40, 62),)),
            _frame([], seed=3, pores=((70, 63),)),
        ]
    )
    labels = np.array([SPATTER, SPATTER, GAP, POROSITY])
    bank = build_defect_bank(inputs, labels, CLASSES, CHANNELS, pre, config)
    assert bank.source_frames == {'spatter': 2, 'porosity': 1}
    assert len(bank.deviations['spatter']) == 3 and len(bank.deviations['porosity']) == 1
    half = config.window_px // 2
    for name, sign in (('spatter', 1), ('porosity', -1)):
        windows = bank.deviations[name]
        centre = windows[:, CHANNELS.index('height'), half - 1 : half + 2, half - 1 : half + 2] * sign
        # raised droplets (bright) and sunk pores (dark) over a zero-deviation rim; validity never moves
        assert (centre.max(axis=(1, 2)) > 0.2).all()
        assert ((windows[:, CHANNELS.index('r')] * sign).max(axis=(1, 2)) > 1.0).all()
        assert np.abs(windows[:, :, 0, 0]).max() < 1e-6
        assert not windows[:, CHANNELS.index('valid')].any()


def test_bank_needs_the_depth_channels_and_known_classes() -> None:
    pre = Preprocessor(input_size=SIZE, channels=('r', 'g', 'b', 'valid'))
    with pytest.raises(DatasetError, match='height and relief'):
        build_defect_bank(
            np.zeros((1, 4, *SIZE), np.float32),
            np.array([SPATTER]),
            CLASSES,
            pre.channels,
            pre,
            TransplantConfig(),
        )
    with pytest.raises(DatasetError, match='among spatter, porosity'):
        TransplantConfig(classes=('undercut',))


def _transplant(config: TransplantConfig) -> DefectTransplant:
    pre = _preprocessor()
    frames = np.stack([_frame([(20, 20), (60, 100)], seed=0, pores=((40, 63),))])
    bank = build_defect_bank(frames, np.array([SPATTER]), CLASSES, CHANNELS, pre, TransplantConfig())
    porous = build_defect_bank(
        frames, np.array([POROSITY]), CLASSES, CHANNELS, pre, TransplantConfig(classes=('porosity',))
    )
    bank.deviations.update(porous.deviations)
    bank.source_frames.update(porous.source_frames)
    return DefectTransplant(bank, CLASSES, CHANNELS, pre, config)


def _good_frames(count: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([_frame([], seed=s, dropout=True) for s in range(count)]))


@pytest.mark.parametrize(
    ('defect', 'label', 'site_columns'), [('spatter', SPATTER, None), ('porosity', POROSITY, BEAD_COLUMNS)]
)
def test_good_welds_gain_defects_at_their_places_and_change_class(
    defect: str, label: int, site_columns: slice | None
) -> None:
    transplant = _transplant(TransplantConfig(classes=(defect,), p=1.0, count=(3, 3), strength=(1.0, 1.0)))
    x = _good_frames(4)
    y = torch.tensor([GOOD, GAP, GOOD, SPATTER])
    out, labels = transplant(x, y, torch.Generator().manual_seed(0))
    assert labels.tolist() == [label, GAP, label, SPATTER]
    assert torch.equal(out[[1, 3]], x[[1, 3]])  # other classes untouched
    assert torch.equal(x, _good_frames(4))  # the input batch is not written to
    depth = [CHANNELS.index('height'), CHANNELS.index('relief')]
    pre = _preprocessor()
    for sample in (0, 2):
        changed = (out[sample] != x[sample]).any(dim=0)
        assert (out[sample, depth] != x[sample, depth]).any()
        if site_columns is None:  # droplets: on the plate, never on the bead
            assert not changed[:, BEAD_COLUMNS].any()
        else:  # pores: on the bead only
            outside = torch.ones(SIZE[1], dtype=torch.bool)
            outside[site_columns] = False
            assert not changed[:, outside].any()
        # no height where the sensor gave no data (the colour there is still seen and may change)
        assert torch.equal(out[sample, depth, :, :20], x[sample, depth, :, :20])
        assert torch.equal(out[sample, CHANNELS.index('valid')], x[sample, CHANNELS.index('valid')])
        assert len(find_defects(out[sample].numpy(), defect, CHANNELS, pre, TransplantConfig())) >= 1


def test_share_zero_changes_nothing() -> None:
    transplant = _transplant(TransplantConfig(p=0.0))
    x = torch.from_numpy(np.stack([_frame([], seed=s) for s in range(3)]))
    y = torch.tensor([GOOD, GOOD, GOOD])
    out, labels = transplant(x, y)
    assert torch.equal(out, x) and torch.equal(labels, y)
