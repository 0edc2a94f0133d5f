"""The classifier networks (plain ``nn.Module``s; the LightningModule wraps them).

- :class:`CompactFusionNet` (default): a colour and a depth stem fused at the input resolution,
  then 3x3 stages. Sized for the board's CPU (under 0.15 GFLOP per frame pair).
- :class:`ResNetFusion`: torchvision ResNet18/ResNet50 with separate colour and depth stems fused
  after the first block (the original design), for comparison and for accelerator boards.
  Pretrained weights are only ever read from a local file.

:func:`view_average` runs a network on several mirror images of the frame and averages the logits
(test-time augmentation over the flips and transposes the training already shows it).

Both take the preprocessed (C, H, W) input of :class:`weld_core.preprocess.Preprocessor`; which
channels are colour and which are depth comes from the channel names, so RGB-only and depth-only
ablations are the same classes with fewer channels.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from weld_core.preprocess import COLOUR_CHANNELS, DEPTH_CHANNELS


def _split_indices(channels: Sequence[str]) -> tuple[list[int], list[int]]:
    rgb = [i for i, name in enumerate(channels) if name in COLOUR_CHANNELS]
    depth = [i for i, name in enumerate(channels) if name in DEPTH_CHANNELS]
    return rgb, depth


def drop_modalities(parts: list[torch.Tensor], rate: float) -> list[torch.Tensor]:
    """Training only: zero one modality's stem output in a random ``rate`` of the frames.

    Each dropped frame loses one branch chosen at random (never all of them), so the layers after
    the fusion learn to classify from colour alone and from depth alone as well as from both: the
    cue that is easier to fit in one modality cannot starve the other's learning (modality dropout).
    Out of training the network always sees every branch; the exported graph has no trace of it.
    """
    if rate <= 0.0 or len(parts) < 2:
        return parts
    frames = parts[0].shape[0]
    device = parts[0].device
    dropped = torch.rand(frames, device=device) < rate
    which = torch.randint(0, len(parts), (frames,), device=device)
    return [
        part * (~(dropped & (which == number))).to(part.dtype)[:, None, None, None]
        for number, part in enumerate(parts)
    ]


def _check_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f'modality_dropout must be in [0, 1), not {rate!r}')
    return float(rate)


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, padding: int | None = None
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, kernel, stride, kernel // 2 if padding is None else padding, groups=groups, bias=False
        ),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _stage(cin: int, cout: int) -> nn.Sequential:
    """One stage of the compact net: a stride-2 3x3 convolution then a 3x3 one."""
    return nn.Sequential(_conv_bn(cin, cout, 3, 2), _conv_bn(cout, cout, 3, 1))


class CompactFusionNet(nn.Module):
    """Mid-fusion RGB-D classifier for the board's CPU.

    A colour stem and a depth stem (3x3 convolutions at the input resolution, or a ``patch`` x
    ``patch`` stride-``patch`` projection for larger inputs) are concatenated and followed by plain
    3x3 stages, each halving the resolution: dense 3x3 convolutions train and run faster on CPUs
    than depthwise ones at these widths. Global average and max pooling feed the classifier, max so
    that one small defect is not averaged away by an otherwise clean frame. ``modality_dropout``:
    see :func:`drop_modalities` (0 = off).

    ``branch_width`` (0 = off): the first stage runs on each modality apart, ``branch_width``
    channels each, in place of ``stage_widths[0]`` on the fused stems; each branch then also has a
    classifier of its own on its pooled features (:meth:`forward_with_branches`), which training can
    add to the loss (``WeldClassifier(branch_loss=...)``) so that each modality learns its own cues
    rather than leaving the harder one to the other (per-modality auxiliary losses). Out of training
    the branch classifiers are not used: the exported graph has no trace of them.

    ``fused_width`` (0 = off, needs ``branch_width``): the first stage also keeps a path on the fused
    stems, ``fused_width`` channels, beside the per-modality ones; the second stage reads all three
    (cues that live in colour and depth together and cues of one modality alone).
    """

    def __init__(
        self,
        channels: Sequence[str],
        num_classes: int,
        stem_width: int = 16,
        stage_widths: Sequence[int] = (24, 48, 96, 160),
        patch: int = 1,
        dropout: float = 0.2,
        modality_dropout: float = 0.0,
        branch_width: int = 0,
        fused_width: int = 0,
    ) -> None:
        super().__init__()
        self.modality_dropout = _check_rate(modality_dropout)
        if branch_width < 0:
            raise ValueError(f'branch_width must be >= 0, not {branch_width!r}')
        if fused_width < 0 or (fused_width and not branch_width):
            raise ValueError(f'fused_width must be >= 0 and needs branch_width > 0, not {fused_width!r}')
        rgb_idx, depth_idx = _split_indices(channels)
        branches = [idx for idx in (rgb_idx, depth_idx) if idx]
        if not branches:
            raise ValueError(f'no colour or depth channel in {list(channels)}')
        kernel = 3 if patch == 1 else patch
        self.stems = nn.ModuleList(
            _conv_bn(len(idx), stem_width, kernel, patch, padding=1 if patch == 1 else 0) for idx in branches
        )
        for number, idx in enumerate(branches):
            self.register_buffer(f'branch_{number}', torch.tensor(idx), persistent=False)
        self.branch_stages = nn.ModuleList()
        self.branch_heads = nn.ModuleList()
        self.fused_stage: nn.Module | None = None
        shared = list(stage_widths)
        cin = stem_width * len(branches)
        if branch_width:
            if not shared:
                raise ValueError('branch_width needs at least one stage in stage_widths')
            for _ in branches:
                self.branch_stages.append(_stage(stem_width, branch_width))
                self.branch_heads.append(
                    nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * branch_width, num_classes))
                )
            if fused_width:
                self.fused_stage = _stage(cin, fused_width)
            shared, cin = shared[1:], branch_width * len(branches) + fused_width
        layers: list[nn.Module] = []
        for cout in shared:
            layers += _stage(cin, cout)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, num_classes))

    @staticmethod
    def _pool(features: torch.Tensor) -> torch.Tensor:
        return torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)

    def _branches(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The per-modality feature maps the shared stages read, and the fused first stage's (if any)."""
        parts = [stem(x[:, getattr(self, f'branch_{n}')]) for n, stem in enumerate(self.stems)]
        if not self.branch_stages:
            return parts, []
        joint = [self.fused_stage(torch.cat(parts, 1))] if self.fused_stage is not None else []
        return [stage(part) for stage, part in zip(self.branch_stages, parts, strict=True)], joint

    def _fused(self, parts: list[torch.Tensor], joint: list[torch.Tensor]) -> torch.Tensor:
        if self.training:
            parts = drop_modalities(parts, self.modality_dropout)
        parts = parts + joint
        fused = self.features(torch.cat(parts, 1) if len(parts) > 1 else parts[0])
        return self.head(self._pool(fused))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused(*self._branches(x))

    def forward_with_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits of the fused classifier and of each branch's own (none without ``branch_width``)."""
        parts, joint = self._branches(x)
        own = (
            [head(self._pool(part)) for head, part in zip(self.branch_heads, parts, strict=True)]
            if self.branch_heads
            else []
        )
        return self._fused(parts, joint), own


