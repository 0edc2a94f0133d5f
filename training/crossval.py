"""``python -m training.crossval``: cross-validation over sessions, for the model trained on all of them.

    python -m training.crossval --data.dataset_dir data/weldsim --out runs/crossval --folds 4
    python -m training.crossval ... --only 0,1     # some folds in this process (one per core or GPU)
    python -m training.crossval ... --only none    # no training: the figures of the folds done so far
    python -m training.crossval ... --final        # then the model to deploy, with the cross-validated offset

The model a team deploys is trained on every recorded session (``fit --refit all``): nothing is
left to measure it on, and its good-class threshold comes from a validated fit's single validation
session (33 good welds on weldsim), the largest source of run-to-run spread (docs/training.md).
Here the sessions are dealt into ``--folds`` groups (0: one per session); for each group the
configuration (the same YAML configs and overrides as ``training.fit``) is trained from scratch on
every other session for its configured epochs, last epoch kept, exactly as the refit trains, and
the group's frames are predicted by it. Every frame then has a prediction from a model that never
saw its session, and from these out-of-fold predictions:

- ``arg-max``: held-out figures of the procedure with no threshold;
- ``nested``: each group thresholded with the offset chosen (``training.calibrate``, the same rule
  and ``--max_good_fpr`` / ``--good_fpr_confidence`` as ``fit``) on the *other* groups' predictions:
  the held-out figures of the procedure with a cross-validated threshold;
- ``offset``: the offset chosen on all of them, from every good weld recorded instead of one
  session's, for the model trained on every session.

The offsets of different networks differ (a refit is another network); taking one chosen on several
fold models for the final one is the same estimate the refit makes, from more frames. ``--final``
trains that model (``refit all``, with the refit's retries while a class is not learnt on its own
training frames) and folds the offset in: ``<out>/final/checkpoints/refit.ckpt``, which
``training.export`` takes like any checkpoint (its metadata records the cross-validated figures).
Each fold is a full training run: k folds cost k fits. Finished folds are kept in ``<out>/folds/``
and not trained again, so a stopped run resumes (or is predicted again from its checkpoint when only
``--model.eval_views`` changed), and folds can run in separate processes
(``--only``; a fold being trained holds a lock file, ``training.lock``, that the others respect).
"""

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.calibrate import GOOD_FPR_CONFIDENCE, Calibration, choose_good_bias, decide
from training.data import WeldDataModule
from training.errors import DatasetError
from training.evaluate import evaluate_rules
from training.fit import DEFAULT_CONFIG, WeldCLI, build_cli, headline, predict, refit_until_learnt
from training.metrics import classification_metrics
from training.module import WeldClassifier
from training.refit import REFIT_CHECKPOINT, init_args, refit
from weld_core.classes import GOOD_CLASS
from weld_core.errors import WeldError

PREDICTIONS = 'predictions.npz'
SUMMARY = 'crossval.json'
LOCK = 'training.lock'  # a fold being trained, by the process whose id it holds


class CrossvalCLI(WeldCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            '--out', type=str, default='runs/crossval', help='folder of the folds and figures'
        )
        parser.add_argument('--folds', type=int, default=0, help='session groups (0: one per session)')
        parser.add_argument(
            '--only', type=str, default='all', help='folds to train here: all, none, or numbers like 0,2'
        )
        parser.add_argument(
            '--final',
            type=bool,
            default=False,
            help='then train on every session with the cross-validated offset',
        )


def session_groups(sessions: Sequence[str], folds: int) -> list[list[str]]:
    """Sessions dealt in sorted order into ``folds`` groups (0 or more than sessions: one each)."""
    ordered = sorted(set(sessions))
    if len(ordered) < 2:
        raise DatasetError(f'cross-validation needs two sessions or more; the dataset has {ordered}')
    count = len(ordered) if folds <= 0 or folds > len(ordered) else folds
    if count < 2:
        raise DatasetError('cross-validation needs two folds or more')
    return [ordered[i::count] for i in range(count)]


def fold_name(group: Sequence[str]) -> str:
    return '+'.join(group)


def _selected(only: str, count: int) -> list[int]:
    if only.strip().lower() == 'all':
        return list(range(count))
    if only.strip().lower() == 'none':
        return []
    try:
        chosen = sorted({int(part) for part in only.split(',') if part.strip()})
    except ValueError as exc:
        raise DatasetError(f'--only {only!r}: expected all, none or fold numbers like 0,2') from exc
    if any(not 0 <= i < count for i in chosen):
        raise DatasetError(f'--only {only!r}: there are folds 0-{count - 1}')
    return chosen


