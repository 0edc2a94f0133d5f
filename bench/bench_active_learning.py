"""Benchmark of the console's review queue as active learning, on the simulator: does labelling the
frames the queue picks teach a model more than labelling as many frames picked at random?

Per repeat (``--repeats``, each with its own simulator seeds):
1. the simulator renders a small labelled seed set (the data a first model was trained on), an
   unlabelled pool from the line (the frames the console would see), a validation set and a
   held-out test set (balanced classes; no session is in two of these);
2. a first model is trained on the seed set (``python -m training.fit``: the default config,
   ``--threads 1``, at most ``--epochs`` epochs, no retries) and exported (``training.export``); it
   and the rules judge every pool frame through the runtime path (weld_inference's ModelRunner and
   RuleDetector);
3. ``--budget`` pool frames are labelled (with the simulator's ground truth, playing the operator):
   *queue*: the ones the console's review queue ranks first (weld_console.review: model-rules
   disagreements first, then the smallest top-2 margin); *random*: as many drawn at random;
4. each pick is added to the seed set and a model is trained the same way (same config, seed and
   epochs); both are scored on the held-out test set: macro-recall (mean per-class recall) as
   training.fit reports it.
Every set is written as a labeler session bag (weld_labeler's BagRecorder) and read with
``training.convert``, as a site's data would be. Printed: per repeat and on average the macro-recall
of the first model, of seed+queue and of seed+random, and the difference queue - random.

    .venv/bin/python bench/bench_active_learning.py [--repeats 2] [--budget 100] [--epochs 30]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

from weld_camera.sim.config import SimConfig  # noqa: E402
from weld_camera.sim.simulator import SimFrame, WeldSimulator  # noqa: E402
from weld_console.review import DISAGREE, UNSURE, ReviewItem, top2_margin  # noqa: E402
from weld_core.bag_types import CAMERA_INFO, IMAGE, weld_typestore  # noqa: E402
from weld_core.classes import DEFAULT_CLASSES  # noqa: E402
from weld_core.images import array_to_image, depth_m_to_image  # noqa: E402
from weld_core.stamps import ns_to_sec_nanosec  # noqa: E402
from weld_inference.model_runner import ModelRunner  # noqa: E402
from weld_inference.rules import RuleDetector  # noqa: E402
from weld_labeler.recorder import BagRecorder, PairLabel  # noqa: E402

CLASSES = list(DEFAULT_CLASSES)
BASE_NS = 1_790_000_000_000_000_000


def render(seed: int, count: int, balanced: bool) -> list[SimFrame]:
    """``count`` frames of one simulator seed: the default class mix, or equal shares of each class."""
    mix = dict.fromkeys(CLASSES, 1.0) if balanced else None
    simulator = WeldSimulator(SimConfig(width=320, height=240, seed=seed, class_mix=mix))
    return [simulator.next() for _ in range(count)]


def _cdr(message_type: str, message: Any) -> bytes:
    return bytes(weld_typestore().serialize_cdr(message, message_type))


def write_session(path: Path, frames: Sequence[SimFrame]) -> None:
    """A labeler session bag of ``frames``, each labelled with its ground truth."""
    store = weld_typestore()
    types = store.types
    session = path.name
    with BagRecorder(path) as recorder:
        for index, frame in enumerate(frames):
            stamp = BASE_NS + index * 100_000_000
            sec, nanosec = ns_to_sec_nanosec(stamp)
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id='sim'
            )
            images = [
                _cdr(IMAGE, types[IMAGE](header=header, **fields.as_kwargs(numpy_data=True)))
                for fields in (array_to_image(frame.rgb, 'rgb8'), depth_m_to_image(frame.depth_m, '32FC1'))
            ]
            camera = frame.camera_info
            info = types[CAMERA_INFO](
                header=header,
                height=camera.height,
                width=camera.width,
                distortion_model='plumb_bob',
                d=np.zeros(5),
                k=np.array([camera.fx, 0, camera.cx, 0, camera.fy, camera.cy, 0, 0, 1], np.float64),
                r=np.eye(3).ravel(),
                p=np.array([camera.fx, 0, camera.cx, 0, 0, camera.fy, camera.cy, 0, 0, 0, 1, 0], np.float64),
                binning_x=0,
                binning_y=0,
                roi=types['sensor_msgs/msg/RegionOfInterest'](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
                ),
            )
            info_cdr = _cdr(CAMERA_INFO, info)
            label = PairLabel(frame.label, session)
            recorder.write(recorder.prepare_pair(*images, stamp, 'sim', info_cdr, info_cdr, label))


def run_step(step: str, arguments: Sequence[str], cwd: Path, log: Path) -> None:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')]))
    )
    with log.open('ab') as handle:
        done = subprocess.run(
            [sys.executable, '-m', f'training.{step}', *arguments],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=handle,
        )
    if done.returncode:
        raise RuntimeError(f'training.{step} failed (exit {done.returncode}); see {log}')


def train(name: str, sessions: Sequence[Path], work: Path, epochs: int, log: Path) -> dict[str, Any]:
    """convert + fit + export: the model's held-out test figures and its ONNX file."""
    dataset, run = work / f'{name}-data', work / f'{name}-run'
    work.mkdir(parents=True, exist_ok=True)
    run_step('convert', [*map(str, sessions), '-o', str(dataset), '--workers', '1', '--quiet'], work, log)
    fit_args = [
        str(dataset), '--out', str(run), '--val_sessions=[val]', '--test_sessions=[test]',
        f'--trainer.max_epochs={epochs}', '--threads=1', '--retries=0',
    ]  # fmt: skip
    run_step('fit', fit_args, work, log)
    metrics = json.loads((run / 'report' / 'metrics.json').read_text())
    onnx = run / f'{name}.onnx'
    run_step('export', [metrics['checkpoint'], '-o', str(onnx), '--dataset', str(dataset)], work, log)
    return {'test': metrics['test'], 'onnx': onnx}