class ResNetFusion(nn.Module):
    """torchvision ResNet with a colour stem and a depth stem fused after the first stage.

    ``modality_dropout``: see :func:`drop_modalities` (0 = off).
    """

    def __init__(
        self,
        channels: Sequence[str],
        num_classes: int,
        arch: str = 'resnet18',
        pretrained_path: str | None = None,
        dropout: float = 0.2,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from torchvision import models

        self.modality_dropout = _check_rate(modality_dropout)
        builders = {'resnet18': models.resnet18, 'resnet50': models.resnet50}
        if arch not in builders:
            raise ValueError(f'arch must be one of {", ".join(builders)}, got {arch!r}')
        self.rgb_idx, self.depth_idx = _split_indices(channels)
        branches = [idx for idx in (self.rgb_idx, self.depth_idx) if idx]
        if not branches:
            raise ValueError(f'no colour or depth channel in {list(channels)}')

        def backbone() -> nn.Module:
            net = builders[arch](weights=None)
            if pretrained_path:
                path = Path(pretrained_path)
                if not path.is_file():
                    raise FileNotFoundError(
                        f'pretrained weights {path} not found (they are never downloaded)'
                    )
                net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
            return net

        trunk = backbone()
        stems = []
        for idx in branches:
            net = backbone()
            conv = net.conv1
            new_conv = nn.Conv2d(len(idx), 64, 7, 2, 3, bias=False)
            with torch.no_grad():
                mean_weight = conv.weight.mean(1, keepdim=True)
                new_conv.weight.copy_(mean_weight.repeat(1, len(idx), 1, 1) * (3.0 / len(idx)))
            stems.append(nn.Sequential(new_conv, net.bn1, net.relu, net.maxpool, net.layer1))
        self.stems = nn.ModuleList(stems)
        stage_channels = 64 if arch == 'resnet18' else 256
        self.fuse = (
            nn.Sequential(
                nn.Conv2d(stage_channels * len(branches), stage_channels, 1, bias=False),
                nn.BatchNorm2d(stage_channels),
                nn.ReLU(inplace=True),
            )
            if len(branches) > 1
            else nn.Identity()
        )
        self.trunk = nn.Sequential(trunk.layer2, trunk.layer3, trunk.layer4)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(trunk.fc.in_features, num_classes))
        for number, idx in enumerate(branches):
            self.register_buffer(f'branch_{number}', torch.tensor(idx), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [stem(x[:, getattr(self, f'branch_{n}')]) for n, stem in enumerate(self.stems)]
        if self.training:
            parts = drop_modalities(parts, self.modality_dropout)
        fused = self.fuse(torch.cat(parts, 1)) if len(parts) > 1 else parts[0]
        return self.head(self.trunk(fused).mean((2, 3)))


def build_model(name: str, channels: Sequence[str], num_classes: int, **kwargs: object) -> nn.Module:
    """'compact' | 'resnet18' | 'resnet50' -> the network for these channels and classes."""
    if name == 'compact':
        return CompactFusionNet(channels, num_classes, **kwargs)  # type: ignore[arg-type]
    if name in ('resnet18', 'resnet50'):
        return ResNetFusion(channels, num_classes, arch=name, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f'unknown model {name!r}: use compact, resnet18 or resnet50')


# the symmetries of the frame in the order views are added: as it is, mirrored left-right, up-down,
# both (a half turn); then the same four transposed (quarter turns and diagonal mirrors)
VIEW_COUNTS = (1, 2, 4, 8)
_FLIPS = ((), (3,), (2,), (2, 3))


def view_average(net: nn.Module, x: torch.Tensor, views: int) -> torch.Tensor:
    """Mean of ``net``'s logits over the first ``views`` of :data:`VIEW_COUNTS`' symmetries of ``x``.

    The training augmentation flips and transposes every frame, so each view is one the network was
    taught to read; averaging their logits evens out where a 1-2 px droplet falls on the stride-2
    grid. Views of one shape go through the network as one batch. Adding a constant to a class's
    logit in every view adds it to the mean (the folded good-class offset stays exact).
    """
    if views not in VIEW_COUNTS:
        raise ValueError(f'views must be one of {VIEW_COUNTS}, not {views}')
    if views == 1:
        return net(x)
    flips = _FLIPS[: min(views, 4)]
    batches = [torch.cat([x.flip(dims) if dims else x for dims in flips])]
    if views == 8:
        batches.append(batches[0].transpose(2, 3))
    logits = torch.cat([net(batch) for batch in batches])
    return logits.reshape(views, -1, logits.shape[1]).mean(0)


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
