"""The one training procedure every command shares.

A *run* trains the configuration from scratch on some sessions for its configured epochs and keeps
the last epoch (no checkpoint is picked on held-out frames, so what is measured is what the
procedure delivers). The learning-rate schedule is tied to the epochs, so the last epoch is the
decayed one. After training the run is checked on its own training frames (whole frames, no
augmentation): a class under 0.4 recall there was not learnt, and the run is trained again with the
next seed (``retries``, a safety net; the default learns every class, see docs/results.md).

- ``fit``: one *held-out run*: trained on every session but the held-out ones (the dataset's test
  sessions), which are measured, each thresholded with the good-class offset chosen on the others.
- ``crossval``: held-out runs over folds of sessions (out-of-fold figures over every session).
- ``release``: the held-out run, then the run on every session with the offset chosen on all
  held-out frames folded in, exported: the one file to deploy, its metadata carrying the held-out
  figures of the procedure that made it.

:func:`save_checkpoint` is the one writer of checkpoint files and of what they record.
"""

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from training.calibrate import GOOD_FPR_CONFIDENCE, Calibration, choose_good_bias, decide, fold_good_bias
from training.data import WeldDataModule
from training.errors import TrainingError
from training.metrics import classification_metrics, weak_classes
from training.module import WeldClassifier
from weld_core.classes import GOOD_CLASS

CHECKPOINT_FORMAT = 'weldvision-checkpoint-1'
# the peak learning rate of a run that continues a trained network, as a share of the recipe's
CONTINUED_LR_SHARE = 0.25
HEADLINE = ('macro_recall', 'good_fpr', 'missed_defect_rate', 'accuracy', 'frames')
# the WeldClassifier arguments the data decide (the rest come from the config's ``model`` section)
LINKED_MODEL_ARGS = ('input_channels', 'class_names', 'input_size', 'preprocess')


class CheckpointError(TrainingError, ValueError):
    """A checkpoint file is missing, unreadable or not one these tools wrote."""


@dataclass(frozen=True)
class Recipe:
    """What a run trains and how: a parsed config (``model``, ``data`` and ``trainer`` sections)."""

    model: dict[str, Any]
    data: dict[str, Any]
    trainer: dict[str, Any]
    seed: int = 0
    threads: int = 0
    retries: int = 1
    final_epochs: int = 10
    max_good_fpr: float = 0.05
    good_fpr_confidence: float = GOOD_FPR_CONFIDENCE

    @property
    def epochs(self) -> int:
        return int(self.trainer['max_epochs'])

    def continued(self) -> 'Recipe':
        """The recipe of a run that continues a trained network: ``final_epochs`` epochs at a quarter
        of the peak learning rate (a full restart of the rate would shake loose the subtle cues the
        first run learnt last, as its rate decayed)."""
        return replace(
            self,
            model={**self.model, 'lr': float(self.model['lr']) * CONTINUED_LR_SHARE},
            trainer={**self.trainer, 'max_epochs': self.final_epochs},
        )


@dataclass
class Run:
    """A trained run: the model, the data it was trained on, and how it did on its own frames."""

    model: WeldClassifier
    data: WeldDataModule
    seed: int
    epochs: int
    seconds: float
    precision: str
    log_dir: Path
    train: dict[str, Any]  # headline figures on its own training frames
    weak: dict[str, float]  # classes not learnt (recall on its own training frames under 0.4)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # the process's rank under DDP (--trainer.devices N); rank 0 alone writes files

    def record(self) -> dict[str, Any]:
        """What a checkpoint and a report say about the run."""
        return {
            'seed': self.seed,
            'epochs': self.epochs,
            'seconds': round(self.seconds, 1),
            'precision': self.precision,
            'train_sessions': self.data.sessions('train'),
            'train_frames': len(self.data.splits['train']),
            'dataset_digest': self.data.digest,
            'dataset_version': self.data.version,
            'train': self.train,
            'train_weak_classes': self.weak,
            'attempts': self.attempts,
        }


def set_threads(threads: int) -> None:
    """torch CPU threads for this process (0: every core)."""
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))


def datamodule(
    recipe: Recipe,
    dataset_dir: str | Path,
    val_sessions: list[str] | None = None,
    test_sessions: list[str] | None = None,
) -> WeldDataModule:
    """The recipe's data settings over ``dataset_dir``; the sessions override the dataset's split."""
    return WeldDataModule(
        str(dataset_dir), **recipe.data, val_sessions=val_sessions, test_sessions=test_sessions
    )