def train_fold(
    template: WeldClassifier,
    datamodule: WeldDataModule,
    group: Sequence[str],
    trainer_args: dict[str, Any],
    epochs: int,
    seed: int | None,
    retries: int,
    fold_dir: Path,
) -> dict[str, Any]:
    """Train on every session but ``group``'s, predict ``group``'s frames; written to ``fold_dir``."""
    held_out = _held_out_data(datamodule, group)
    train_once = partial(refit, template, held_out, trainer_args, epochs, None, 'trainval')
    result, summary = refit_until_learnt(train_once, 'trainval', fold_dir, seed, retries)
    metrics = _predict_fold(result.model, result.datamodule, fold_dir)
    fold = {
        'held_out': list(group),
        'train_sessions': summary['train_sessions'],
        'train_frames': summary['train_frames'],
        'seconds': summary['seconds'],
        'seed': summary['seed'],
        'attempts': summary['attempts'],
        'train': summary['train'],
        'train_weak_classes': summary['train_weak_classes'],
        'test_argmax': metrics,
        'eval_views': result.model.views,
    }
    (fold_dir / 'fold.json').write_text(json.dumps(fold, indent=1))
    return fold


def _held_out_data(template_data: WeldDataModule, group: Sequence[str]) -> WeldDataModule:
    """``template_data``'s settings with ``group`` as the test sessions and no validation split."""
    data_args = {
        k: v
        for k, v in init_args(WeldDataModule, template_data.hparams).items()
        if not k.endswith('_sessions')
    }
    return WeldDataModule(**data_args, val_sessions=[], test_sessions=list(group))


def _predict_fold(model: WeldClassifier, held_out: WeldDataModule, fold_dir: Path) -> dict[str, Any]:
    """Predict the held-out frames with ``model`` (its ``eval_views``); written to ``fold_dir``."""
    probabilities = predict(model, held_out.inputs('test'))
    frames = held_out.splits['test']
    np.savez(
        fold_dir / PREDICTIONS,
        probabilities=probabilities.astype(np.float32),
        labels=held_out.labels('test'),
        sessions=np.array([f['session'] for f in frames]),
        stamps=np.array([int(f.get('stamp_ns', 0)) for f in frames], np.int64),
        class_names=np.array(model.class_names),
        eval_views=np.int64(model.views),
    )
    return classification_metrics(
        torch.from_numpy(probabilities.argmax(1)),
        torch.from_numpy(held_out.labels('test')),
        model.class_names,
    )


def predict_again(
    template: WeldClassifier, template_data: WeldDataModule, group: Sequence[str], fold_dir: Path
) -> bool:
    """Predict a finished fold again, without training, when only ``eval_views`` changed; whether it did.

    The views average mirror images of the input and change no weight, so the fold's checkpoint
    with the template's count gives what training the fold with it would have given (for the same
    weights). Predictions written before the count was recorded were made with one view.
    """
    with np.load(fold_dir / PREDICTIONS) as data:
        views = int(data['eval_views']) if 'eval_views' in data.files else 1
    if views == template.views:
        return False
    checkpoint = fold_dir / 'checkpoints' / REFIT_CHECKPOINT
    if not checkpoint.is_file():
        raise DatasetError(f'{fold_dir}: predicted with {views} views and its {checkpoint.name} is gone')
    model = WeldClassifier.load_from_checkpoint(
        checkpoint, map_location='cpu', init_weights=None, eval_views=template.views
    )
    fold = json.loads((fold_dir / 'fold.json').read_text())
    fold['test_argmax'] = _predict_fold(model, _held_out_data(template_data, group), fold_dir)
    fold['eval_views'] = template.views
    (fold_dir / 'fold.json').write_text(json.dumps(fold, indent=1))
    return True


@contextmanager
def _claimed(fold_dir: Path) -> Iterator[bool]:
    """Whether this process may train the fold (no other holds its lock file); released after."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(fold_dir / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        yield False
        return
    try:
        os.write(handle, f'{os.getpid()}\n'.encode())
        os.close(handle)
        yield True
    finally:
        (fold_dir / LOCK).unlink(missing_ok=True)


def _load_fold(fold_dir: Path) -> dict[str, Any]:
    with np.load(fold_dir / PREDICTIONS) as data:
        return {key: data[key] for key in data.files}


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Natural log in float64, zeros clipped to 1e-9 (predictions saved as float32 probabilities)."""
    return np.log(np.clip(probabilities.astype(np.float64), 1e-9, 1.0))


