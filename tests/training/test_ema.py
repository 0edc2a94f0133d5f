"""A moving average of the weights (``--model.ema_decay``): what trains, what follows, what is used."""

import pytest
import torch

from training.module import WeldClassifier

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SMALL = {'stem_width': 4, 'stage_widths': [8, 8, 8, 8], 'patch': 2}


def _model(ema_decay: float) -> WeldClassifier:
    torch.manual_seed(0)
    return WeldClassifier(
        input_channels=CHANNELS, input_size=(24, 32), model_kwargs=SMALL, ema_decay=ema_decay
    )


def test_the_optimiser_trains_the_raw_net_and_the_average_follows_it() -> None:
    model = _model(0.99)
    assert model.raw_net is not None
    assert not any(p.requires_grad for p in model.net.parameters())
    before = [p.detach().clone() for p in model.net.parameters()]
    with torch.no_grad():
        for p in model.raw_net.parameters():
            p.add_(1.0)
        for b in model.raw_net.buffers():
            if b.dtype.is_floating_point:
                b.add_(2.0)
    model.on_train_batch_end()
    # step 0: the warm-up horizon keeps 1/10 of the old average (not 0.99 of it)
    for old, new, raw in zip(before, model.net.parameters(), model.raw_net.parameters(), strict=True):
        torch.testing.assert_close(new, 0.1 * old + 0.9 * raw)
    for average, raw in zip(model.net.buffers(), model.raw_net.buffers(), strict=True):
        torch.testing.assert_close(average, raw)  # batch-norm statistics are copied, not averaged
    # training runs the raw net, evaluation the average
    x = torch.randn(2, len(CHANNELS), 24, 32)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.raw_net.parameters())
    assert all(p.grad is None for p in model.net.parameters())
    model.eval()
    torch.testing.assert_close(model(x), model.net(x))


def test_off_by_default_and_bad_decays_refused() -> None:
    model = _model(0.0)
    assert model.raw_net is None and model.trained_net is model.net
    with pytest.raises(ValueError, match='ema_decay'):
        _model(1.0)