def rank_pool(onnx: Path, pool: Sequence[SimFrame]) -> list[ReviewItem]:
    """Every pool frame as the console's review queue would see it, most informative first."""
    runner, rules = ModelRunner.load(onnx), RuleDetector()
    items = []
    for index, frame in enumerate(pool):
        scores = [float(s) for s in runner.infer(frame.rgb, frame.depth_m)]
        label = runner.class_names[int(np.argmax(scores))]
        camera = frame.camera_info
        rules_label = rules(frame.rgb, frame.depth_m, camera.fx, camera.fy, camera.cx, camera.cy).label
        margin = top2_margin(scores)
        reasons = [UNSURE] + ([DISAGREE] if rules_label != label else [])
        items.append(
            ReviewItem(
                index,
                'sim',
                label,
                runner.model_id,
                list(runner.class_names),
                scores,
                margin,
                rules_label,
                reasons,
            )
        )
    return sorted(items, key=lambda item: item.rank)


def repeat(index: int, args: argparse.Namespace, work: Path, log: Path) -> dict[str, Any]:
    base = 1000 * (index + 1)
    seed_set = render(base + 1, args.seed_frames, balanced=False)
    pool = render(base + 2, args.pool, balanced=False)
    sessions = work / 'sessions'
    for name, frames in (
        ('seed', seed_set),
        ('val', render(base + 3, args.val_frames, balanced=True)),
        ('test', render(base + 4, args.test_frames, balanced=True)),
    ):
        write_session(sessions / name, frames)
    fixed = [sessions / 'seed', sessions / 'val', sessions / 'test']
    first = train('first', fixed, work, args.epochs, log)
    ranked = rank_pool(first['onnx'], pool)
    picks = {
        'queue': [item.stamp_ns for item in ranked[: args.budget]],
        'random': random.Random(base).sample(range(len(pool)), args.budget),
    }
    result: dict[str, Any] = {
        'first_macro_recall': first['test']['macro_recall'],
        'pool_disagreements': sum(DISAGREE in item.reasons for item in ranked),
    }
    for arm, indices in picks.items():
        chosen = [pool[i] for i in indices]
        write_session(sessions / f'pick-{arm}', chosen)
        trained = train(arm, [*fixed, sessions / f'pick-{arm}'], work, args.epochs, log)
        result[f'{arm}_macro_recall'] = trained['test']['macro_recall']
        result[f'{arm}_picked'] = {name: sum(f.label == name for f in chosen) for name in CLASSES}
    result['queue_minus_random'] = result['queue_macro_recall'] - result['random_macro_recall']
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--seed-frames', type=int, default=60, help='labelled frames the first model has')
    parser.add_argument(
        '--pool', type=int, default=500, help='unlabelled frames the queue and random pick from'
    )
    parser.add_argument('--budget', type=int, default=100, help='frames the operator labels in each arm')
    parser.add_argument('--val-frames', type=int, default=100)
    parser.add_argument('--test-frames', type=int, default=250)
    parser.add_argument('--epochs', type=int, default=30, help='most epochs of every fit (CPU: --threads 1)')
    parser.add_argument('--json', type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix='bench-al-') as scratch:
        for index in range(args.repeats):
            work = Path(scratch) / f'repeat{index}'
            work.mkdir()
            result = repeat(index, args, work, Path(scratch) / 'training.log')
            results.append(result)
            print(
                f'repeat {index}: first model {result["first_macro_recall"]:.3f}; +{args.budget} frames: '
                f'queue {result["queue_macro_recall"]:.3f}, random {result["random_macro_recall"]:.3f} '
                f'(queue - random {result["queue_minus_random"]:+.3f}); '
                f'queue picked {result["queue_picked"]}, '
                f'random picked {result["random_picked"]}; {result["pool_disagreements"]} of {args.pool} '
                'pool frames model-rules disagreements',
                flush=True,
            )
    differences = [r['queue_minus_random'] for r in results]
    queue, chance = (np.mean([r[f'{arm}_macro_recall'] for r in results]) for arm in ('queue', 'random'))
    print(
        f'mean over {len(results)} repeat(s): queue {queue:.3f}, random {chance:.3f}, queue - random '
        f'{np.mean(differences):+.3f} (min {min(differences):+.3f}, max {max(differences):+.3f}); '
        f'{time.monotonic() - started:.0f} s'
    )
    if args.json:
        args.json.write_text(
            json.dumps({'args': vars(args) | {'json': str(args.json)}, 'results': results}, indent=2)
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