def build_model(recipe: Recipe, data: WeldDataModule) -> WeldClassifier:
    return WeldClassifier(
        input_channels=data.channels,
        class_names=data.class_names,
        input_size=tuple(data.hparams['input_size']),
        preprocess=data.hparams['preprocess'],
        **recipe.model,
    )


def quiet_lightning() -> None:
    """Lightning's notes and tips off (its warnings stay): the commands print what a person needs."""
    for name in ('pytorch_lightning', 'lightning.pytorch', 'lightning_fabric'):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6 builds torch's deprecated LeafSpec on every batch: one known notice, not ours to fix
    warnings.filterwarnings('ignore', r'`isinstance\(treespec, LeafSpec\)` is deprecated', FutureWarning)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX): a training step in mixed
    precision then takes about 0.4 of float32's (docs/results.md); elsewhere it is emulated."""
    probes = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(trainer: dict[str, Any]) -> str:
    """The Lightning precision of a run: ``auto`` is ``bf16-mixed`` where the run trains on a CPU with
    native bfloat16, ``32-true`` on any other CPU and on GPUs; any other value is kept as given."""
    precision = str(trainer.get('precision', 'auto'))
    if precision != 'auto':
        return precision
    accelerator = str(trainer.get('accelerator', 'auto'))
    on_cpu = accelerator == 'cpu' or (accelerator == 'auto' and not torch.cuda.is_available())
    return 'bf16-mixed' if on_cpu and cpu_has_bfloat16() else '32-true'


def _trainer(recipe: Recipe, out_dir: Path, data: WeldDataModule) -> pl.Trainer:
    loggers = [
        pl.loggers.CSVLogger(out_dir, name='', version=''),
        pl.loggers.TensorBoardLogger(out_dir, name='', version='', default_hp_metric=False),
    ]
    return pl.Trainer(
        **{**recipe.trainer, 'precision': resolve_precision(recipe.trainer)},
        logger=loggers,
        enable_checkpointing=False,  # the last epoch is the model; save_checkpoint writes it
        num_sanity_val_steps=0,
        # the curves are drawn on the held-out frames; nothing is selected on them
        limit_val_batches=None if data.splits['val'] or data.splits['test'] else 0,
        check_val_every_n_epoch=5,
        # every fifth step, or once an epoch when an epoch is shorter (tiny datasets)
        log_every_n_steps=max(1, min(5, len(data.splits['train']) // int(data.hparams['batch_size']))),
        default_root_dir=out_dir,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
    )


@torch.no_grad()
def predict(model: WeldClassifier, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities of ``inputs`` (N, C, H, W) with the model in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start : start + batch_size].astype(np.float32)).to(model.device)
        out.append(torch.softmax(model(batch), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.class_names)), np.float32)


def metrics_at(
    probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], good_offset: float = 0.0
) -> dict[str, Any]:
    """Classification metrics with ``good_offset`` added to the good-class logit (0: the arg-max)."""
    log_probs = np.log(np.clip(probabilities.astype(np.float64), 1e-9, 1.0))
    preds = decide(log_probs, list(class_names).index(GOOD_CLASS), good_offset)
    return classification_metrics(torch.from_numpy(preds), torch.from_numpy(labels), class_names)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in HEADLINE if key in metrics}


