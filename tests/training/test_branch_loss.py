"""Per-modality classifiers (``model_kwargs.branch_width`` and ``branch_loss``): each branch's own
cross-entropy joins the training loss; out of training the network is the fused classifier alone."""

import pytest
import torch
from torch import nn

from training.models import CompactFusionNet
from training.module import WeldClassifier

CHANNELS = ('r', 'g', 'b', 'height', 'relief', 'valid')
SMALL = {'stem_width': 4, 'stage_widths': [8, 8, 8, 8], 'patch': 2}


def test_the_branch_stages_replace_the_first_stage_and_their_classifiers_stay_out_of_inference() -> None:
    torch.manual_seed(0)
    net = CompactFusionNet(CHANNELS, 5, **SMALL, branch_width=6).eval()
    assert len(net.branch_stages) == len(net.branch_heads) == 2
    # the first shared stage reads both branches' outputs: 2 x 6 channels
    assert net.features[0][0].in_channels == 12
    x = torch.randn(3, len(CHANNELS), 32, 48)
    fused, own = net.forward_with_branches(x)
    assert fused.shape == (3, 5) and [o.shape for o in own] == [(3, 5), (3, 5)]
    torch.testing.assert_close(net(x), fused)
    # the branch classifiers do not change what the network answers
    with torch.no_grad():
        for head in net.branch_heads:
            head[1].weight.add_(1.0)
    torch.testing.assert_close(net(x), fused)
    # without branch_width: the original layout, no branch classifiers
    plain = CompactFusionNet(CHANNELS, 5, **SMALL)
    assert len(plain.branch_heads) == 0 and plain.features[0][0].in_channels == 8
    assert plain.forward_with_branches(x)[1] == []


def test_a_fused_first_stage_beside_the_branches_feeds_the_shared_stages_too() -> None:
    torch.manual_seed(1)
    net = CompactFusionNet(CHANNELS, 5, **SMALL, branch_width=6, fused_width=5).eval()
    # the fused path reads both stems (2 x 4 channels); the second stage reads 6 + 6 + 5 channels
    assert net.fused_stage is not None and net.fused_stage[0][0].in_channels == 8
    assert net.features[0][0].in_channels == 17
    x = torch.randn(2, len(CHANNELS), 32, 48)
    fused, own = net.forward_with_branches(x)
    torch.testing.assert_close(net(x), fused)
    assert len(own) == 2
    # the fused path counts: changing its weights changes the answer, the branch classifiers' do not
    with torch.no_grad():
        net.fused_stage[0][0].weight.mul_(-1.0)
    assert not torch.allclose(net(x), fused)
    # it reads both modalities: a change in depth alone reaches it
    joint_before = net.fused_stage(torch.cat([net.stems[0](x[:, :3]), net.stems[1](x[:, 3:])], 1))
    y = x.clone()
    y[:, 3:] += 1.0
    joint_after = net.fused_stage(torch.cat([net.stems[0](y[:, :3]), net.stems[1](y[:, 3:])], 1))
    assert not torch.allclose(joint_before, joint_after)


def _model(branch_loss: float) -> WeldClassifier:
    torch.manual_seed(3)
    model = WeldClassifier(
        input_channels=CHANNELS,
        input_size=(32, 48),
        model_kwargs={**SMALL, 'branch_width': 6, 'dropout': 0.0},
        label_smoothing=0.0,
        augment=False,
        branch_loss=branch_loss,
    )
    model.log = lambda *args, **kwargs: None  # no trainer attached
    return model.train()


def test_the_training_loss_adds_the_weighted_mean_of_the_branch_losses_and_trains_their_heads() -> None:
    x = torch.randn(6, len(CHANNELS), 32, 48)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    model = _model(0.5)
    loss = model.training_step((x, y), 0)
    fused, own = model.net.forward_with_branches(x)
    expected = (
        nn.functional.cross_entropy(fused, y)
        + 0.5 * torch.stack([nn.functional.cross_entropy(o, y) for o in own]).mean()
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for head in model.net.branch_heads:
        assert head[1].weight.grad is not None and head[1].weight.grad.abs().sum() > 0
    # off: the fused loss alone, the branch classifiers get no gradient
    plain = _model(0.0)
    plain_loss = plain.training_step((x, y), 0)
    torch.testing.assert_close(plain_loss, nn.functional.cross_entropy(plain.net(x), y))
    plain_loss.backward()
    assert all(head[1].weight.grad is None for head in plain.net.branch_heads)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match='branch_width'):
        CompactFusionNet(CHANNELS, 5, **SMALL, branch_width=-1)
    with pytest.raises(ValueError, match='fused_width'):
        CompactFusionNet(CHANNELS, 5, **SMALL, fused_width=4)
    with pytest.raises(ValueError, match='fused_width'):
        CompactFusionNet(CHANNELS, 5, **SMALL, branch_width=6, fused_width=-2)
    with pytest.raises(ValueError, match='branch_loss'):
        WeldClassifier(input_channels=CHANNELS, input_size=(32, 48), model_kwargs=SMALL, branch_loss=0.5)
    with pytest.raises(ValueError, match='branch_loss'):
        WeldClassifier(
            input_channels=('r', 'g', 'b'),
            input_size=(32, 48),
            model_kwargs={**SMALL, 'branch_width': 6},
            branch_loss=0.5,
        )
    with pytest.raises(ValueError, match='branch_loss'):
        WeldClassifier(
            input_channels=CHANNELS,
            input_size=(32, 48),
            model_kwargs={**SMALL, 'branch_width': 6},
            branch_loss=-1,
        )
