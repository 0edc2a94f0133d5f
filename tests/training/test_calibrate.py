"""The good-class threshold: chosen on validation probabilities, folded into the network's last layer."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from training.calibrate import choose_good_bias, fold_good_bias, rate_upper_bound
from training.data import make_preprocessor
from training.errors import DatasetError
from training.models import CompactFusionNet
from training.module import WeldClassifier

CLASSES = ('good', 'porosity', 'spatter', 'gap', 'undercut')


def _probabilities(targets: np.ndarray, good_scores: np.ndarray) -> np.ndarray:
    """Defects score their own class 0.6; good welds score 'good' ``good_scores``, the rest spatter."""
    probs = np.full((len(targets), len(CLASSES)), 0.05)
    for row, label in enumerate(targets):
        if label == 0:
            probs[row, 0] = good_scores[row]
            probs[row, 2] = 1.0 - good_scores[row] - 0.15
        else:
            probs[row, label] = 0.6
            probs[row, 0] = 0.2
    return probs / probs.sum(1, keepdims=True)


def test_bias_brings_good_fpr_within_the_limit_without_losing_defects() -> None:
    targets = np.array([0] * 20 + [1, 2, 3, 4] * 5)
    # half the good welds lean to 'spatter' by a small margin: arg-max calls them defective
    good_scores = np.where(np.arange(len(targets)) % 2 == 0, 0.55, 0.35)
    cal = choose_good_bias(
        _probabilities(targets, good_scores), targets, CLASSES, max_good_fpr=0.05, confidence=0.0
    )
    assert cal.val_good_fpr_before == pytest.approx(0.5)
    assert cal.val_good_fpr_after <= 0.05
    assert cal.val_macro_recall_after == pytest.approx(1.0)
    assert 0 < cal.good_logit_bias < 1.1  # log(0.6/0.2) would start to swallow the defects


def test_rate_upper_bound_is_clopper_pearson() -> None:
    # none of n seen: (1 - p)^n = 1 - confidence has a closed form
    assert rate_upper_bound(0, 33, 0.8) == pytest.approx(1 - 0.2 ** (1 / 33), rel=1e-9)
    # one of 33 seen: at the bound, seeing at most one has probability 0.2
    bound = rate_upper_bound(1, 33, 0.8)
    assert (1 - bound) ** 33 + 33 * bound * (1 - bound) ** 32 == pytest.approx(0.2, abs=1e-9)
    assert rate_upper_bound(1, 33, 0.0) == pytest.approx(1 / 33)
    assert rate_upper_bound(3, 3, 0.8) == 1.0
    assert rate_upper_bound(0, 33, 0.8) < rate_upper_bound(1, 33, 0.8) < rate_upper_bound(1, 33, 0.95)
    assert rate_upper_bound(2, 100, 0.8) < 0.05 < rate_upper_bound(3, 100, 0.8)


def test_one_flagged_good_weld_in_33_is_not_proof_of_a_5_percent_rate() -> None:
    targets = np.array([0] * 33 + [1, 2, 3, 4] * 8)
    # good welds: one leans to spatter by a little (a small offset keeps it good), one by a lot
    good_scores = np.full(len(targets), 0.7)
    good_scores[0], good_scores[1] = 0.35, 0.1
    probs = _probabilities(targets, good_scores)
    seen = choose_good_bias(probs, targets, CLASSES, max_good_fpr=0.05, confidence=0.0)
    sure = choose_good_bias(probs, targets, CLASSES, max_good_fpr=0.05, confidence=0.8)
    # as seen, 1 of 33 flagged (3 %) passes; 80 % sure of <= 5 % needs none of 33 flagged
    assert seen.val_good_fpr_after == pytest.approx(1 / 33)
    assert sure.val_good_fpr_after == 0.0 and sure.good_logit_bias > seen.good_logit_bias
    assert (
        sure.val_good_fpr_bound == pytest.approx(rate_upper_bound(0, 33, 0.8)) and sure.val_good_frames == 33
    )
    # with too few good welds to be that sure, the fewest flagged is the best it can do
    few = np.array([0] * 10 + [1, 2, 3, 4] * 3)
    short = choose_good_bias(_probabilities(few, np.full(len(few), 0.7)), few, CLASSES, confidence=0.8)
    assert short.val_good_fpr_after == 0.0 and 'fewest good welds flagged' in short.reason


def test_no_offset_reaches_the_limit_takes_the_lowest_fpr() -> None:
    targets = np.array([0, 0, 1, 1])
    probs = np.array([[0.0, 1.0, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0.1, 0.9, 0, 0, 0], [0.1, 0.9, 0, 0, 0]])
    cal = choose_good_bias(probs, targets, CLASSES, max_good_fpr=0.0)
    assert cal.val_good_fpr_after == pytest.approx(0.5)
    assert 'no offset' in cal.reason


def test_split_without_good_welds_is_left_alone() -> None:
    targets = np.array([1, 2, 3])
    cal = choose_good_bias(np.eye(5)[targets], targets, CLASSES)
    assert cal.good_logit_bias == 0.0
    with pytest.raises(ValueError, match='good'):
        choose_good_bias(np.eye(4)[[0, 1]], np.array([0, 1]), ('a', 'b', 'c', 'd'))


def test_folded_bias_moves_only_the_good_logit() -> None:
    torch.manual_seed(0)
    net = CompactFusionNet(
        ('r', 'g', 'b', 'height', 'relief', 'valid'), 5, stem_width=4, stage_widths=[8, 8], patch=2
    ).eval()
    x = torch.randn(3, 6, 32, 48)
    with torch.no_grad():
        before = net(x)
        fold_good_bias(net, CLASSES, 1.5)
        after = net(x)
    assert torch.allclose(after[:, 0], before[:, 0] + 1.5, atol=1e-5)
    assert torch.allclose(after[:, 1:], before[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match='linear layer'):
        fold_good_bias(nn.Sequential(nn.Conv2d(3, 5, 1)), CLASSES, 1.0)


def _windowed(**changes: object) -> WeldClassifier:
    """A small RGB module on 40x48 frames that trains on 24x32 windows."""
    settings: dict[str, object] = {
        'input_channels': ('r', 'g', 'b'),
        'input_size': (40, 48),
        'stem_width': 4,
        'stage_widths': (8, 8),
        'train_crop': (24, 32),
    }
    return WeldClassifier(**{**settings, **changes})


def test_training_windows_and_transpose() -> None:
    module = _windowed(transpose_p=1.0)
    x = torch.arange(2 * 3 * 40 * 48, dtype=torch.float32).view(2, 3, 40, 48)
    out = module._crop_and_turn(x)
    assert out.shape == (2, 3, 32, 24)
    # a window of the frame, turned: its first row is a column of the original
    top, left = (
        int((x[0, 0] == out[0, 0, 0, 0]).nonzero()[0, 0]),
        int((x[0, 0] == out[0, 0, 0, 0]).nonzero()[0, 1]),
    )
    assert torch.equal(out[:, :, :, 0], x[:, :, top, left : left + 32])
    whole = WeldClassifier(
        input_channels=('r', 'g', 'b'), input_size=(40, 48), train_crop=(64, 64), transpose_p=0.0
    )
    assert whole._crop_and_turn(x).shape == x.shape


def test_the_last_epochs_train_on_whole_frames() -> None:
    module = _windowed(transpose_p=0.0, whole_frame_share=0.25)
    x = torch.zeros(2, 3, 40, 48)
    shapes = []
    for epoch in range(10):  # the epoch a trainer would report (a stand-in: no fit needed)
        module._trainer = SimpleNamespace(max_epochs=10, current_epoch=epoch)
        shapes.append(tuple(module._crop_and_turn(x).shape[2:]))
    # ceil(0.25 x 10) = 3 epochs at the end see the whole frame, the ones before a window
    assert shapes == [(24, 32)] * 7 + [(40, 48)] * 3


def test_preprocess_settings_are_checked() -> None:
    pre = make_preprocessor(['rgb', 'relief'], [48, 64], {'relief_denoise_px': 0.8, 'relief_sigma_px': 3})
    assert pre.relief_denoise_px == 0.8 and pre.to_metadata()['relief_sigma_px'] == '3'
    with pytest.raises(DatasetError, match='unknown preprocess setting'):
        make_preprocessor(['rgb'], [48, 64], {'relief_sigma': 3})
