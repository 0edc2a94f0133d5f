"""The classifier network (a plain ``nn.Module``; the LightningModule wraps it).

:class:`CompactFusionNet`: a colour and a depth stem fused at the input resolution, then 3x3
stages, sized for the board's CPU (under 0.15 GFLOP per frame pair at 240x320). It takes the
preprocessed (C, H, W) input of :class:`weld_core.preprocess.Preprocessor`; which channels are colour
and which are depth comes from the channel names, so the colour-only and depth-only configs are the
same network with one stem.
"""

from collections.abc import Sequence

import torch
from torch import nn

from weld_core.preprocess import COLOUR_CHANNELS, DEPTH_CHANNELS


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int | None = None
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if padding is None else padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _stage(cin: int, cout: int) -> nn.Sequential:
    """One stage: a stride-2 3x3 convolution then a 3x3 one."""
    return nn.Sequential(_conv_bn(cin, cout, 3, 2), _conv_bn(cout, cout, 3, 1))


class CompactFusionNet(nn.Module):
    """Mid-fusion RGB-D classifier for the board's CPU.

    A colour stem and a depth stem (a ``patch`` x ``patch`` stride-``patch`` projection, or 3x3
    convolutions at the input resolution for ``patch`` 1) are concatenated and followed by plain
    3x3 stages, each halving the resolution: dense 3x3 convolutions train and run faster on CPUs
    than depthwise ones at these widths. The classifier reads the last stage's global average and
    the global maximum of every stage: one pore or droplet a few pixels wide is the strongest
    response of an early stage, where it is neither averaged away by an otherwise clean frame nor
    has to survive every later stage, and its detector gets the loss's gradient directly.
    """

    def __init__(
        self,
        channels: Sequence[str],
        num_classes: int,
        stem_width: int = 12,
        stage_widths: Sequence[int] = (16, 32, 56, 96),
        patch: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        branches = [
            [i for i, name in enumerate(channels) if name in group]
            for group in (COLOUR_CHANNELS, DEPTH_CHANNELS)
        ]
        branches = [indices for indices in branches if indices]
        if not branches:
            raise ValueError(f'no colour or depth channel in {list(channels)}')
        kernel = 3 if patch == 1 else patch
        self.stems = nn.ModuleList(
            _conv_bn(len(idx), stem_width, kernel, patch, padding=1 if patch == 1 else 0) for idx in branches
        )
        for number, idx in enumerate(branches):
            self.register_buffer(f'branch_{number}', torch.tensor(idx), persistent=False)
        self.stages = nn.ModuleList()
        cin = stem_width * len(branches)
        for cout in stage_widths:
            self.stages.append(_stage(cin, cout))
            cin = cout
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin + sum(stage_widths), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [stem(x[:, getattr(self, f'branch_{n}')]) for n, stem in enumerate(self.stems)]
        x = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        peaks = []
        for stage in self.stages:
            x = stage(x)
            peaks.append(x.amax((2, 3)))
        return self.head(torch.cat([x.mean((2, 3)), *peaks], 1))


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Multiply-accumulates of Conv2d and Linear layers for one input; FLOPs = 2 x MACs."""
    macs = 0

    def conv_hook(module: nn.Conv2d, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        macs += output.numel() // output.shape[0] * kernel

    def linear_hook(module: nn.Linear, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() // output.shape[0] * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return {
        'gmac': macs / 1e9,
        'gflop': 2 * macs / 1e9,
        'params_m': params / 1e6,
        'size_mb': params * 4 / 1e6,
    }
