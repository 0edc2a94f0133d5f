"""``python -m training.ensemble``: several cross-validated runs as one model: figures, offset, ONNX.

    python -m training.ensemble runs/cv_s0 runs/cv_s1 runs/cv_s2               # figures only
    python -m training.ensemble runs/cv_s0 runs/cv_s1 runs/cv_s2 -o models/weld.onnx --dataset data/weldsim

Each RUN is a ``training.crossval`` folder: the same folds of the same dataset, any configuration
or seed. Per frame the members' logits are averaged (their log-probabilities averaged: the same
decision); from these out-of-fold averages come crossval's figures (arg-max, nested threshold, the
offset over every good weld), printed beside each member's own. Members disagree on the frames whose
cue is faint, so their average is steadier from session to session: on weldsim two members gained
about 2.7 points with the nested threshold over one (docs/training.md).

With ``-o`` each run's final model (``crossval --final``, every session) becomes a member of one
ONNX graph: the members' logits averaged, then softmax. Each member's own folded offset is taken out
and the ensemble's put in its place, so the averaged good logit carries exactly the offset the
figures chose. Export, parity check (ONNX Runtime + runtime preprocessing against the members in
PyTorch) and contract metadata as ``training.export``; the metadata's ``gflop`` counts every member,
``validation_metrics`` holds the ensemble's cross-validated figures. The members must read the same
input (channels, size, preprocessing settings), have the same classes and views, and have been
trained on the same sessions. Compute and size grow with the members: the board's CPU budget is one
compact model (0.15 GFLOP); an ensemble is for boards with headroom.
"""

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.calibrate import GOOD_FPR_CONFIDENCE, fold_good_bias
from training.crossval import PREDICTIONS, SUMMARY, fold_name, log_probabilities, summarise_folds, table
from training.data import FrameStore
from training.errors import DatasetError, ExportError
from training.export import DEFAULT_TOLERANCE, ExportResult, build_metadata, parity_check, write_onnx
from training.fit import headline
from training.module import WeldClassifier
from weld_core.errors import WeldError

# what every member must share: the input the runtime prepares once for all of them
_SHARED_HPARAMS = ('input_channels', 'input_size', 'preprocess', 'eval_views')


