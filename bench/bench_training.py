"""Training benchmark on recorded sessions (default ../shared/datasets/weldsim); prints figures.

    .venv/bin/python bench/bench_training.py [--data DIR] [--variants default resnet18 rgb_only]
                                             [--max-epochs N] [--out /tmp/weld-bench]

1. convert throughput (pairs/s) next to rosbags' plain read + decode of the same bags (one process,
   deserialise + decode colour and depth, nothing written), measured in this run;
2. for each variant: fit wall time with its config on this machine, then the best checkpoint's
   macro-recall, good-FPR and missed-defect rate on the validation session(s) and on the held-out
   test sessions (never seen in training or checkpoint selection), and its GFLOP / size;
3. with --refit: each variant trained again on the training + validation sessions (fit --refit
   trainval), its test figures and time on a row of their own, measured in the same run;
4. the board's rule-based fallback on the same validation and test frames: the row to beat.
Not a test: it prints figures, it does not pass or fail.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rosbags.rosbag2 import Reader  # noqa: E402

from training.bags import choose_topics, find_bags  # noqa: E402
from training.convert import convert  # noqa: E402
from weld_core.bag_types import weld_typestore  # noqa: E402
from weld_core.images import depth_m_from_msg, rgb_from_msg  # noqa: E402

DEFAULT_DATA = REPO.parent / 'shared' / 'datasets' / 'weldsim'
CONFIGS = REPO / 'training' / 'configs'


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


def rules_row(dataset: Path) -> dict[str, dict]:
    """The rule detector's figures on the dataset's validation and test splits."""
    from training.evaluate import evaluate

    return {split: evaluate([], dataset, split=split, rules=True)[0] for split in ('val', 'test')}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--variants', nargs='*', default=['default', 'resnet18', 'rgb_only'])
    parser.add_argument('--max-epochs', type=int, default=None, help="override every config's max_epochs")
    parser.add_argument('--out', type=Path, default=Path(tempfile.gettempdir()) / 'weld-bench')
    parser.add_argument('--skip-convert-bench', action='store_true')
    parser.add_argument(
        '--refit',
        action='store_true',
        help='also refit each variant on train+val sessions (doubles the time)',
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = args.out / 'dataset'
    print(f'machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start')

    if not args.skip_convert_bench:
        pairs, seconds = rosbags_read_decode(args.data)
        baseline = pairs / seconds
        print(f'rosbags read + decode: {pairs} pairs in {seconds:.2f} s = {baseline:.0f} pairs/s (1 process)')
    report = convert([args.data], dataset, progress=False)
    print(
        f'training.convert:      {report.frames} labelled pairs in {report.seconds:.2f} s = '
        f'{report.pairs_per_s:.0f} pairs/s ({os.cpu_count()} workers, decoded arrays + manifest written; '
        f'{report.unlabelled} unlabelled frames skipped)'
    )
    if not args.skip_convert_bench:
        print(f'  ratio convert / rosbags read+decode: {report.pairs_per_s / baseline:.2f}')
    print(f'split: {report.per_split}')

    from training.fit import DEFAULT_CONFIG, fit

    rows = []
    for variant in args.variants:
        overrides = [
            '--data.dataset_dir',
            str(dataset),
            '--trainer.default_root_dir',
            str(args.out / 'runs'),
            '--data.progress',
            'false',
        ]
        if variant != 'default':
            overrides = ['--config', str(CONFIGS / f'{variant}.yaml'), *overrides]
        if args.max_epochs:
            overrides += ['--trainer.max_epochs', str(args.max_epochs)]
        if args.refit:
            overrides += ['--refit', 'trainval']
        cwd = Path.cwd()
        os.chdir(args.out)  # the configs' log folders are relative
        try:
            result = fit(overrides, config=DEFAULT_CONFIG)
        finally:
            os.chdir(cwd)
        rows.append((variant, result.seconds, result.metrics))
        print(f'{variant}: fit {result.seconds:.0f} s, best checkpoint {result.best_checkpoint}', flush=True)

    print()
    header = (
        f'{"variant":<11}{"fit s":>7}{"epochs":>7}{"GFLOP":>8}{"MB":>7}  '
        f'{"val macro-R":>11}{"val gFPR":>9}  {"test macro-R":>12}{"test gFPR":>10}{"test miss":>10}'
    )
    print(header)
    for variant, seconds, metrics in rows:
        val, test, cx = metrics['val'], metrics.get('test') or {}, metrics['complexity']
        seconds -= (metrics.get('refit') or {}).get('seconds', 0.0)  # the refit has a row of its own
        epochs = metrics.get('epochs_run')
        print(
            f'{variant:<11}{seconds:>7.0f}{epochs!s:>7}{cx["gflop"]:>8.3f}{cx["size_mb"]:>7.2f}  '
            f'{val["macro_recall"]:>11.3f}{val.get("good_fpr", float("nan")):>9.3f}  '
            f'{test.get("macro_recall", float("nan")):>12.3f}{test.get("good_fpr", float("nan")):>10.3f}'
            f'{test.get("missed_defect_rate", float("nan")):>10.3f}'
        )
        refitted = metrics.get('refit')
        if refitted and 'test' in refitted:
            test = refitted['test']
            print(
                f'{"  +refit":<11}{refitted["seconds"]:>7.0f}{refitted["epochs"]!s:>7}{"":>8}{"":>7}  '
                f'{"":>11}{"":>9}  {test["macro_recall"]:>12.3f}{test["good_fpr"]:>10.3f}'
                f'{test["missed_defect_rate"]:>10.3f}'
            )
    rules = rules_row(dataset)
    print(
        f'{"rules":<11}{"-":>7}{"-":>7}{"-":>8}{"-":>7}  '
        f'{rules["val"]["macro_recall"]:>11.3f}{rules["val"]["good_fpr"]:>9.3f}  '
        f'{rules["test"]["macro_recall"]:>12.3f}{rules["test"]["good_fpr"]:>10.3f}'
        f'{rules["test"]["missed_defect_rate"]:>10.3f}'
    )
    print('test = held-out sessions, never used for training or checkpoint selection')
    print("rules = the board's rule-based fallback (weld_inference.rules) on the same frames")
    if args.refit:
        print('+refit = trained again on the training and validation sessions, last epoch, same threshold')
    for variant, _, metrics in rows:
        per_class = (metrics.get('test') or {}).get('per_class', {})
        recalls = ' '.join(f'{name} {values["recall"]:.2f}' for name, values in per_class.items())
        weak = metrics.get('val_weak_classes') or {}
        note = f'; not learnt (val): {weak}' if weak else ''
        print(f'{variant}: test recall per class: {recalls}{note}')
        refit_classes = (metrics.get('refit') or {}).get('test', {}).get('per_class', {})
        if refit_classes:
            recalls = ' '.join(f'{name} {values["recall"]:.2f}' for name, values in refit_classes.items())
            weak = metrics['refit'].get('train_weak_classes') or {}
            note = f'; not learnt (own training frames): {weak}' if weak else ''
            print(f'{variant} +refit: test recall per class: {recalls}{note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
