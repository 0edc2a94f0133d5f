"""Refit: the validated configuration trained again on more sessions, for the model to deploy.

On the weldsim sessions the model is short of examples far more than of any setting: one training
session fewer cost 13 points of held-out macro-recall (docs/training.md, learning curve). The
validated fit leaves the validation session (and the test sessions) out of training, so the model
it selects has seen only part of what was recorded. After it, ``fit --refit`` trains the same
configuration once more from scratch, with the same seed and for the configured number of epochs,
on

- ``trainval``: the training and validation sessions; the test sessions stay held out, so the refit
  model gets honest test figures next to the validated model's;
- ``all``: every session. Nothing is left to measure it on: its figures are those of the ``trainval``
  refits and the validated model, not its own.

There is no validation split to select an epoch or set the good-class threshold on, so the refit
takes the last epoch (the learning rate has decayed by then) and the validated model's good-class
logit offset, folded into its last layer as in ``calibrated.ckpt``. It is saved as ``refit.ckpt``
beside the validated checkpoints; export it as any other checkpoint. It doubles the fit's time.
On the default split the ``trainval`` refit gained 3.8-5.2 points of test macro-recall on the
validated model in five of five fits; on another split one refit did not learn spatter and one
flagged 22 % of good welds (docs/training.md, "The model to deploy"). With no validation split, a
class the refit did not learn is looked for on its own training frames (``fit`` warns).
"""

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from training.calibrate import Calibration, fold_good_bias
from training.data import WeldDataModule
from training.errors import DatasetError
from training.module import WeldClassifier

REFIT_MODES = ('none', 'trainval', 'all')
REFIT_CHECKPOINT = 'refit.ckpt'

# the trainer settings a refit keeps from the validated fit (callbacks, loggers and the epoch
# limits are its own)
_KEPT_TRAINER_ARGS = (
    'accelerator',
    'devices',
    'strategy',
    'precision',
    'deterministic',
    'benchmark',
    'gradient_clip_val',
    'accumulate_grad_batches',
    'enable_progress_bar',
    'log_every_n_steps',
)


@dataclass(frozen=True)
class RefitResult:
    checkpoint: Path
    model: WeldClassifier
    datamodule: WeldDataModule
    summary: dict[str, Any]


def refit_datamodule(datamodule: WeldDataModule, mode: str) -> WeldDataModule:
    """A data module over the same dataset whose training split takes the sessions ``mode`` adds."""
    if mode not in REFIT_MODES[1:]:
        raise DatasetError(f'refit mode {mode!r} is not one of {list(REFIT_MODES[1:])}')
    test = sorted({f['session'] for f in datamodule.splits['test']}) if mode == 'trainval' else []
    kept = {
        k: v for k, v in init_args(WeldDataModule, datamodule.hparams).items() if not k.endswith('_sessions')
    }
    return WeldDataModule(**kept, val_sessions=[], test_sessions=test)


def init_args(cls: type, hparams: Any) -> dict[str, Any]:
    """The saved hyperparameters that ``cls`` takes (LightningCLI adds entries of its own)."""
    names = set(inspect.signature(cls.__init__).parameters) - {'self'}
    return {key: value for key, value in dict(hparams).items() if key in names}


def refit(
    validated: WeldClassifier,
    datamodule: WeldDataModule,
    trainer_args: dict[str, Any],
    epochs: int,
    calibration: Calibration | None,
    mode: str,
    out_dir: Path,
    seed: int | None,
    checkpoint: Path,
) -> RefitResult:
    """Train ``validated``'s configuration from scratch on the sessions of ``mode`` for ``epochs``.

    ``trainer_args`` are the validated fit's trainer settings (only those in ``_KEPT_TRAINER_ARGS``
    are used). The result's checkpoint (written to ``checkpoint``) carries ``calibration``'s good-class
    offset, folded in.
    """
    start = time.perf_counter()
    data = refit_datamodule(datamodule, mode)
    if seed is not None:
        pl.seed_everything(seed, workers=True)
    # the data module's own input size object: the loggers refuse hparams that differ even in type
    overrides = {'class_weights': data.class_weights, 'input_size': data.hparams['input_size']}
    model = WeldClassifier(**{**init_args(WeldClassifier, validated.hparams), **overrides})
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = {key: trainer_args[key] for key in _KEPT_TRAINER_ARGS if trainer_args.get(key) is not None}
    trainer = pl.Trainer(
        **kept,
        max_epochs=epochs,
        limit_val_batches=0,  # nothing to validate on: the last epoch is the model
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=pl.loggers.CSVLogger(out_dir, name='', version=''),
        default_root_dir=out_dir,
    )
    trainer.fit(model, datamodule=data)
    model = model.cpu().eval()
    if calibration is not None:  # in place, so the trainer's checkpoint below carries it
        fold_good_bias(model.net, model.class_names, calibration.good_logit_bias)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    summary: dict[str, Any] = {
        'mode': mode,
        'epochs': epochs,
        'seed': seed,
        'train_sessions': sorted({f['session'] for f in data.splits['train']}),
        'train_frames': len(data.splits['train']),
        'test_sessions': sorted({f['session'] for f in data.splits['test']}),
        'good_logit_bias': calibration.good_logit_bias if calibration is not None else 0.0,
        'seconds': time.perf_counter() - start,
        'checkpoint': str(checkpoint),
    }
    state['weldvision_refit'] = summary
    if calibration is not None:
        state['weldvision_calibration'] = calibration.as_dict()
    torch.save(state, checkpoint)
    return RefitResult(checkpoint=checkpoint, model=model, datamodule=data, summary=summary)
