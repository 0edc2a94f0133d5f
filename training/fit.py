"""``weld-train fit DATASET``: one held-out run of a config, with a report.

    weld-train fit data/weldsim
    weld-train fit data/weldsim --config rgb_only --trainer.max_epochs 10 --out runs/rgb

The release's held-out run on its own: trains on every session but the held-out ones (the
dataset's test sessions, or ``--test_sessions``), and measures those, each held-out session with
the good-class offset chosen on the others, beside the board's rule-based fallback on the same
frames. Writes ``--out`` (default ``runs/fit-<UTC time>``): ``model.ckpt`` (the offset chosen on
every held-out frame folded in), the logs (``metrics.csv``, TensorBoard; the curves are drawn on
the held-out frames, nothing is selected on them) and ``report/`` (metrics.json, confusion
matrix, curves, misclassified frames). This is the experiment tool; the model to deploy comes
from ``weld-train release``.
"""

import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from training.config import parse, recipe_of, recipe_parser
from training.errors import DatasetError
from training.evaluate import evaluate_rules
from training.procedure import (
    Recipe,
    Run,
    datamodule,
    fold_offset,
    headline,
    held_out_figures,
    held_out_sessions,
    quiet_lightning,
    save_checkpoint,
    set_threads,
    train,
)
from training.report import plot_confusion, plot_curves, plot_misclassified, write_metrics
from weld_core.errors import WeldError

REPORT = 'report'


def default_out(command: str) -> Path:
    return Path('runs') / f'{command}-{dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")}'


def held_out_run(
    recipe: Recipe, dataset_dir: str | Path, out: Path, test_sessions: list[str] | None = None
) -> tuple[Run, dict[str, Any]]:
    """Train on every session but the held-out ones; their figures (procedure.held_out_figures)."""
    held_out = test_sessions or held_out_sessions(datamodule(recipe, dataset_dir))
    if len(held_out) < 2:
        raise DatasetError(
            f'{dataset_dir}: a held-out run needs two held-out sessions (each is thresholded on the '
            f'other), the dataset gives {held_out}; record three sessions or more'
        )
    data = datamodule(recipe, dataset_dir, val_sessions=[], test_sessions=held_out)
    run = train(recipe, data, out)
    return run, held_out_figures(run, recipe)


def write_report(run: Run, figures: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    """metrics.json (with the rules on the same frames) and the plots of a held-out run."""
    report_dir.mkdir(parents=True, exist_ok=True)
    names = run.model.class_names
    metrics: dict[str, Any] = {key: value for key, value in figures.items() if key != 'probabilities'} | {
        'run': run.record(),
        'complexity': run.model.complexity(),
    }
    metrics['rules'] = {'test': headline(evaluate_rules(run.data.store, run.data.splits['test']))}
    if 'test' in figures:
        plot_confusion(
            figures['test']['confusion'],
            names,
            report_dir / 'confusion_test.png',
            f'held out, nested offsets: macro-recall {figures["test"]["macro_recall"]:.3f}',
        )
        plot_misclassified(
            run.data.inputs('test'),
            run.data.labels('test'),
            figures['probabilities'].argmax(1),
            run.model.channels,
            names,
            report_dir / 'misclassified_test.png',
        )
    plot_curves(run.log_dir / 'metrics.csv', report_dir / 'curves.png')
    write_metrics(report_dir / 'metrics.json', metrics)
    return metrics


def build_parser() -> ArgumentParser:
    parser = recipe_parser('weld-train fit', __doc__.split('\n')[0])
    parser.add_argument('dataset', help='dataset folder made by `weld-train convert`')
    parser.add_argument('--out', type=str, default=None, help='output folder (default runs/fit-<time>)')
    parser.add_argument(
        '--test_sessions',
        type=list[str] | None,
        default=None,
        help="sessions to hold out (two or more; default: the dataset's test sessions)",
    )
    return parser


def fit(argv: Sequence[str] = ()) -> dict[str, Any]:
    """``weld-train fit`` from Python: parse ``argv``, run, report; returns metrics.json's content."""
    config = parse(build_parser(), argv)
    recipe = recipe_of(config)
    set_threads(recipe.threads)
    quiet_lightning()
    out = Path(config.out) if config.out else default_out('fit')
    run, figures = held_out_run(recipe, config.dataset, out, config.test_sessions)
    if run.rank:  # DDP: the other processes trained beside rank 0, which alone writes and reports
        return {}
    offset = float(figures['offset_for_all']['good_logit_bias'])
    fold_offset(run.model, offset)
    record = {'run': run.record(), 'good_logit_offset': offset, 'held_out': held_out_summary(figures)}
    checkpoint = save_checkpoint(out / 'model.ckpt', run.model, record)
    metrics = write_report(run, figures, out / REPORT) | {'checkpoint': str(checkpoint)}
    write_metrics(out / REPORT / 'metrics.json', metrics)
    return metrics


def held_out_summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures a model file records about the procedure that made it (headline, per-class recall)."""
    summary: dict[str, Any] = {
        'sessions': figures['sessions'],
        'dataset_digest': figures['dataset_digest'],
        'dataset_version': figures['dataset_version'],
    }
    for key in ('test', 'test_argmax'):
        if key in figures:
            summary[key] = headline(figures[key]) | {
                'recall': {name: round(v['recall'], 3) for name, v in figures[key]['per_class'].items()}
            }
    if 'offset_for_all' in figures:
        summary['nested_offsets'] = figures['nested_offsets']
        chosen = figures['offset_for_all']
        summary['offset_for_all'] = {k: chosen[k] for k in ('good_logit_bias', 'val_good_frames', 'reason')}
    return summary


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """What a person reads at the end of a fit or release."""
    lines = []
    for key, title in (
        ('test', 'held out, each session thresholded on the others'),
        ('test_argmax', 'arg-max'),
    ):
        if key in metrics:
            m = metrics[key]
            lines.append(
                f'{title}: macro-recall {m["macro_recall"]:.3f}, good-FPR {m["good_fpr"]:.3f}, '
                f'missed defects {m["missed_defect_rate"]:.3f} ({m["frames"]} frames of '
                f'{", ".join(metrics["sessions"]["test"])})'
            )
    rules = (metrics.get('rules') or {}).get('test')
    if rules and 'test' in metrics:
        lines.append(
            f'rules on the same frames: macro-recall {rules["macro_recall"]:.3f}, '
            f'good-FPR {rules["good_fpr"]:.3f}'
        )
        if metrics['test']['macro_recall'] <= rules['macro_recall']:
            lines.append('warning: the model does not beat the rule-based fallback on these frames')
    weak = metrics['run']['train_weak_classes']
    if weak:
        listed = ', '.join(f'{name} {recall:.2f}' for name, recall in weak.items())
        lines.append(f'warning: not learnt ({listed} recall on its own training frames): do not deploy it')
    lines.append(f'trained in {metrics["run"]["seconds"]:.0f} s ({metrics["run"]["epochs"]} epochs)')
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        metrics = fit(sys.argv[1:] if argv is None else argv)
    except WeldError as exc:
        print(f'fit: {exc}', file=sys.stderr)
        return 2
    if not metrics:  # a DDP process other than rank 0
        return 0
    print('\n'.join([*summary_lines(metrics), f'checkpoint: {metrics["checkpoint"]}']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
