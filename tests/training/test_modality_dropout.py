"""Modality dropout (``model_kwargs.modality_dropout``): in training one branch's stem output is
zeroed in a random share of the frames; out of training the network is unchanged."""

import pytest
import torch

from training.models import CompactFusionNet, ResNetFusion, drop_modalities

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SMALL = {'stem_width': 4, 'stage_widths': [8, 8, 8, 8], 'patch': 2}


def test_a_dropped_frame_loses_exactly_one_branch_and_the_rate_is_kept() -> None:
    torch.manual_seed(0)
    parts = [torch.rand(4000, 3, 2, 2) + 0.1, torch.rand(4000, 5, 2, 2) + 0.1]
    out = drop_modalities(parts, 0.4)
    zeroed = torch.stack([(part.flatten(1) == 0).all(1) for part in out])
    # never both branches of one frame; the others untouched
    assert not torch.any(zeroed.all(0))
    kept = ~zeroed
    for part, new, keep in zip(parts, out, kept, strict=True):
        torch.testing.assert_close(new[keep], part[keep])
    share = zeroed.any(0).float().mean().item()
    assert 0.37 < share < 0.43
    # each branch about half of the dropped frames
    assert 0.17 < zeroed[0].float().mean().item() < 0.23
    # off, or one branch only: untouched
    assert drop_modalities(parts, 0.0) is parts
    assert drop_modalities(parts[:1], 0.5)[0] is parts[0]


def test_the_network_out_of_training_is_unchanged_and_training_differs() -> None:
    torch.manual_seed(1)
    plain = CompactFusionNet(CHANNELS, 5, **SMALL)
    dropping = CompactFusionNet(CHANNELS, 5, **SMALL, modality_dropout=0.9)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(16, len(CHANNELS), 24, 32)
    plain.eval()
    dropping.eval()
    torch.testing.assert_close(dropping(x), plain(x))
    plain.train()
    dropping.train()
    plain.head[0].p = dropping.head[0].p = 0.0  # only the modality dropout differs
    torch.manual_seed(2)
    assert not torch.allclose(dropping(x), plain(x))


def test_bad_rates_are_refused_for_both_networks() -> None:
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match='modality_dropout'):
            CompactFusionNet(CHANNELS, 5, **SMALL, modality_dropout=rate)
    with pytest.raises(ValueError, match='modality_dropout'):
        ResNetFusion(CHANNELS, 5, modality_dropout=1.5)
