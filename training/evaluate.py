"""``weld-train evaluate``: run ONNX models the way the board does, on a split or on bags.

    weld-train evaluate models/a.onnx --dataset data/weldsim --split test
    weld-train evaluate models/a.onnx --bags /path/to/new/sessions
    weld-train evaluate models/a.onnx --dataset data/weldsim --split test --rules

Each model is run through the runtime path (``read_model_info`` -> its own Preprocessor from the
file's metadata -> ONNX Runtime), so what is measured is what would be deployed. Reports per-class
recall, macro-recall, good-FPR, missed-defect rate, latency per frame (preprocessing and model),
file size and GFLOP. ``weld-train compare`` prints several models side by side.

``--rules`` adds the board's rule-based fallback (``weld_inference.rules.RuleDetector``) as one
more column on the same frames, with each bag's camera intrinsics from the dataset manifest: the
figure a model has to beat before it is worth deploying.
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.convert import convert
from training.data import FrameStore
from training.errors import DatasetError
from training.metrics import classification_metrics
from weld_core.errors import WeldError
from weld_core.model_file import ModelInfo, open_session, read_model_info

RULES = 'rules'  # the rule detector's column
MODEL_VERSION = 'model'  # --version: the dataset version the models were trained on


@dataclass
class ModelRun:
    """One ONNX model run over frames: per-frame probabilities, class indices and timings."""

    model_path: Path
    info: ModelInfo
    probabilities: np.ndarray  # (frames, classes), float32
    targets: np.ndarray  # class index of each frame's label in the model's class order
    preprocess_ms: np.ndarray
    model_ms: np.ndarray


def run_model(
    model_path: str | Path, store: FrameStore, frames: Sequence[dict[str, Any]], threads: int = 1
) -> ModelRun:
    """Run one ONNX model on ``frames`` of ``store`` (batch 1, like the board), timing each step."""
    model_path = Path(model_path)
    session = open_session(model_path, intra_op_threads=threads)
    info = read_model_info(model_path, session=session)
    names = list(info.class_names)
    targets = _targets(frames, names, str(model_path))
    probabilities = np.zeros((len(frames), len(names)), np.float32)
    pre_ms, model_ms = np.zeros(len(frames)), np.zeros(len(frames))
    for i, frame in enumerate(frames):
        rgb, depth = store.pair(frame)
        start = time.perf_counter()
        tensor = info.preprocessor(rgb, depth)[None]
        mid = time.perf_counter()
        probabilities[i] = session.run(None, {info.input_name: tensor})[0][0]
        end = time.perf_counter()
        pre_ms[i], model_ms[i] = (mid - start) * 1e3, (end - mid) * 1e3
    return ModelRun(model_path, info, probabilities, targets, pre_ms, model_ms)


def metrics_of(run: ModelRun) -> dict[str, Any]:
    """Metrics, median timings, size and GFLOP of a :class:`ModelRun` (the table's and JSON's row)."""
    names = list(run.info.class_names)
    metrics = classification_metrics(
        torch.from_numpy(run.probabilities.argmax(1)), torch.from_numpy(run.targets), names
    )
    metrics.update(
        model=str(run.model_path),
        model_id=run.info.model_id,
        latency_ms=float(np.median(run.model_ms)) if run.model_ms.size else 0.0,
        preprocess_ms=float(np.median(run.preprocess_ms)) if run.preprocess_ms.size else 0.0,
        size_mb=run.model_path.stat().st_size / 1e6,
        gflop=float(run.info.metadata.get('gflop', 'nan')),
        input=f'{",".join(run.info.preprocessor.channels)} @ {run.info.metadata["input_size"]}',
    )
    return metrics


def _targets(frames: Sequence[dict[str, Any]], names: Sequence[str], who: str) -> np.ndarray:
    missing = sorted({f['label'] for f in frames} - set(names))
    if missing:
        raise DatasetError(f'{who}: the data has classes it does not know: {missing}')
    return np.array([list(names).index(f['label']) for f in frames], np.int64)


def evaluate_rules(store: FrameStore, frames: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rule detector's metrics and time per frame on ``frames``: the same row as a model's.

    Each frame is judged with its bag's intrinsics from the manifest (the detector's default camera,
    fx = fy = 300 px at 320 px wide, where the bag had no CameraInfo).
    """
    from weld_inference.rules import RuleDetector  # the board's fallback, as deployed

    detector = RuleDetector(class_names=store.manifest['classes'])
    names = list(detector.class_names)
    targets = _targets(frames, names, 'the rule detector')
    predicted = np.zeros(len(frames), np.int64)
    rules_ms = np.zeros(len(frames))
    unknown = 0
    for i, frame in enumerate(frames):
        rgb, depth = store.pair(frame)
        camera = store.intrinsics(frame) or {}
        unknown += not camera
        start = time.perf_counter()
        result = detector(rgb, depth, **camera)
        rules_ms[i] = (time.perf_counter() - start) * 1e3
        predicted[i] = names.index(result.label)
    metrics = classification_metrics(torch.from_numpy(predicted), torch.from_numpy(targets), names)
    metrics.update(
        model=RULES,
        model_id='weld_inference.rules',
        latency_ms=float(np.median(rules_ms)) if rules_ms.size else 0.0,
        preprocess_ms=0.0,
        size_mb=0.0,
        gflop=float('nan'),
        input='rgb + depth, thresholds in mm'
        + (f' ({unknown} frames with the default camera)' if unknown else ''),
    )
    return metrics


def evaluate_model(
    model_path: str | Path, store: FrameStore, frames: Sequence[dict[str, Any]], threads: int = 1
) -> dict[str, Any]:
    """Metrics and timings of one ONNX model on ``frames`` of ``store`` (batch 1, like the board)."""
    return metrics_of(run_model(model_path, store, frames, threads))