def _load_run(run: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """A crossval folder's summary and every fold's out-of-fold predictions; refused if any is missing."""
    if not (run / SUMMARY).is_file():
        raise DatasetError(f'{run}: no {SUMMARY}; run training.crossval ... --only none there first')
    summary = json.loads((run / SUMMARY).read_text())
    folds = {}
    for group in summary['groups']:
        path = run / 'folds' / fold_name(group) / PREDICTIONS
        if not path.is_file():
            raise DatasetError(f'{run}: fold {fold_name(group)} is not done ({path} missing)')
        with np.load(path) as data:
            folds[fold_name(group)] = {key: data[key] for key in data.files}
    return summary, folds


def _check_same(name: str, values: dict[Path, Any]) -> None:
    if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
        listed = '; '.join(f'{run}: {value}' for run, value in values.items())
        raise DatasetError(f'the runs differ in their {name} ({listed}): they cannot be averaged')


def average_runs(runs: Sequence[Path]) -> tuple[dict[Path, Any], dict[str, dict[str, np.ndarray]]]:
    """Check that ``runs`` predicted the same frames; their mean log-probabilities per fold.

    Returns each run's crossval summary and, per fold, ``probabilities`` (softmax of the mean
    log-probabilities), ``labels`` and ``class_names``.
    """
    if len(runs) < 2:
        raise DatasetError('an ensemble needs two crossval runs or more')
    loaded = {run: _load_run(run) for run in runs}
    summaries = {run: summary for run, (summary, _) in loaded.items()}
    for key in ('groups', 'dataset_digest', 'eval_views', 'class_names'):
        _check_same(key, {run: summary.get(key) for run, summary in summaries.items()})
    averaged = {}
    for name in loaded[runs[0]][1]:
        folds = [loaded[run][1][name] for run in runs]
        for key in ('labels', 'sessions', 'stamps'):
            if any(not np.array_equal(folds[0][key], fold[key]) for fold in folds[1:]):
                raise DatasetError(f'fold {name}: the runs predicted different frames ({key} differ)')
        log_probs = np.mean([log_probabilities(fold['probabilities']) for fold in folds], axis=0)
        probabilities = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        averaged[name] = {
            'probabilities': probabilities.astype(np.float32),
            'labels': folds[0]['labels'],
            'class_names': folds[0]['class_names'],
        }
    return summaries, averaged


def ensemble_summary(
    runs: Sequence[Path], max_good_fpr: float = 0.05, confidence: float = GOOD_FPR_CONFIDENCE
) -> dict[str, Any]:
    """Crossval's out-of-fold figures of the runs' averaged predictions (``training.crossval.summarise``)."""
    return _summarise_runs(runs, max_good_fpr, confidence)[0]


def _summarise_runs(
    runs: Sequence[Path], max_good_fpr: float, confidence: float
) -> tuple[dict[str, Any], dict[Path, Any]]:
    """:func:`ensemble_summary`, and each run's own crossval summary."""
    summaries, averaged = average_runs(runs)
    first = summaries[runs[0]]
    summary = summarise_folds(averaged, first['groups'], max_good_fpr, confidence)
    summary['members'] = {
        str(run): {key: headline(own[key]) for key in ('argmax', 'nested') if key in own}
        for run, own in summaries.items()
    }
    summary['eval_views'] = first.get('eval_views')
    summary['dataset_digest'] = first.get('dataset_digest')
    return summary, summaries


class EnsembleClassifier(nn.Module):
    """Members' logits (each with its own views) averaged; what ``training.export`` asks of a model."""

    def __init__(self, members: Sequence[WeldClassifier]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.class_names = list(first.class_names)
        self.channels = list(first.channels)
        self.views = first.views
        name = str(first.hparams['model_name'])
        self.hparams = {
            **{key: first.hparams.get(key) for key in _SHARED_HPARAMS},
            'model_name': f'ensemble{len(members)}-{name}',
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def complexity(self) -> dict[str, float]:
        figures = [member.complexity() for member in self.members]
        return {key: sum(f[key] for f in figures) for key in figures[0]}


def build_ensemble(checkpoints: Sequence[Path], good_logit_bias: float) -> EnsembleClassifier:
    """The members of ``checkpoints`` with ``good_logit_bias`` as each one's good-class offset."""
    members, trained_on = [], {}
    for checkpoint in checkpoints:
        if not checkpoint.is_file():
            raise ExportError(f'{checkpoint}: no such checkpoint (run training.crossval ... --final true)')
        state = torch.load(checkpoint, map_location='cpu', weights_only=False)
        member = WeldClassifier.load_from_checkpoint(checkpoint, map_location='cpu', init_weights=None).eval()
        folded = float((state.get('weldvision_calibration') or {}).get('good_logit_bias', 0.0))
        # its own offset out, the ensemble's in: the mean of the logits then carries the ensemble's
        fold_good_bias(member.net, member.class_names, good_logit_bias - folded)
        trained_on[checkpoint] = sorted((state.get('weldvision_refit') or {}).get('train_sessions', []))
        members.append(member)
    for key in _SHARED_HPARAMS:
        _check_same(key, {c: m.hparams.get(key) for c, m in zip(checkpoints, members, strict=True)})
    _check_same('classes', {c: m.class_names for c, m in zip(checkpoints, members, strict=True)})
    _check_same('training sessions', trained_on)
    return EnsembleClassifier(members).eval()


def export_ensemble(
    runs: Sequence[Path],
    out: Path,
    dataset_dir: Path,
    version: str,
    max_good_fpr: float = 0.05,
    confidence: float = GOOD_FPR_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    parity_frames: int = 32,
) -> tuple[dict[str, Any], ExportResult]:
    """The runs' final models as one ONNX graph with the offset chosen on their averaged predictions."""
    summary, summaries = _summarise_runs(runs, max_good_fpr, confidence)
    finals = {}
    for run in runs:
        final = summaries[run].get('final')
        if not final:
            raise ExportError(f'{run}: no final model; run training.crossval ... --final true there first')
        if final.get('train_weak_classes'):  # as crossval --final: a warning for the one who deploys
            summary.setdefault('weak_members', {})[str(run)] = final['train_weak_classes']
        finals[run] = Path(final['checkpoint'])
    bias = float(summary['calibration']['good_logit_bias']) if 'calibration' in summary else 0.0
    model = build_ensemble(list(finals.values()), bias)
    if model.views != summary['eval_views']:
        raise ExportError(
            f'the final models average {model.views} views, their out-of-fold predictions '
            f'{summary["eval_views"]}: the offset would not fit; predict the folds again with '
            f'--model.eval_views {model.views}'
        )
    store = FrameStore(dataset_dir)
    if store.manifest['digest'] != summary['dataset_digest']:
        raise ExportError(f'{dataset_dir}: not the dataset the runs were cross-validated on (digest differs)')
    metrics = {
        'crossval': {key: headline(summary[key]) for key in ('argmax', 'nested') if key in summary},
        'sessions': {'train': sorted({s for g in summary['groups'] for s in g}), 'test': []},
        'refit': 'all',
        'members': summary['members'],
    }
    metadata = build_metadata(model, finals[runs[0]], metrics, store.manifest['digest'], version)
    metadata['source_checkpoint'] = ','.join(str(path) for path in finals.values())
    write_onnx(model, out, metadata)
    worst, count = parity_check(model, out, store, parity_frames, tolerance)
    return summary, ExportResult(path=out, metadata=metadata, parity_max_abs_diff=worst, parity_frames=count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m training.ensemble', description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', type=Path, help='training.crossval folders (two or more)')
    parser.add_argument('-o', '--out', type=Path, default=None, help='ONNX file of the final models to write')
    parser.add_argument('--dataset', type=Path, default=None, help='dataset folder (parity check); with -o')
    parser.add_argument('--version', default=None, help='model_version (default: UTC time stamp)')
    parser.add_argument('--max_good_fpr', type=float, default=0.05)
    parser.add_argument('--good_fpr_confidence', type=float, default=GOOD_FPR_CONFIDENCE)
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE)
    args = parser.parse_args(argv)
    if args.out is not None and args.dataset is None:
        parser.error('-o needs --dataset (the parity check runs on its frames)')
    try:
        if args.out is None:
            summary = ensemble_summary(args.runs, args.max_good_fpr, args.good_fpr_confidence)
        else:
            version = args.version or dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')
            summary, result = export_ensemble(
                args.runs,
                args.out,
                args.dataset,
                version,
                args.max_good_fpr,
                args.good_fpr_confidence,
                args.tolerance,
            )
    except WeldError as exc:
        print(f'ensemble: {exc}', file=sys.stderr)
        return 2
    for run, own in summary['members'].items():
        print(
            f'member {run}: '
            + ', '.join(f'{key} {m["macro_recall"]:.3f} / {m["good_fpr"]:.3f}' for key, m in own.items())
        )
    print(f'ensemble of {len(args.runs)}, out of fold:')
    print(table(summary))
    for run, weak in summary.get('weak_members', {}).items():
        print(
            f'warning: the final model of {run} did not learn {weak} on its own training frames: '
            'do not deploy this ensemble'
        )
    if args.out is not None:
        print(
            f'wrote {result.path} ({result.metadata["model_name"]}, {result.metadata["gflop"]} GFLOP); '
            f'parity: max |dp| {result.parity_max_abs_diff:.2e} over {result.parity_frames} frames'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
