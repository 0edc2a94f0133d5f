"""``python -m training.fit``: LightningCLI training with YAML configs from training/configs/.

    python -m training.fit --data.dataset_dir data/weldsim
    python -m training.fit --config training/configs/resnet18.yaml --data.dataset_dir data/weldsim \\
        --trainer.max_epochs 3            # any option can be overridden on the command line

The default config is always loaded first; ``--config`` files given on the command line (e.g.
training/configs/resnet18.yaml, rgb_only.yaml, depth_only.yaml) override parts of it.
After training, the best checkpoint (highest validation macro-recall) gets its good-class
threshold calibrated on the validation split (``--max_good_fpr``, default 0.05, held with
``--good_fpr_confidence``, default 0.8: see training/calibrate.py) and is saved as
``calibrated.ckpt`` beside it; that model is evaluated on the validation and the held-out test
sessions, and a report folder is written next to the logs
(``<log_dir>/report``): metrics.json, confusion matrices, training curves and misclassified
samples. ``fit()`` does the same from Python.

``--refit trainval`` (or ``all``) then trains the same configuration again on the training and
validation sessions (or every session) and saves it as ``refit.ckpt`` with the validated good-class
offset, with its test figures next to the validated model's in metrics.json (training/refit.py).
"""

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from training.calibrate import GOOD_FPR_CONFIDENCE, Calibration, choose_good_bias, decide, fold_good_bias
from training.data import WeldDataModule
from training.evaluate import evaluate_rules
from training.metrics import classification_metrics, weak_classes
from training.module import WeldClassifier
from training.refit import REFIT_CHECKPOINT, REFIT_MODES, RefitResult, refit
from training.report import plot_confusion, plot_curves, plot_misclassified, write_metrics
from weld_core.classes import GOOD_CLASS
from weld_core.errors import WeldError

CONFIG_DIR = Path(__file__).resolve().parent / 'configs'
DEFAULT_CONFIG = CONFIG_DIR / 'default.yaml'


@dataclass(frozen=True)
class FitResult:
    best_checkpoint: Path
    report_dir: Path
    metrics: dict[str, Any]
    seconds: float
    # the model to deploy when --refit asked for one (trained on more sessions), else None
    refit_checkpoint: Path | None = None


class WeldCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments('data.channels', 'model.input_channels', apply_on='instantiate')
        parser.link_arguments('data.class_names', 'model.class_names', apply_on='instantiate')
        parser.link_arguments('data.input_size', 'model.input_size')
        parser.link_arguments('data.preprocess', 'model.preprocess')
        parser.link_arguments('data.class_weights', 'model.class_weights', apply_on='instantiate')
        parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: all cores)')
        parser.add_argument(
            '--max_good_fpr',
            type=float,
            default=0.05,
            help='calibrate the good-class threshold on the validation split to this good-FPR (<0: off)',
        )
        parser.add_argument(
            '--good_fpr_confidence',
            type=float,
            default=GOOD_FPR_CONFIDENCE,
            help='how sure the validation split must make max_good_fpr (upper confidence bound; 0: as seen)',
        )
        parser.add_argument(
            '--refit',
            type=str,
            default='none',
            choices=REFIT_MODES,
            help='after the validated fit, train again on train+val sessions (trainval) or on every '
            'session (all) for the model to deploy, refit.ckpt (training/refit.py; doubles the time)',
        )
        parser.add_argument(
            '--refit_retries',
            type=int,
            default=1,
            help='train the refit again with the next seed, up to this many times, while it misses a class '
            'on its own training frames (recall under 0.4); the best attempt is kept',
        )


CLIType = TypeVar('CLIType', bound=WeldCLI)


@torch.no_grad()
def predict(model: WeldClassifier, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities of ``inputs`` (N, C, H, W) with the model in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start : start + batch_size].astype(np.float32)).to(model.device)
        out.append(torch.softmax(model(batch), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.class_names)), np.float32)


def split_metrics(
    model: WeldClassifier,
    datamodule: WeldDataModule,
    split: str = 'test',
    good_biases: Sequence[float] = (0.0,),
) -> list[dict[str, Any]]:
    """Metrics of ``model`` on ``split`` (whole frames), one per offset added to its good-class logit.

    The split is run through the model once for all the offsets.
    """
    log_probs = np.log(np.clip(predict(model, datamodule.inputs(split)), 1e-12, 1.0))
    targets = torch.from_numpy(datamodule.labels(split))
    good = list(model.class_names).index(GOOD_CLASS)
    results = []
    for bias in good_biases:
        preds = torch.from_numpy(decide(log_probs, good, bias))
        results.append(classification_metrics(preds, targets, model.class_names))
    return results


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in ('macro_recall', 'good_fpr', 'missed_defect_rate')}


