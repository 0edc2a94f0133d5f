"""``weld-train crossval DATASET``: held-out figures of the procedure over folds of sessions.

    weld-train crossval data/weldsim --folds 4 --out runs/crossval
    weld-train crossval data/weldsim --folds 4 --only 0,1 --threads 1   # some folds here (one per core)
    weld-train crossval data/weldsim --folds 4 --only none              # the figures of the folds done so far

The sessions are dealt into ``--folds`` groups (0: one per session); for each group the recipe is
trained exactly as ``release`` trains (training.procedure: from scratch, the configured epochs, the
last epoch) on every other session, and the group's frames are predicted by it. Every frame then
has a prediction from a model that never saw its session, and from these out-of-fold predictions:

- ``arg-max``: held-out figures with no threshold;
- ``nested``: each group thresholded with the offset chosen (training.calibrate's rule) on the
  *other* groups' predictions: held-out figures with a threshold chosen without the group;
- ``offset``: the offset chosen on all of them.

Each fold is a full run: k folds cost k runs. Finished folds are kept in ``<out>/folds/`` and not
trained again, so a stopped run resumes, and folds can run in separate processes (``--only``; a fold
being trained holds a lock file, ``training.lock``, that the others respect). The figures go to
``<out>/crossval.json``; docs/results.md cites them.
"""

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser

from training.calibrate import choose_good_bias, decide
from training.config import parse, recipe_of, recipe_parser
from training.errors import DatasetError
from training.evaluate import evaluate_rules
from training.metrics import classification_metrics
from training.procedure import (
    Recipe,
    datamodule,
    headline,
    metrics_at,
    predict,
    quiet_lightning,
    set_threads,
    train,
)
from weld_core.classes import GOOD_CLASS
from weld_core.errors import WeldError

PREDICTIONS = 'predictions.npz'
SUMMARY = 'crossval.json'
LOCK = 'training.lock'  # a fold being trained, by the process whose id it holds


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
    recipe: Recipe, dataset_dir: str | Path, group: Sequence[str], fold_dir: Path
) -> dict[str, Any]:
    """Train on every session but ``group``'s, predict ``group``'s frames; written to ``fold_dir``."""
    data = datamodule(recipe, dataset_dir, val_sessions=[], test_sessions=list(group))
    run = train(recipe, data, fold_dir / 'run')  # its logs; the fold folder holds the lock file
    probabilities = predict(run.model, data.inputs('test'))
    frames = data.splits['test']
    np.savez(
        fold_dir / PREDICTIONS,
        probabilities=probabilities.astype(np.float32),
        labels=data.labels('test'),
        sessions=np.array([f['session'] for f in frames]),
        stamps=np.array([int(f.get('stamp_ns', 0)) for f in frames], np.int64),
        class_names=np.array(run.model.class_names),
    )
    fold = {
        'held_out': list(group),
        'run': run.record(),
        'test_argmax': headline(metrics_at(probabilities, data.labels('test'), run.model.class_names)),
    }
    (fold_dir / 'fold.json').write_text(json.dumps(fold, indent=1))
    return fold


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


def summarise(out: Path, groups: Sequence[Sequence[str]], recipe: Recipe) -> dict[str, Any]:
    """Out-of-fold figures of the folds done so far: arg-max, nested threshold, the offset for all."""
    done = {
        fold_name(g): _load_fold(out / 'folds' / fold_name(g))
        for g in groups
        if (out / 'folds' / fold_name(g) / PREDICTIONS).is_file()
    }
    summary: dict[str, Any] = {
        'groups': [list(g) for g in groups],
        'folds_done': list(done),
        'folds_missing': [fold_name(g) for g in groups if fold_name(g) not in done],
        'max_good_fpr': recipe.max_good_fpr,
        'good_fpr_confidence': recipe.good_fpr_confidence,
    }
    if not done:
        return summary
    class_names = tuple(str(c) for c in next(iter(done.values()))['class_names'])
    good = class_names.index(GOOD_CLASS)
    probabilities = {name: f['probabilities'] for name, f in done.items()}
    labels = {name: f['labels'] for name, f in done.items()}
    folds: dict[str, Any] = {}
    nested_preds, nested_labels = [], []
    for name in done:
        others = [n for n in done if n != name]
        entry: dict[str, Any] = {
            'argmax': headline(metrics_at(probabilities[name], labels[name], class_names))
        }
        if others:
            calibration = choose_good_bias(
                np.concatenate([probabilities[n] for n in others]),
                np.concatenate([labels[n] for n in others]),
                class_names,
                recipe.max_good_fpr,
                recipe.good_fpr_confidence,
            )
            log_probs = np.log(np.clip(probabilities[name].astype(np.float64), 1e-9, 1.0))
            nested_preds.append(decide(log_probs, good, calibration.good_logit_bias))
            nested_labels.append(labels[name])
            entry['nested_offset'] = calibration.good_logit_bias
            entry['nested'] = headline(
                metrics_at(probabilities[name], labels[name], class_names, calibration.good_logit_bias)
            )
        folds[name] = entry
    pooled = np.concatenate(list(probabilities.values()))
    pooled_labels = np.concatenate(list(labels.values()))
    summary['folds'] = folds
    summary['argmax'] = metrics_at(pooled, pooled_labels, class_names)
    if nested_preds:
        summary['nested'] = classification_metrics(
            torch.from_numpy(np.concatenate(nested_preds)),
            torch.from_numpy(np.concatenate(nested_labels)),
            class_names,
        )
    summary['calibration'] = choose_good_bias(
        pooled, pooled_labels, class_names, recipe.max_good_fpr, recipe.good_fpr_confidence
    ).as_dict()
    summary['class_names'] = list(class_names)
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


def build_parser() -> ArgumentParser:
    parser = recipe_parser('weld-train crossval', __doc__.split('\n')[0])
    parser.add_argument('dataset', help='dataset folder made by `weld-train convert`')
    parser.add_argument('--out', type=str, default='runs/crossval', help='folder of the folds and figures')
    parser.add_argument('--folds', type=int, default=0, help='session groups (0: one per session)')
    parser.add_argument('--only', type=str, default='all', help='folds to train here: all, none, or 0,2')
    return parser


def crossval(argv: Sequence[str] = ()) -> dict[str, Any]:
    """Train the selected folds, then summarise; returns the summary written to ``<out>/crossval.json``."""
    config = parse(build_parser(), argv)
    recipe = recipe_of(config)
    set_threads(recipe.threads)
    quiet_lightning()
    out = Path(config.out)
    template = datamodule(recipe, config.dataset)
    groups = session_groups([f['session'] for f in template.store.frames], int(config.folds))
    for index in _selected(str(config.only), len(groups)):
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
            train_fold(recipe, config.dataset, groups[index], fold_dir)
    summary = summarise(out, groups, recipe)
    held_out = {session for group in groups if fold_name(group) in summary['folds_done'] for session in group}
    if held_out:
        # the board's rule-based fallback on the same held-out frames (it needs no training)
        frames = [f for f in template.store.frames if f['session'] in held_out]
        summary['rules'] = evaluate_rules(template.store, frames)
    summary['dataset_digest'] = template.digest
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    try:
        summary = crossval(sys.argv[1:] if argv is None else argv)
    except WeldError as exc:
        print(f'crossval: {exc}', file=sys.stderr)
        return 2
    print(table(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