def train_once(
    recipe: Recipe, data: WeldDataModule, out_dir: Path, seed: int, start: WeldClassifier | None = None
) -> Run:
    """One run of ``recipe`` on ``data``'s training split, from scratch or from ``start``'s network;
    the last epoch is the model."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_model(recipe, data)
    if start is not None:
        model.net.load_state_dict(start.net.state_dict())
    trainer = _trainer(recipe, out_dir, data)
    trainer.fit(model, datamodule=data)
    model = model.cpu().eval()
    train = metrics_at(predict(model, data.inputs('train')), data.labels('train'), model.class_names)
    return Run(
        model=model,
        data=data,
        seed=seed,
        epochs=trainer.current_epoch,
        seconds=time.perf_counter() - started,
        precision=str(trainer.precision),
        log_dir=out_dir,
        train=headline(train),
        weak=weak_classes(train),
        rank=trainer.global_rank,
    )


def train(recipe: Recipe, data: WeldDataModule, out_dir: Path, start: WeldClassifier | None = None) -> Run:
    """:func:`train_once`, again with the next seed (``recipe.retries`` times at most) if it misses a class.

    Of the attempts, the one with the best macro-recall on its own training frames is kept; every
    attempt is listed in the run's ``attempts``.
    """
    runs: list[Run] = []
    for attempt in range(1 + max(recipe.retries, 0)):
        seed = recipe.seed + attempt
        run = train_once(recipe, data, out_dir / (f'attempt-{attempt + 1}' if attempt else ''), seed, start)
        runs.append(run)
        if not run.weak:
            break
        listed = ', '.join(f'{name} {recall:.2f}' for name, recall in run.weak.items())
        print(f'not learnt on its own training frames ({listed}) with seed {seed}', file=sys.stderr)
    kept = max(runs, key=lambda r: r.train['macro_recall'])
    kept.attempts = [
        {'seed': r.seed, 'seconds': round(r.seconds, 1), 'train': r.train, 'weak': r.weak} for r in runs
    ]
    return kept


def choose_offset(
    recipe: Recipe, probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> Calibration:
    """The good-class offset for these held-out predictions (training.calibrate's rule)."""
    return choose_good_bias(
        probabilities, labels, class_names, recipe.max_good_fpr, recipe.good_fpr_confidence
    )


def held_out_sessions(data: WeldDataModule) -> list[str]:
    """The sessions a held-out run leaves out: the dataset's test sessions, and its validation ones
    too when that is what it takes to have two (each is thresholded on the others)."""
    sessions = data.sessions('test')
    if len(sessions) < 2:
        sessions = sorted(set(sessions) | set(data.sessions('val')))
    return sessions


def held_out_figures(run: Run, recipe: Recipe) -> dict[str, Any]:
    """A held-out run's figures on its test split, each held-out session thresholded on the others.

    ``test``: the held-out frames, each session's with the good-class offset chosen on the other
    held-out sessions' predictions (nested: no frame is judged with an offset chosen on itself);
    ``test_argmax``: the same frames with no offset; ``offset_for_all``: the offset chosen on every
    held-out frame (the estimate for the model of every session); and the probabilities behind them.
    """
    names = run.model.class_names
    probabilities, labels = predict(run.model, run.data.inputs('test')), run.data.labels('test')
    frame_sessions = np.array([frame['session'] for frame in run.data.splits['test']])
    sessions = sorted(set(frame_sessions))
    figures: dict[str, Any] = {
        'sessions': {'train': run.data.sessions('train'), 'test': sessions},
        'dataset_digest': run.data.digest,
        'dataset_version': run.data.version,
        'probabilities': probabilities,
    }
    if len(sessions) < 2:
        return figures
    good = list(names).index(GOOD_CLASS)
    log_probs = np.log(np.clip(probabilities.astype(np.float64), 1e-9, 1.0))
    nested = np.zeros(len(labels), np.int64)
    offsets = {}
    for session in sessions:
        mine = frame_sessions == session
        offset = choose_offset(recipe, probabilities[~mine], labels[~mine], names).good_logit_bias
        nested[mine] = decide(log_probs[mine], good, offset)
        offsets[session] = offset
    figures['test'] = classification_metrics(torch.from_numpy(nested), torch.from_numpy(labels), names)
    figures['test_argmax'] = metrics_at(probabilities, labels, names)
    figures['nested_offsets'] = offsets
    figures['offset_for_all'] = choose_offset(recipe, probabilities, labels, names).as_dict()
    return figures


def fold_offset(model: WeldClassifier, offset: float) -> None:
    """Add ``offset`` to the good-class logit in the network's last layer (export and board apply it)."""
    fold_good_bias(model.net, model.class_names, offset)


def save_checkpoint(path: Path, model: WeldClassifier, record: dict[str, Any]) -> Path:
    """The one checkpoint writer: weights, the hyperparameters that rebuild the model, and ``record``.

    ``record`` says what the model is: the run (seed, sessions, epochs, its own-frame check), the
    good-class offset folded into its weights, and the held-out figures of the procedure that made
    it. ``training.export`` copies it into the ONNX metadata.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        'format': CHECKPOINT_FORMAT,
        'hyper_parameters': dict(model.hparams),
        'state_dict': {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        'weldvision': record,
    }
    partial = path.with_name(f'.{path.name}.part')
    torch.save(state, partial)
    partial.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[WeldClassifier, dict[str, Any]]:
    """The model (eval mode, CPU) and the record of a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint')
    try:
        state = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # torch raises several types for a corrupt or foreign file
        raise CheckpointError(f'{path}: not a readable checkpoint ({exc})') from exc
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f'{path}: not a weldvision checkpoint ({CHECKPOINT_FORMAT}); train it with `weld-train`'
        )
    model = WeldClassifier(**state['hyper_parameters'])
    model.load_state_dict(state['state_dict'])
    return model.eval(), dict(state['weldvision'])