def save_calibrated(checkpoint: Path, model: WeldClassifier, calibration: Calibration) -> Path:
    """``checkpoint`` with the calibrated weights of ``model``, saved beside it as ``calibrated.ckpt``."""
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    state['state_dict'] = {key: value.clone() for key, value in model.state_dict().items()}
    state['weldvision_calibration'] = calibration.as_dict()
    path = checkpoint.with_name('calibrated.ckpt')
    torch.save(state, path)
    return path


def evaluate_checkpoint(
    model: WeldClassifier, datamodule: WeldDataModule, report_dir: Path, metrics_csv: Path | None = None
) -> dict[str, Any]:
    """Metrics of ``model`` on every non-empty split, plus the report plots."""
    report_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        'complexity': model.complexity(),
        'dataset_digest': datamodule.digest,
        'sessions': {
            split: sorted({f['session'] for f in frames}) for split, frames in datamodule.splits.items()
        },
    }
    for split in ('val', 'test'):
        inputs = datamodule.inputs(split)
        if not len(inputs):
            continue
        targets = datamodule.labels(split)
        preds = predict(model, inputs).argmax(1)
        metrics = classification_metrics(
            torch.from_numpy(preds), torch.from_numpy(targets), model.class_names
        )
        results[split] = metrics
        plot_confusion(
            metrics['confusion'],
            model.class_names,
            report_dir / f'confusion_{split}.png',
            f'{split}: macro-recall {metrics["macro_recall"]:.3f}',
        )
        plot_misclassified(
            inputs,
            targets,
            preds,
            model.channels,
            model.class_names,
            report_dir / f'misclassified_{split}.png',
        )
    # the board's rule-based fallback on the same frames: the figures a model has to beat
    results['rules'] = {
        split: headline(evaluate_rules(datamodule.store, datamodule.splits[split]))
        for split in ('val', 'test')
        if split in results
    }
    if metrics_csv is not None:
        plot_curves(metrics_csv, report_dir / 'curves.png')
    write_metrics(report_dir / 'metrics.json', results)
    return results


def build_cli(
    cli_class: type[CLIType], args: Sequence[str], config: str | Path | None, description: str
) -> CLIType:
    """``cli_class`` over ``config`` (YAML) and CLI-style ``args``, objects built, torch threads set."""
    argv = [*(['--config', str(config)] if config else []), *args]
    cli = cli_class(
        WeldClassifier,
        WeldDataModule,
        run=False,
        args=argv,
        save_config_kwargs={'overwrite': True},
        parser_kwargs={'description': description},
    )
    threads = int(cli.config.get('threads') or 0)
    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    return cli


def claim_log_versions(loggers: Sequence[Any]) -> None:
    """Give loggers without a version the next ``version_N`` folder of their root, made atomically.

    Lightning picks a logger's version by listing the folders already there, so two fits started
    at the same moment in the same ``runs/`` folder would both pick ``version_N`` and write over each
    other's logs. Here the folder is created with ``mkdir`` (which fails when another process made
    it first) and every logger sharing that root gets the same number, as the default config's CSV
    and TensorBoard loggers do. Loggers with a version of their own, or elsewhere than on the local
    disk, are left alone; so are the processes of a multi-GPU run other than rank 0.
    """
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, 'rank', 0) != 0:
        return
    by_root: dict[Path, list[Any]] = {}
    for logger in loggers:
        root = getattr(logger, 'root_dir', None)
        if getattr(logger, '_version', 0) is None and root and '://' not in str(root):
            by_root.setdefault(Path(root), []).append(logger)
    for root, group in by_root.items():
        version = max(int(logger.version) for logger in group)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (root / f'version_{version}').mkdir()
                break
            except FileExistsError:
                version += 1
        for logger in group:
            logger._version = version