def _frames(store: FrameStore, split: str, sessions: Sequence[str] = ()) -> list[dict[str, Any]]:
    if sessions:
        unknown = sorted(set(sessions) - {f['session'] for f in store.frames})
        if unknown:
            raise DatasetError(f'{store.root}: no session {", ".join(unknown)} in the dataset')
        return [f for f in store.frames if f['session'] in sessions]
    frames = store.frames if split == 'all' else [f for f in store.frames if f['split'] == split]
    if not frames:
        raise DatasetError(f'{store.root}: no frames in split {split!r}')
    return frames


def evaluate(
    models: Sequence[str | Path],
    dataset_dir: str | Path | None = None,
    bags: Sequence[str | Path] = (),
    split: str = 'test',
    threads: int = 1,
    rules: bool = False,
    sessions: Sequence[str] = (),
    version: str | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every model (and with ``rules`` the rule detector) on the same frames: a dataset
    split (or the dataset's ``sessions``, whatever their split), or every labelled frame of ``bags``.

    ``version``: a frozen dataset version (default the current one), or ``model``: the version the
    models were trained on (their metadata's ``dataset_version``; all must name the same)."""
    if bool(dataset_dir) == bool(bags):
        raise DatasetError('give either a dataset folder or bags to evaluate on')
    if not models and not rules:
        raise DatasetError('nothing to evaluate: give ONNX models, --rules, or both')
    if bags and (sessions or version):
        raise DatasetError(
            'sessions and versions pick frames of a dataset folder: with bags, every labelled frame is used'
        )

    def run(store: FrameStore, frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        results = [evaluate_model(m, store, frames, threads) for m in models]
        return results + ([evaluate_rules(store, frames)] if rules else [])

    if bags:
        with tempfile.TemporaryDirectory(prefix='weld-eval-') as temp:
            convert(bags, temp, progress=False)
            store = FrameStore(temp)
            return run(store, store.frames)
    store = FrameStore(dataset_dir, trained_version(models) if version == MODEL_VERSION else version)  # type: ignore[arg-type]
    return run(store, _frames(store, split, sessions))


def trained_version(models: Sequence[str | Path]) -> str:
    """The dataset version every one of ``models`` names in its metadata as the one it trained on."""
    named = {str(m): read_model_info(m).metadata.get('dataset_version', '') for m in models}
    versions = set(named.values())
    if not models or len(versions) != 1 or '' in versions:
        listed = ', '.join(f'{Path(m).name}: {v or "none"}' for m, v in named.items())
        raise DatasetError(
            f'--version {MODEL_VERSION} needs models that name one dataset version '
            f'({listed or "no models"}); give the version by name'
        )
    return versions.pop()


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Side-by-side table: one column per model."""
    if not results:
        return '(no models)'
    names = list(results[0]['per_class'])
    rows: list[tuple[str, list[str]]] = [
        ('model', [Path(r['model']).name for r in results]),
        ('input', [r['input'] for r in results]),
        ('frames', [str(r['frames']) for r in results]),
        ('macro-recall', [f'{r["macro_recall"]:.3f}' for r in results]),
        ('good-FPR', [f'{r.get("good_fpr", float("nan")):.3f}' for r in results]),
        ('missed defects', [f'{r.get("missed_defect_rate", float("nan")):.3f}' for r in results]),
        ('accuracy', [f'{r["accuracy"]:.3f}' for r in results]),
    ]
    rows += [
        (f'recall {n}', [f'{r["per_class"].get(n, {}).get("recall", float("nan")):.3f}' for r in results])
        for n in names
    ]
    rows += [
        ('latency ms (model)', [f'{r["latency_ms"]:.2f}' for r in results]),
        ('preprocess ms', [f'{r["preprocess_ms"]:.2f}' for r in results]),
        ('size MB', [f'{r["size_mb"]:.2f}' for r in results]),
        ('GFLOP', [f'{r["gflop"]:.3f}' if np.isfinite(r['gflop']) else '-' for r in results]),
    ]
    width = max(len(label) for label, _ in rows)
    cols = [max(len(row[1][i]) for row in rows) for i in range(len(results))]
    return '\n'.join(
        label.ljust(width) + '  ' + '  '.join(v.rjust(c) for v, c in zip(values, cols, strict=True))
        for label, values in rows
    )


def build_parser(prog: str = 'weld-train evaluate') -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('models', nargs='*', help='ONNX model files')
    parser.add_argument('--dataset', default=None, help='dataset folder made by training.convert')
    parser.add_argument(
        '--version',
        default=None,
        help="the dataset's frozen version to run on (default: the current one; 'model': the one the "
        'models were trained on, named in their metadata)',
    )
    parser.add_argument('--split', default='test', choices=('train', 'val', 'test', 'all'))
    parser.add_argument(
        '--sessions',
        default='',
        help='comma-separated sessions of the dataset to run on instead of a split (a held-out fold)',
    )
    parser.add_argument('--bags', nargs='*', default=[], help='bag directories / .tar.gz sessions instead')
    parser.add_argument(
        '--threads', type=int, default=1, help='ONNX Runtime threads (1: like one board core)'
    )
    parser.add_argument(
        '--rules',
        action='store_true',
        help="also run the board's rule-based fallback on the same frames (the figure to beat)",
    )
    parser.add_argument('--json', default=None, help='also write the full results here')
    return parser


def main(argv: Sequence[str] | None = None, prog: str = 'weld-train evaluate') -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        sessions = [name for name in args.sessions.split(',') if name]
        results = evaluate(
            args.models, args.dataset, args.bags, args.split, args.threads, args.rules, sessions, args.version
        )
    except WeldError as exc:
        print(f'{prog.split(".")[-1]}: {exc}', file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
