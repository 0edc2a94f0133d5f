"""The LightningModule: loss, optimiser, augmentation and torchmetrics around a plain network."""

import copy
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

from training.augment import AugmentConfig, BatchAugmenter
from training.data import make_preprocessor
from training.errors import TrainingError
from training.models import VIEW_COUNTS, build_model, count_flops, view_average


class InitWeightsError(TrainingError, ValueError):
    """The weights a fit was asked to start from are missing, unreadable or of another network."""


def load_initial_weights(net: nn.Module, path: str | Path) -> None:
    """Start ``net`` from the network weights of a checkpoint (``net.*`` of a Lightning one) or a state dict.

    Local files only (weights are never downloaded); every tensor must match this network's layout.
    """
    file = Path(path)
    if not file.is_file():
        raise InitWeightsError(f'initial weights {file} not found (weights are never downloaded)')
    try:
        blob = torch.load(file, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or foreign file
        raise InitWeightsError(f'{file}: not a readable PyTorch checkpoint ({exc})') from exc
    state = blob.get('state_dict', blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state:
        raise InitWeightsError(f'{file}: holds no state dict of network weights')
    prefixed = {key[len('net.') :]: value for key, value in state.items() if key.startswith('net.')}
    try:
        net.load_state_dict(prefixed or state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InitWeightsError(
            f'{file}: its weights do not fit this network '
            f'(the same model, model_kwargs and channels are needed): {first}'
        ) from exc


class WeldClassifier(pl.LightningModule):
    """Weld-defect classifier over preprocessed RGB-D inputs.

    ``input_channels``, ``class_names``, ``input_size`` and ``preprocess`` are linked from the data
    module by the CLI; ``class_weights`` (inverse class frequency of the training split) too.
    ``eval_views`` (1, 2, 4 or 8): mirror images averaged out of training (:func:`view_average`);
    it multiplies the cost per frame pair and changes no weight (``training.crossval`` predicts its
    finished folds again, without training, when only the count changed).
    ``ema_decay`` (0 = off): the optimiser trains ``raw_net`` and ``net`` follows it as an
    exponential moving average of its weights (batch-norm statistics copied); ``net`` is what
    validation, checkpoint selection, calibration and export see.
    ``drop_loudest`` (0 = off): from epoch ``drop_from_epoch`` on, that fraction of each training
    batch, the frames with the highest loss, is left out of the loss: frames labelled with a
    defect the sensor does not show (a simulator's faintest severities) stop pulling the network
    towards memorising them once the visible ones are learnt (docs/bringup.md).
    ``focal_gamma`` (0 = off): each frame's loss weighed by (1 - p)^gamma, p the probability the
    network gives its label (focal loss), so the frames it already gets right count less.
    ``branch_loss`` (0 = off): the cross-entropy of each modality's own classifier (the compact
    net's ``branch_width``) added to the loss with this weight, averaged over the branches, so that
    colour and depth each learn the cues they carry (docs/training.md).
    """

    def __init__(
        self,
        input_channels: tuple[str, ...] = (
            'r',
            'g',
            'b',
            'height',
            'relief_min',
            'relief_max',
            'pits',
            'bumps',
            'valid',
        ),
        class_names: tuple[str, ...] = ('good', 'porosity', 'spatter', 'gap', 'undercut'),
        input_size: tuple[int, int] = (60, 80),
        preprocess: dict[str, float] | None = None,
        class_weights: list[float] | None = None,
        model_name: str = 'compact',
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        label_smoothing: float = 0.05,
        warmup_epochs: float = 1.0,
        augment: bool = True,
        augment_config: dict[str, Any] | None = None,
        train_crop: tuple[int, int] | None = None,
        transpose_p: float = 0.0,
        init_weights: str | None = None,
        eval_views: int = 1,
        ema_decay: float = 0.0,
        drop_loudest: float = 0.0,
        drop_from_epoch: int = 10,
        focal_gamma: float = 0.0,
        branch_loss: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if eval_views not in VIEW_COUNTS:
            raise ValueError(f'eval_views must be one of {VIEW_COUNTS}, not {eval_views!r}')
        self.channels = tuple(input_channels)
        self.class_names = tuple(class_names)
        self.net = build_model(model_name, self.channels, len(self.class_names), **(model_kwargs or {}))
        if init_weights:
            load_initial_weights(self.net, init_weights)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f'ema_decay must be in [0, 1), not {ema_decay!r}')
        self.raw_net: nn.Module | None = None
        if ema_decay:
            self.raw_net = copy.deepcopy(self.net)
            self.net.requires_grad_(False)
        if branch_loss < 0.0:
            raise ValueError(f'branch_loss must be >= 0, not {branch_loss!r}')
        if branch_loss and len(getattr(self.net, 'branch_heads', ())) < 2:
            raise ValueError(
                'branch_loss needs a classifier per modality: the compact net with colour and depth '
                'channels and model_kwargs.branch_width > 0'
            )
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
        if not 0.0 <= drop_loudest < 1.0:
            raise ValueError(f'drop_loudest must be in [0, 1), not {drop_loudest!r}')
        if focal_gamma < 0.0:
            raise ValueError(f'focal_gamma must be >= 0, not {focal_gamma!r}')
        self.frame_loss = nn.CrossEntropyLoss(
            weight=weights, label_smoothing=label_smoothing, reduction='none'
        )
        preprocessor = make_preprocessor(self.channels, input_size, preprocess)
        self.augmenter = (
            BatchAugmenter(preprocessor, AugmentConfig(**(augment_config or {}))) if augment else None
        )
        num = len(self.class_names)
        metrics = MetricCollection(
            {
                'acc': MulticlassAccuracy(num_classes=num, average='micro'),
                'macro_recall': MulticlassRecall(num_classes=num, average='macro'),
            }
        )
        self.val_metrics = metrics.clone(prefix='val/')
        # per class as well: the subtle classes are learnt late and a run can miss one entirely
        # while the macro figure still looks middling (docs/training.md, run-to-run spread)
        self.val_class_recall = MulticlassRecall(num_classes=num, average='none')
        self.test_metrics = metrics.clone(prefix='test/')
        self.example_input_array = torch.zeros(1, len(self.channels), *input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; out of training, averaged over ``eval_views`` mirror images (:func:`view_average`).

        Validation, checkpoint selection, the good-class threshold, cross-validation and the
        exported ONNX graph all see the same averaged logits.
        """
        if self.training:
            return self.trained_net(x)
        return view_average(self.net, x, self.views)

    @property
    def trained_net(self) -> nn.Module:
        """The network the optimiser updates: ``raw_net`` with a moving average, else ``net``."""
        return self.raw_net if self.raw_net is not None else self.net

    @property
    def views(self) -> int:
        return int(self.hparams.get('eval_views') or 1)

    def _crop_and_turn(self, x: torch.Tensor) -> torch.Tensor:
        """One random window of ``train_crop`` for the batch, then a transpose with ``transpose_p``.

        The networks are fully convolutional with global pooling, so they train on windows (about
        half the pixels: half the CPU time per step) and run on the whole frame; the transpose
        (a 90 degree turn plus a flip) shows seams in every orientation.
        """
        crop = self.hparams.get('train_crop')
        if crop:
            height, width = min(int(crop[0]), x.shape[2]), min(int(crop[1]), x.shape[3])
            top = int(torch.randint(0, x.shape[2] - height + 1, ()))
            left = int(torch.randint(0, x.shape[3] - width + 1, ()))
            x = x[:, :, top : top + height, left : left + width]
        if self.hparams.get('transpose_p') and float(torch.rand(())) < float(self.hparams['transpose_p']):
            x = x.transpose(2, 3)
        return x

    def complexity(self) -> dict[str, float]:
        """Per frame pair, as the model runs out of training (every view counted)."""
        figures = count_flops(self.net, (len(self.channels), *self.hparams['input_size']))
        figures['gmac'] *= self.views
        figures['gflop'] *= self.views
        return figures

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        x = self._crop_and_turn(x)
        x = self.augmenter(x) if self.augmenter is not None else x.float()
        weight = float(self.hparams.get('branch_loss') or 0.0)
        if weight:
            logits, own = self.trained_net.forward_with_branches(x)
            branches = torch.stack([self.loss(branch, y) for branch in own]).mean()
            self.log('train/branch_loss', branches, on_step=False, on_epoch=True, batch_size=len(y))
            loss = self._training_loss(logits, y) + weight * branches
        else:
            loss = self._training_loss(self(x), y)
        self.log('train/loss', loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

    def _training_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        drop = float(self.hparams.get('drop_loudest') or 0.0)
        if drop and self.current_epoch < int(self.hparams.get('drop_from_epoch') or 0):
            drop = 0.0
        gamma = float(self.hparams.get('focal_gamma') or 0.0)
        if not drop and not gamma:
            return self.loss(logits, y)
        losses = self.frame_loss(logits, y)
        if gamma:
            # focal loss: frames the network already gets right weigh (1 - p)^gamma as much
            right = logits.softmax(1).gather(1, y[:, None])[:, 0]
            losses = (1.0 - right) ** gamma * losses
        keep = max(1, round(len(losses) * (1.0 - drop)))
        kept = losses.topk(keep, largest=False)
        if self.frame_loss.weight is None:
            return kept.values.mean()
        # class weights: divided by the kept frames' weights, as the plain loss divides by the batch's
        return kept.values.sum() / self.frame_loss.weight[y[kept.indices]].sum()

    def on_train_batch_end(self, *_: Any) -> None:
        if self.raw_net is None:
            return
        step = self.global_step
        # a short horizon at the start, so the average does not drag the initial weights along
        keep = min(float(self.hparams['ema_decay']), (1 + step) / (10 + step))
        with torch.no_grad():
            for average, current in zip(self.net.parameters(), self.raw_net.parameters(), strict=True):
                average.lerp_(current, 1.0 - keep)
            for average, current in zip(self.net.buffers(), self.raw_net.buffers(), strict=True):
                average.copy_(current)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x.float())
        self.log('val/loss', self.loss(logits, y), on_epoch=True, batch_size=len(y))
        self.val_metrics.update(logits, y)
        self.val_class_recall.update(logits, y)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        recalls = self.val_class_recall.compute()
        self.val_class_recall.reset()
        for name, value in zip(self.class_names, recalls, strict=True):
            self.log(f'val/recall_{name}', value)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x.float())
        self.test_metrics.update(logits, y)
        self.log_dict(self.test_metrics, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.trained_net.parameters(),
            lr=self.hparams['lr'],
            weight_decay=self.hparams['weight_decay'],
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        warmup = min(int(self.hparams['warmup_epochs'] * steps_per_epoch), total // 2)

        def factor(step: int) -> float:
            # linear warm-up from lr/10, then cosine decay to lr/100
            if step < warmup:
                return 0.1 + 0.9 * step / max(warmup, 1)
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': schedule, 'interval': 'step'}}