def fit(args: Sequence[str] = (), config: str | Path | None = DEFAULT_CONFIG) -> FitResult:
    """Train with ``config`` (YAML) and CLI-style ``args`` overrides; return best checkpoint, metrics."""
    import time

    start = time.perf_counter()
    cli = build_cli(WeldCLI, args, config, __doc__.split('\n')[0])
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    flops = model.complexity()
    print(
        f'model {model.hparams["model_name"]}: {flops["gflop"]:.3f} GFLOP, {flops["params_m"]:.2f} M params, '
        f'train/val/test frames {[len(datamodule.splits[s]) for s in ("train", "val", "test")]}',
        file=sys.stderr,
    )
    claim_log_versions(trainer.loggers)
    trainer.fit(model, datamodule=datamodule)
    best = Path(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path)
    # the checkpoint holds the trained weights: the initial ones are not read again, but they stay
    # in the hyperparameters (the refit starts from them as this fit did)
    best_model = WeldClassifier.load_from_checkpoint(best, map_location='cpu', init_weights=None)
    best_model.hparams['init_weights'] = model.hparams.get('init_weights')
    calibration = None
    uncalibrated_test = None
    max_good_fpr = float(cli.config.get('max_good_fpr', 0.05))
    if max_good_fpr >= 0 and len(datamodule.splits['val']):
        calibration = choose_good_bias(
            predict(best_model, datamodule.inputs('val')),
            datamodule.labels('val'),
            best_model.class_names,
            max_good_fpr,
            float(cli.config.get('good_fpr_confidence', GOOD_FPR_CONFIDENCE)),
        )
        if len(datamodule.splits['test']):
            uncalibrated_test = headline(split_metrics(best_model, datamodule)[0])
        fold_good_bias(best_model.net, best_model.class_names, calibration.good_logit_bias)
        best = save_calibrated(best, best_model, calibration)
        print(
            f'good-class threshold: logit offset {calibration.good_logit_bias:+.1f} '
            f'(val good-FPR {calibration.val_good_fpr_before:.3f} -> {calibration.val_good_fpr_after:.3f} '
            f'of {calibration.val_good_frames} good welds, {calibration.confidence:.0%} bound '
            f'{calibration.val_good_fpr_bound:.3f}; '
            f'macro-recall {calibration.val_macro_recall_before:.3f} -> '
            f'{calibration.val_macro_recall_after:.3f})',
            file=sys.stderr,
        )
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)
    csv_logs = [
        Path(lg.log_dir) / 'metrics.csv' for lg in trainer.loggers if type(lg).__name__ == 'CSVLogger'
    ]
    metrics = evaluate_checkpoint(
        best_model, datamodule, log_dir / 'report', csv_logs[0] if csv_logs else None
    )
    metrics['calibration'] = calibration.as_dict() if calibration else None
    metrics['test_uncalibrated'] = uncalibrated_test
    metrics['fit_seconds'] = time.perf_counter() - start
    metrics['best_checkpoint'] = str(best)
    metrics['epochs_run'] = trainer.current_epoch
    metrics['val_weak_classes'] = weak_classes(metrics['val']) if 'val' in metrics else {}
    write_metrics(log_dir / 'report' / 'metrics.json', metrics)
    refit_checkpoint = None
    mode = str(cli.config.get('refit') or 'none')
    if mode != 'none':
        train_once = partial(
            refit,
            best_model,
            datamodule,
            cli.config['trainer'].as_dict(),
            int(trainer.max_epochs or 1),
            calibration,
            mode,
        )
        refitted, summary = refit_until_learnt(
            train_once,
            mode,
            log_dir,
            cli.config.get('seed_everything'),
            int(cli.config.get('refit_retries') or 0),
        )
        refit_checkpoint = refitted.checkpoint
        if len(refitted.datamodule.splits['test']):
            summary['test'], raw = split_metrics(
                refitted.model, refitted.datamodule, 'test', (0.0, -summary['good_logit_bias'])
            )
            summary['test_uncalibrated'] = headline(raw)
            plot_confusion(
                summary['test']['confusion'],
                refitted.model.class_names,
                log_dir / 'report' / 'confusion_test_refit.png',
                f'refit ({mode}), test: macro-recall {summary["test"]["macro_recall"]:.3f}',
            )
        metrics['refit'] = summary
        metrics['fit_seconds'] = time.perf_counter() - start
        write_metrics(log_dir / 'report' / 'metrics.json', metrics)
    return FitResult(
        best_checkpoint=best,
        report_dir=log_dir / 'report',
        refit_checkpoint=refit_checkpoint,
        metrics=metrics,
        seconds=metrics['fit_seconds'],
    )


