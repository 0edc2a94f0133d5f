"""The training loss's options: the loudest frames of each batch left out (``--model.drop_loudest``)
and focal weighting (``--model.focal_gamma``)."""

import pytest
import torch
from torch.nn import functional

from training.module import WeldClassifier

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SMALL = {'stem_width': 4, 'stage_widths': [8, 8, 8, 8], 'patch': 2}


def _model(**kwargs: float) -> WeldClassifier:
    return WeldClassifier(input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL, **kwargs)


def test_the_loudest_frames_are_left_out_once_the_epoch_is_reached() -> None:
    torch.manual_seed(0)
    logits = torch.randn(10, 5) * 3
    y = torch.randint(0, 5, (10,))
    per_frame = functional.cross_entropy(logits, y, label_smoothing=0.05, reduction='none')
    quietest_eight = per_frame.sort().values[:8].mean()

    dropping = _model(drop_loudest=0.2, drop_from_epoch=0)
    torch.testing.assert_close(dropping._training_loss(logits, y), quietest_eight)
    # gradients reach only the frames kept
    leaf = logits.clone().requires_grad_(True)
    dropping._training_loss(leaf, y).backward()
    loudest_two = per_frame.argsort()[8:]
    assert torch.all(leaf.grad[loudest_two] == 0)
    assert torch.count_nonzero(leaf.grad.abs().sum(1)) == 8

    # before drop_from_epoch (epoch 0 < 3) and when off: the plain mean over every frame
    plain = per_frame.mean()
    torch.testing.assert_close(_model(drop_loudest=0.2, drop_from_epoch=3)._training_loss(logits, y), plain)
    torch.testing.assert_close(_model()._training_loss(logits, y), plain)


def test_a_batch_keeps_at_least_one_frame_and_bad_fractions_are_refused() -> None:
    logits, y = torch.randn(2, 5), torch.tensor([0, 3])
    per_frame = functional.cross_entropy(logits, y, label_smoothing=0.05, reduction='none')
    torch.testing.assert_close(
        _model(drop_loudest=0.9, drop_from_epoch=0)._training_loss(logits, y), per_frame.min()
    )
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match='drop_loudest'):
            _model(drop_loudest=bad)


def test_focal_weighting_counts_the_frames_already_right_less() -> None:
    torch.manual_seed(1)
    logits = torch.randn(8, 5) * 2
    y = torch.randint(0, 5, (8,))
    per_frame = functional.cross_entropy(logits, y, label_smoothing=0.05, reduction='none')
    right = logits.softmax(1)[torch.arange(8), y]
    focal = _model(focal_gamma=2.0)._training_loss(logits, y)
    torch.testing.assert_close(focal, ((1 - right) ** 2 * per_frame).mean())
    assert focal < per_frame.mean()
    # with drop_loudest as well: the loudest of the focal-weighed losses are left out
    both = _model(focal_gamma=2.0, drop_loudest=0.25, drop_from_epoch=0)._training_loss(logits, y)
    torch.testing.assert_close(both, ((1 - right) ** 2 * per_frame).sort().values[:6].mean())
    with pytest.raises(ValueError, match='focal_gamma'):
        _model(focal_gamma=-1.0)


def test_with_class_weights_the_loss_is_normalised_as_the_plain_one() -> None:
    torch.manual_seed(2)
    logits = torch.randn(10, 5) * 2
    y = torch.randint(0, 5, (10,))
    weights = [1.0, 3.0, 0.5, 2.0, 1.5]
    plain = _model(class_weights=weights)
    # a fraction too small to leave a frame out of ten: the same figure as the plain weighted loss
    keeping_all = _model(class_weights=weights, drop_loudest=0.01, drop_from_epoch=0)
    torch.testing.assert_close(keeping_all._training_loss(logits, y), plain._training_loss(logits, y))
    # two left out: the kept frames' weighted losses over the kept frames' weights
    w = torch.tensor(weights)
    per_frame = functional.cross_entropy(logits, y, weight=w, label_smoothing=0.05, reduction='none')
    kept = per_frame.argsort()[:8]
    dropping = _model(class_weights=weights, drop_loudest=0.2, drop_from_epoch=0)
    torch.testing.assert_close(dropping._training_loss(logits, y), per_frame[kept].sum() / w[y[kept]].sum())
