"""The LightningModule: loss, optimiser, schedule, augmentation and torchmetrics around the network."""

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

from training.augment import AugmentConfig, BatchAugmenter
from training.data import make_preprocessor
from training.models import CompactFusionNet, count_flops
from weld_core.classes import DEFAULT_CLASSES

MODEL_NAME = 'compact'


class WeldClassifier(pl.LightningModule):
    """Weld-defect classifier over preprocessed RGB-D inputs (the compact fusion network).

    The networks are fully convolutional with global pooling, so they train on random windows of
    ``train_crop`` (about half the pixels: half the CPU time per step) and run on the whole frame.

    Args:
        input_channels: preprocessed channels the network reads (set from ``data.channels``).
        class_names: classes in output order (set from the dataset).
        input_size: (height, width) the frames are resized to (set from ``data.input_size``).
        preprocess: preprocessing settings (set from ``data.preprocess``).
        stem_width: channels of each stem (colour and depth), at input_size / patch.
        stage_widths: channels of the stages that follow the stems, each at half the resolution.
        patch: the stems' stride: a patch x patch projection (1: 3x3 convolutions, no stride).
        dropout: dropout before the classifier.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: epochs of linear warm-up from lr / 10 before the cosine decay to lr / 100.
        train_crop: (height, width) of the random training window; null trains on whole frames.
        transpose_p: share of training batches turned by 90 degrees (seams in every orientation).
        whole_frame_share: share of the epochs, at the end, trained on whole frames instead of windows.
    """

    def __init__(
        self,
        input_channels: tuple[str, ...] = ('r', 'g', 'b', 'luma_detail', 'height', 'relief', 'valid'),
        class_names: tuple[str, ...] = DEFAULT_CLASSES,
        input_size: tuple[int, int] = (240, 320),
        preprocess: dict[str, float] | None = None,
        stem_width: int = 12,
        stage_widths: tuple[int, ...] = (16, 32, 56, 96),
        patch: int = 2,
        dropout: float = 0.2,
        lr: float = 0.004,
        weight_decay: float = 0.001,
        label_smoothing: float = 0.05,
        warmup_epochs: float = 1.0,
        train_crop: tuple[int, int] | None = (176, 240),
        transpose_p: float = 0.5,
        whole_frame_share: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.channels = tuple(input_channels)
        self.class_names = tuple(class_names)
        self.net = CompactFusionNet(
            self.channels, len(self.class_names), stem_width, tuple(stage_widths), patch, dropout
        )
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.augmenter = BatchAugmenter(
            make_preprocessor(self.channels, input_size, preprocess), AugmentConfig()
        )
        num = len(self.class_names)
        metrics = MetricCollection(
            {
                'acc': MulticlassAccuracy(num_classes=num, average='micro'),
                'macro_recall': MulticlassRecall(num_classes=num, average='macro'),
            }
        )
        self.val_metrics = metrics.clone(prefix='val/')
        # per class as well: the subtle classes are learnt late, and a class a run misses shows here
        self.val_class_recall = MulticlassRecall(num_classes=num, average='none')
        self.example_input_array = torch.zeros(1, len(self.channels), *input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.net(x)

    def _crop_and_turn(self, x: torch.Tensor) -> torch.Tensor:
        """One random window of ``train_crop`` for the batch, then a transpose with ``transpose_p``."""
        crop = self.hparams['train_crop']
        epochs = int(self.trainer.max_epochs or 0) if self._trainer is not None else 0
        whole = math.ceil(float(self.hparams['whole_frame_share']) * epochs)
        if crop and not (whole and self.current_epoch >= epochs - whole):
            height, width = min(int(crop[0]), x.shape[2]), min(int(crop[1]), x.shape[3])
            top = int(torch.randint(0, x.shape[2] - height + 1, ()))
            left = int(torch.randint(0, x.shape[3] - width + 1, ()))
            x = x[:, :, top : top + height, left : left + width]
        if float(torch.rand(())) < float(self.hparams['transpose_p']):
            x = x.transpose(2, 3)
        return x

    def complexity(self) -> dict[str, float]:
        """GMAC, GFLOP, parameters and size of one frame pair's call."""
        return count_flops(self.net, (len(self.channels), *self.hparams['input_size']))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(self.augmenter(self._crop_and_turn(x))), y)
        self.log('train/loss', loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

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

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=self.hparams['lr'], weight_decay=self.hparams['weight_decay']
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