def refit_until_learnt(
    train_once: Callable[[Path, int | None, Path], RefitResult],
    mode: str,
    log_dir: Path,
    seed: int | None,
    retries: int,
) -> tuple[RefitResult, dict[str, Any]]:
    """The refit, trained again with the next seed (up to ``retries`` times) while it misses a class.

    ``train_once(out_dir, seed, checkpoint)`` is :func:`training.refit.refit` with the validated
    fit's model, data, trainer settings, epochs, calibration and mode bound.

    There is no validation split to show a class the run did not learn: a failed run of the default
    misses spatter or porosity on its own training frames as well (recall 0.00 there, against
    0.61-0.90 in the runs that learnt it; docs/training.md). Of the attempts, the one with the best
    macro-recall on its training frames is kept as ``refit.ckpt``; every attempt is listed.
    """
    attempts: list[tuple[RefitResult, dict[str, Any]]] = []
    folder = log_dir / 'checkpoints'
    for attempt in range(1 + max(retries, 0)):
        attempt_seed = None if seed is None else int(seed) + attempt
        print(
            f'refit ({mode}): the same configuration from scratch on more sessions'
            + (f', attempt {attempt + 1} (seed {attempt_seed})' if attempt else ''),
            file=sys.stderr,
        )
        result = train_once(
            log_dir / ('refit' if not attempt else f'refit-{attempt + 1}'),
            attempt_seed,
            folder / f'refit-attempt{attempt + 1}.ckpt',
        )
        (train,) = split_metrics(result.model, result.datamodule, 'train')
        summary = dict(result.summary)
        summary['train'] = headline(train) | {'accuracy': train['accuracy']}
        summary['train_weak_classes'] = weak_classes(train)
        attempts.append((result, summary))
        if not summary['train_weak_classes']:
            break
        listed = ', '.join(f'{name} {recall:.2f}' for name, recall in summary['train_weak_classes'].items())
        print(f'refit: not learnt on its own training frames ({listed})', file=sys.stderr)
    kept, summary = max(attempts, key=lambda pair: pair[1]['train']['macro_recall'])
    final = folder / REFIT_CHECKPOINT
    summary['checkpoint'] = str(final)
    summary['attempts'] = [
        {key: s[key] for key in ('seed', 'seconds', 'train', 'train_weak_classes')} for _, s in attempts
    ]
    state = torch.load(kept.checkpoint, map_location='cpu', weights_only=False)
    state['weldvision_refit'] = {key: value for key, value in summary.items() if key != 'attempts'}
    torch.save(state, final)
    for result, _ in attempts:
        result.checkpoint.unlink(missing_ok=True)
    return replace(kept, checkpoint=final), summary


def _summary(result: FitResult) -> str:
    lines = [
        f'best checkpoint: {result.best_checkpoint}',
        f'report: {result.report_dir}',
        f'fit wall time: {result.seconds:.0f} s',
    ]
    for split in ('val', 'test'):
        if split in result.metrics:
            m = result.metrics[split]
            lines.append(
                f'{split}: macro-recall {m["macro_recall"]:.3f}, good-FPR {m.get("good_fpr", 0):.3f}, '
                f'accuracy {m["accuracy"]:.3f}, missed defects {m.get("missed_defect_rate", 0):.3f} '
                f'({m["frames"]} frames)'
            )
    refitted = result.metrics.get('refit')
    if refitted:
        lines.append(
            f'refit ({refitted["mode"]}, {refitted["train_frames"]} frames of '
            f'{", ".join(refitted["train_sessions"])}, '
            f'{refitted["epochs"]} epochs, {refitted["seconds"]:.0f} s): {result.refit_checkpoint}'
        )
        if 'test' in refitted:
            m = refitted['test']
            lines.append(
                f'refit test: macro-recall {m["macro_recall"]:.3f}, good-FPR {m.get("good_fpr", 0):.3f}, '
                f'missed defects {m.get("missed_defect_rate", 0):.3f} ({m["frames"]} frames)'
            )
        else:
            lines.append('refit test: none (every session trained on; see the trainval refits for figures)')
        refit_weak = refitted.get('train_weak_classes') or {}
        if refit_weak:
            listed = ', '.join(f'{name} {recall:.2f}' for name, recall in refit_weak.items())
            lines.append(
                f'warning: the refit did not learn {listed} (recall on its own training frames): do not '
                'deploy refit.ckpt; fit again with another --seed_everything'
            )
    for split, rules in (result.metrics.get('rules') or {}).items():
        model = result.metrics[split]
        lines.append(
            f'{split}, rules on the same frames: macro-recall {rules["macro_recall"]:.3f}, good-FPR '
            f'{rules.get("good_fpr", 0):.3f}, missed defects {rules.get("missed_defect_rate", 0):.3f}'
        )
        if model['macro_recall'] <= rules['macro_recall']:
            lines.append(
                f'warning: on {split} this model does not beat the rule-based fallback '
                f'({model["macro_recall"]:.3f} vs {rules["macro_recall"]:.3f}): the board does better '
                'without it'
            )
    weak = result.metrics.get('val_weak_classes') or {}
    if weak:
        listed = ', '.join(f'{name} {recall:.2f}' for name, recall in weak.items())
        lines.append(
            f'warning: not learnt in this run (validation recall {listed}); the subtle classes are learnt '
            'late and some runs miss one: fit again with another --seed_everything or more epochs '
            '(docs/training.md, run-to-run spread)'
        )
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = fit(args, config=DEFAULT_CONFIG)
    except WeldError as exc:
        print(f'fit: {exc}', file=sys.stderr)
        return 2
    print(_summary(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