def _metrics(preds: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    return classification_metrics(torch.from_numpy(preds), torch.from_numpy(labels), class_names)


def summarise(
    out: Path, groups: Sequence[Sequence[str]], max_good_fpr: float, confidence: float
) -> dict[str, Any]:
    """Out-of-fold figures of the folds done so far: arg-max, nested threshold, the offset for all."""
    done = {
        fold_name(g): _load_fold(out / 'folds' / fold_name(g))
        for g in groups
        if (out / 'folds' / fold_name(g) / PREDICTIONS).is_file()
    }
    return summarise_folds(done, groups, max_good_fpr, confidence)


def summarise_folds(
    done: dict[str, dict[str, Any]], groups: Sequence[Sequence[str]], max_good_fpr: float, confidence: float
) -> dict[str, Any]:
    """:func:`summarise` of predictions in hand (fold name -> probabilities, labels, class_names)."""
    summary: dict[str, Any] = {
        'groups': [list(g) for g in groups],
        'folds_done': list(done),
        'folds_missing': [fold_name(g) for g in groups if fold_name(g) not in done],
        'max_good_fpr': max_good_fpr,
        'good_fpr_confidence': confidence,
    }
    if not done:
        return summary
    class_names = [str(c) for c in next(iter(done.values()))['class_names']]
    probabilities = {name: f['probabilities'] for name, f in done.items()}
    log_probs = {name: log_probabilities(p) for name, p in probabilities.items()}
    labels = {name: f['labels'] for name, f in done.items()}
    folds: dict[str, Any] = {}
    nested_preds, all_labels = [], []
    for name in done:
        others = [n for n in done if n != name]
        entry: dict[str, Any] = {
            'argmax': headline(_metrics(log_probs[name].argmax(1), labels[name], class_names))
        }
        if others and max_good_fpr >= 0:
            calibration = choose_good_bias(
                np.concatenate([probabilities[n] for n in others]),
                np.concatenate([labels[n] for n in others]),
                class_names,
                max_good_fpr,
                confidence,
            )
            preds = decide(log_probs[name], class_names.index(GOOD_CLASS), calibration.good_logit_bias)
            entry['nested_offset'] = calibration.good_logit_bias
            entry['nested'] = headline(_metrics(preds, labels[name], class_names))
            nested_preds.append(preds)
            all_labels.append(labels[name])
        folds[name] = entry
    pooled_log_probs = np.concatenate(list(log_probs.values()))
    pooled_labels = np.concatenate(list(labels.values()))
    summary['folds'] = folds
    summary['argmax'] = _metrics(pooled_log_probs.argmax(1), pooled_labels, class_names)
    if nested_preds:
        summary['nested'] = _metrics(np.concatenate(nested_preds), np.concatenate(all_labels), class_names)
    if max_good_fpr >= 0:
        calibration = choose_good_bias(
            np.concatenate(list(probabilities.values())), pooled_labels, class_names, max_good_fpr, confidence
        )
        summary['calibration'] = calibration.as_dict()
    summary['class_names'] = class_names
    return summary


def table(summary: dict[str, Any]) -> str:
    if not summary.get('folds'):
        return f'no fold done yet (missing: {", ".join(summary["folds_missing"])})'
    lines = [f'{"held out":<16} {"arg-max":>15} {"offset":>7} {"nested threshold":>17}']
    for name, entry in summary['folds'].items():
        a = entry['argmax']
        nested = entry.get('nested')
        lines.append(
            f'{name:<16} {a["macro_recall"]:>7.3f} / {a["good_fpr"]:.3f} '
            + (
                f'{entry["nested_offset"]:>+7.1f} {nested["macro_recall"]:>9.3f} / {nested["good_fpr"]:.3f}'
                if nested
                else ''
            )
        )
    for key, title in (('argmax', 'all, arg-max'), ('nested', 'all, nested')):
        if key in summary:
            m = summary[key]
            recalls = ' / '.join(f'{v["recall"]:.2f}' for v in m['per_class'].values())
            names = ' / '.join(summary['class_names'])
            lines.append(
                f'{title}: macro-recall {m["macro_recall"]:.3f}, good-FPR {m["good_fpr"]:.3f}, missed '
                f'defects {m["missed_defect_rate"]:.3f} ({m["frames"]} frames; recall {names}: {recalls})'
            )
    if 'rules' in summary:
        m = summary['rules']
        lines.append(
            f'rules on the same frames: macro-recall {m["macro_recall"]:.3f}, good-FPR {m["good_fpr"]:.3f}, '
            f'missed defects {m["missed_defect_rate"]:.3f}'
        )
    if 'calibration' in summary:
        c = summary['calibration']
        lines.append(
            f'offset for a model of every session: {c["good_logit_bias"]:+.1f} (out-of-fold good-FPR '
            f'{c["val_good_fpr_after"]:.3f} of {c["val_good_frames"]} good welds, '
            f'bound {c["val_good_fpr_bound"]:.3f})'
        )
    if summary['folds_missing']:
        lines.append(f'folds still to train: {", ".join(summary["folds_missing"])}')
    return '\n'.join(lines)


def crossval(args: Sequence[str] = (), config: str | Path | None = DEFAULT_CONFIG) -> dict[str, Any]:
    """Train the selected folds, then summarise (and ``--final``); returns the summary written."""
    cli = build_cli(CrossvalCLI, args, config, __doc__.split('\n')[0])
    if str(cli.config.get('refit') or 'none') != 'none':
        raise DatasetError(
            '--refit is an option of training.fit: crossval trains its final model with --final'
        )
    out = Path(cli.config['out'])
    datamodule, template = cli.datamodule, cli.model
    groups = session_groups([f['session'] for f in datamodule.store.frames], int(cli.config['folds']))
    trainer_args = cli.config['trainer'].as_dict()
    epochs = int(cli.trainer.max_epochs or 1)
    seed = cli.config.get('seed_everything')
    retries = int(cli.config.get('refit_retries') or 0)
    max_good_fpr = float(cli.config.get('max_good_fpr', 0.05))
    confidence = float(cli.config.get('good_fpr_confidence', GOOD_FPR_CONFIDENCE))
    for index in _selected(str(cli.config['only']), len(groups)):
        name = fold_name(groups[index])
        fold_dir = out / 'folds' / name
        if (fold_dir / PREDICTIONS).is_file():
            print(f'crossval: fold {index} ({name}) done already', file=sys.stderr)
            continue
        with _claimed(fold_dir) as claimed:
            if not claimed:
                print(
                    f'crossval: fold {index} ({name}) is being trained by another process '
                    f'(remove {fold_dir / LOCK} if none is)',
                    file=sys.stderr,
                )
                continue
            print(f'crossval: fold {index} of {len(groups)}: holding out {name}', file=sys.stderr)
            train_fold(template, datamodule, groups[index], trainer_args, epochs, seed, retries, fold_dir)
    for group in groups:  # every fold done, here or elsewhere: the summary pools them all
        fold_dir = out / 'folds' / fold_name(group)
        if not (fold_dir / PREDICTIONS).is_file():
            continue
        with _claimed(fold_dir) as claimed:
            if claimed and predict_again(template, datamodule, group, fold_dir):
                print(
                    f'crossval: fold {fold_name(group)} predicted again with {template.views} views '
                    '(its checkpoint; not trained again)',
                    file=sys.stderr,
                )
    summary = summarise(out, groups, max_good_fpr, confidence)
    held_out = {session for group in groups if fold_name(group) in summary['folds_done'] for session in group}
    if held_out:
        # the board's rule-based fallback on the same held-out frames (it needs no training)
        frames = [f for f in datamodule.store.frames if f['session'] in held_out]
        summary['rules'] = evaluate_rules(datamodule.store, frames)
    summary['eval_views'] = template.views
    summary['dataset_digest'] = datamodule.digest
    if cli.config['final']:
        if summary['folds_missing']:
            raise DatasetError(f'--final needs every fold done first (missing: {summary["folds_missing"]})')
        summary['final'] = _train_final(
            template, datamodule, trainer_args, epochs, seed, retries, out, summary
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def _train_final(
    template: WeldClassifier,
    datamodule: WeldDataModule,
    trainer_args: dict[str, Any],
    epochs: int,
    seed: int | None,
    retries: int,
    out: Path,
    summary: dict[str, Any],
) -> dict[str, Any]:
    calibration = Calibration(**summary['calibration']) if 'calibration' in summary else None
    train_once = partial(refit, template, datamodule, trainer_args, epochs, calibration, 'all')
    result, final = refit_until_learnt(train_once, 'all', out / 'final', seed, retries)
    final['crossval'] = {key: headline(summary[key]) for key in ('argmax', 'nested') if key in summary}
    state = torch.load(result.checkpoint, map_location='cpu', weights_only=False)
    state['weldvision_crossval'] = final['crossval'] | {'groups': summary['groups']}
    torch.save(state, result.checkpoint)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        summary = crossval(args, config=DEFAULT_CONFIG)
    except WeldError as exc:
        print(f'crossval: {exc}', file=sys.stderr)
        return 2
    print(table(summary))
    if 'final' in summary:
        print(
            'model trained on every session, cross-validated offset folded in: '
            + str(summary['final']['checkpoint'])
        )
        weak = summary['final'].get('train_weak_classes') or {}
        if weak:
            print(
                f'warning: the final model did not learn {weak} on its own training frames: do not deploy it'
            )
    return 0


if __name__ == '__main__':
    sys.exit(main())
