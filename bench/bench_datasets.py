"""Dataset scale benchmark: one dataset grown session by session to each size; prints figures.

    .venv/bin/python bench/bench_datasets.py [--sizes 1000,5000,10000] [--out /tmp/weld-bench-datasets]

The simulator (weld_camera.sim, synthetic) renders sessions of ``--session-pairs`` labelled pairs at
320x240, written as labeler-style bags (JPEG colour, compressedDepth) by ``--workers`` processes.
For each size the new sessions are converted into the one growing dataset (``weld-train convert``
into an existing folder), then a fit runs in its own process on the default recipe with one thread:
the preprocessed-input cache is made for the new sessions, then ``--batches`` training batches.
Per size it prints: ingest pairs/s (the sessions added at that step), disk per pair (arrays and
records; the cache apart), the fit's peak RSS, seconds per epoch per 1k pairs (seconds per batch x
1000 / batch size: an epoch is that many batches, each read row by row from the cache), and last
the time to add one more session to the largest dataset. Not a test: it prints figures.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'ros2_ws' / 'src' / 'weld_camera'))

from tests.training.bagmaker import BASE_NS, Frame, write_bag  # noqa: E402
from training.convert import convert  # noqa: E402

FRAME_STEP_NS = 100_000_000


def render_session(folder: str, index: int, pairs: int) -> str:
    """Session ``index``: ``pairs`` frames of the simulator (seeded by the index) as a bag."""
    from weld_camera.sim import SimConfig, WeldSimulator

    simulator = WeldSimulator(SimConfig(width=320, height=240, seed=index))
    frames = []
    for n in range(pairs):
        sim = simulator.render(n)
        frames.append(Frame(BASE_NS + index * 10**12 + n * FRAME_STEP_NS, sim.rgb, sim.depth_m, sim.label))
    return str(write_bag(Path(folder) / f'session{index:05d}', frames, session_id=f'session{index:05d}'))


def render(folder: Path, indices: range, pairs: int, workers: int) -> tuple[list[Path], float]:
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        bags = list(pool.map(render_session, [str(folder)] * len(indices), indices, [pairs] * len(indices)))
    return [Path(bag) for bag in bags], time.perf_counter() - start


def disk_bytes(root: Path, skip: str = 'cache') -> int:
    return sum(p.stat().st_size for p in root.rglob('*') if p.is_file() and skip not in p.parts)


def fit_child(dataset: str, batches: int) -> None:
    """In its own process: the cache for new sessions, then ``batches`` training batches; JSON out."""
    import pytorch_lightning as pl
    import torch

    from training.config import parse, recipe_of, recipe_parser
    from training.procedure import build_model, datamodule, quiet_lightning

    quiet_lightning()
    torch.set_num_threads(1)
    recipe = recipe_of(parse(recipe_parser('bench', 'bench'), ['--threads=1']))
    data = datamodule(recipe, dataset)
    start = time.perf_counter()
    data.setup()
    cache_s = time.perf_counter() - start
    model = build_model(recipe, data)
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *_: object) -> None:
            times.append(time.perf_counter())

        def on_train_batch_end(self, *_: object) -> None:
            times[-1] = time.perf_counter() - times[-1]

    trainer = pl.Trainer(
        accelerator='cpu',
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(model, datamodule=data)
    per_batch = sorted(times[1:])[len(times[1:]) // 2]  # median; the first batch warms up
    print(
        json.dumps(
            {
                'train_pairs': len(data.splits['train']),
                'cache_s': cache_s,
                's_per_batch': per_batch,
                'batch_size': int(data.hparams['batch_size']),
                'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def fit(dataset: Path, batches: int) -> dict:
    command = [sys.executable, __file__, '--fit-child', str(dataset), '--batches', str(batches)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f'fit failed:\n{done.stderr[-3000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='1000,5000,10000', help='dataset sizes in pairs, growing')
    parser.add_argument('--session-pairs', type=int, default=150)
    parser.add_argument('--workers', type=int, default=2, help='render and convert processes')
    parser.add_argument('--batches', type=int, default=20, help='training batches timed per size')
    parser.add_argument('--out', default='/tmp/weld-bench-datasets')
    parser.add_argument('--keep', action='store_true', help='keep the bags and dataset afterwards')
    parser.add_argument('--fit-child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_child:
        fit_child(args.fit_child, args.batches)
        return 0
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    dataset, bags_dir = out / 'dataset', out / 'bags'
    bags_dir.mkdir(parents=True)
    sessions = 0
    rows = []
    for size in (int(s) for s in args.sizes.split(',')):
        wanted = -(-size // args.session_pairs)
        bags, render_s = render(bags_dir, range(sessions, wanted), args.session_pairs, args.workers)
        sessions = wanted
        report = convert(bags, dataset, workers=args.workers, progress=False)
        figures = fit(dataset, args.batches)
        row = {
            'pairs': report.frames,
            'render_pairs_per_s': report.added_frames / render_s,
            'ingest_pairs_per_s': report.pairs_per_s,
            'disk_kb_per_pair': disk_bytes(dataset) / report.frames / 1e3,
            'cache_kb_per_pair': disk_bytes(dataset / 'cache', skip='-') / report.frames / 1e3,
            **figures,
            'epoch_s_per_1k': figures['s_per_batch'] * 1000 / figures['batch_size'],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        for bag in bags:  # the dataset holds them now
            shutil.rmtree(bag)
    extra, _ = render(bags_dir, range(sessions, sessions + 1), args.session_pairs, 1)
    start = time.perf_counter()
    added = convert(extra, dataset, workers=1, progress=False)
    add_s = time.perf_counter() - start
    again = time.perf_counter()
    convert(extra, dataset, workers=1, progress=False)
    skip_s = time.perf_counter() - again
    free = shutil.disk_usage(out).free
    print()
    print(
        '| pairs | ingest pairs/s | disk per pair (arrays + records / cache) | fit peak RSS '
        '| s per epoch per 1k pairs |'
    )
    print('|---|---|---|---|---|')
    base = rows[0]['peak_rss_mb']
    for r in rows:
        print(
            f'| {r["pairs"]} | {r["ingest_pairs_per_s"]:.0f} | {r["disk_kb_per_pair"]:.0f} / '
            f'{r["cache_kb_per_pair"]:.0f} kB | {r["peak_rss_mb"]:.0f} MB ({r["peak_rss_mb"] / base:.2f}x) '
            f'| {r["epoch_s_per_1k"]:.1f} |'
        )
    per_pair = (rows[-1]['disk_kb_per_pair'] + rows[-1]['cache_kb_per_pair']) * 1e3
    print(
        f'\nadd one {args.session_pairs}-pair session to {rows[-1]["pairs"]} pairs: {add_s:.1f} s '
        f'(version {added.version}); the same session again (skipped by its files): {skip_s:.1f} s'
    )
    print(
        f'100k pairs would take {per_pair * 1e5 / 1e9:.0f} GB with the cache of one preprocessing '
        f'({free / 1e9:.0f} GB free here)'
    )
    if not args.keep:
        shutil.rmtree(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
