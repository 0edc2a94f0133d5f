"""Training benchmark on recorded sessions (default ../shared/datasets/weldsim); prints figures.

    .venv/bin/python bench/bench_training.py [--data DIR] [--seeds 10] [--first-seed 0] [--jobs 1]
        [--out DIR] [-- OPTIONS]

1. convert throughput (pairs/s) next to rosbags' plain read + decode of the same bags (one process,
   deserialise + decode colour and depth, nothing written), measured in this run;
2. ``weld-train release`` once per seed (0, 1, ...), as a user runs it (a separate process, the whole
   command timed): its held-out figures (the test sessions, each thresholded on the others; and
   the arg-max), per-class recall, whether each run learnt every class at its first attempt, and the
   command's wall time; then the spread over the seeds;
3. the board's rule-based fallback on the same held-out frames: the row to beat.
Options after ``--`` go to every release (e.g. ``-- --config rgb_only``). Not a test: it prints
figures, it does not pass or fail.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rosbags.rosbag2 import Reader  # noqa: E402

from training.bags import choose_topics, find_bags  # noqa: E402
from training.convert import convert  # noqa: E402
from weld_core.bag_types import weld_typestore  # noqa: E402
from weld_core.images import depth_m_from_msg, rgb_from_msg  # noqa: E402
from weld_core.model_file import read_model_info  # noqa: E402

DEFAULT_DATA = REPO.parent / 'shared' / 'datasets' / 'weldsim'


def rosbags_read_decode(data: Path) -> tuple[int, float]:
    """Image pairs decoded per second by a plain rosbags loop (the baseline)."""
    store = weld_typestore()
    start = time.perf_counter()
    images = 0
    for bag in find_bags(data):
        with Reader(bag) as reader:
            topics = choose_topics(reader)
            conns = [c for c in reader.connections if c.topic in (topics.rgb, topics.depth)]
            for conn, _, raw in reader.messages(connections=conns):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                (rgb_from_msg if conn.topic == topics.rgb else depth_m_from_msg)(msg)
                images += 1
    return images // 2, time.perf_counter() - start


def release_once(dataset: Path, out: Path, seed: int, options: list[str]) -> dict:
    """One ``weld-train release`` in its own process; what it measured and how long it took."""
    work, model = out / f'release-seed{seed}', out / f'seed{seed}.onnx'
    command = [str(Path(sys.executable).with_name('weld-train')), 'release', str(dataset), '-o', str(model)]
    command += [f'--work={work}', f'--seed={seed}', *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    report = json.loads((work / 'held_out' / 'report' / 'metrics.json').read_text())
    row = {'seed': seed, 'seconds': seconds, 'exit': done.returncode, 'held_out': report}
    if done.returncode == 0:
        row['record'] = json.loads(read_model_info(model).metadata['validation_metrics'])
    else:
        row['error'] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'
    return row


def first_attempt_learnt(run: dict) -> bool:
    return len(run['attempts']) == 1 and not run['attempts'][0]['weak']


def spread(values: list[float]) -> str:
    if not values:
        return '-'
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.3f} +- {deviation:.3f} (min {min(values):.3f}, max {max(values):.3f})'


def main() -> int:
    argv = sys.argv[1:]
    options = argv[argv.index('--') + 1 :] if '--' in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--seeds', type=int, default=10, help='releases to run, with seeds 0, 1, ...')
    parser.add_argument(
        '--first-seed', type=int, default=0, help='the first seed (to go on with a stopped run)'
    )
    parser.add_argument('--out', type=Path, default=Path(tempfile.gettempdir()) / 'weld-bench')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='releases run at once, each with CPUs/jobs threads (wall times then include the sharing)',
    )
    parser.add_argument('--skip-convert-bench', action='store_true')
    args = parser.parse_args(argv[: argv.index('--')] if '--' in argv else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = args.out / 'dataset'
    print(f'machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start')

    if not args.skip_convert_bench:
        pairs, seconds = rosbags_read_decode(args.data)
        baseline = pairs / seconds
        print(f'rosbags read + decode: {pairs} pairs in {seconds:.2f} s = {baseline:.0f} pairs/s (1 process)')
    shutil.rmtree(dataset, ignore_errors=True)  # a whole conversion is timed, not an add to a previous run's
    report = convert([args.data], dataset, progress=False)
    print(
        f'weld-train convert:    {report.frames} labelled pairs in {report.seconds:.2f} s = '
        f'{report.pairs_per_s:.0f} pairs/s ({os.cpu_count()} workers; {report.unlabelled} unlabelled skipped)'
    )
    if not args.skip_convert_bench:
        print(f'  ratio convert / rosbags read+decode: {report.pairs_per_s / baseline:.2f}')

    jobs = max(1, args.jobs)
    if jobs > 1:
        options = [f'--threads={max(1, (os.cpu_count() or 1) // jobs)}', *options]
        print(f'{jobs} releases at once, each with {options[0]}')
    rows = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(release_once, dataset, args.out, seed, options)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            test = row['held_out']['test']
            print(
                f'seed {row["seed"]}: {row["seconds"]:.0f} s, '
                f'held-out {test["macro_recall"]:.3f} / {test["good_fpr"]:.3f}'
                + ('' if row['exit'] == 0 else f', FAILED: {row["error"]}'),
                flush=True,
            )
    rows.sort(key=lambda row: row['seed'])

    print()
    names = list(rows[0]['held_out']['test']['per_class'])
    print(
        f'{"seed":>4} {"release s":>9} {"held-out":>15} {"arg-max":>15} {"offset":>6}  '
        f'{" / ".join(names)} (held-out recall)   first attempt learnt: held-out run, final run'
    )
    for row in rows:
        held, test, argmax = row['held_out'], row['held_out']['test'], row['held_out']['test_argmax']
        recalls = ' / '.join(f'{test["per_class"][n]["recall"]:.2f}' for n in names)
        final = row['record']['run'] if 'record' in row else None
        learnt = f'{first_attempt_learnt(held["run"])}, ' + (
            str(first_attempt_learnt(final)) if final else '-'
        )
        print(
            f'{row["seed"]:>4} {row["seconds"]:>9.0f} {test["macro_recall"]:>7.3f} / {test["good_fpr"]:.3f} '
            f'{argmax["macro_recall"]:>7.3f} / {argmax["good_fpr"]:.3f} '
            f'{held["offset_for_all"]["good_logit_bias"]:>+6.1f}'
            f'  {recalls}   {learnt}'
        )
    rules = rows[0]['held_out']['rules']['test']
    tests = [row['held_out']['test'] for row in rows]
    learnt_runs = [first_attempt_learnt(row['held_out']['run']) for row in rows]
    learnt_runs += [first_attempt_learnt(row['record']['run']) for row in rows if 'record' in row]
    print(f'held-out macro-recall: {spread([t["macro_recall"] for t in tests])}')
    print(f'held-out good-FPR:     {spread([t["good_fpr"] for t in tests])}')
    print(
        f'arg-max macro-recall:  {spread([row["held_out"]["test_argmax"]["macro_recall"] for row in rows])}'
    )
    print(f'release wall time s:   {spread([row["seconds"] for row in rows])}')
    print(
        f'runs that learnt every class at the first attempt: {sum(learnt_runs)} of {len(learnt_runs)} '
        f'(held-out and final runs); releases that wrote a model: '
        f'{sum(r["exit"] == 0 for r in rows)} of {len(rows)}'
    )
    print(
        f'rules on the same held-out frames: {rules["macro_recall"]:.3f} / {rules["good_fpr"]:.3f} '
        f'({", ".join(rows[0]["held_out"]["sessions"]["test"])})'
    )
    print('held-out = the test sessions, each thresholded on the others; never trained on by that run')
    return 0


if __name__ == '__main__':
    sys.exit(main())
