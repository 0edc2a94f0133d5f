"""``weld-train release SOURCES... -o model.onnx``: the model to deploy, in one command.

    weld-train release sessions/*.tar.gz -o weld.onnx       # labeler exports, bags, folders of bags
    weld-train release data/weldsim -o weld.onnx            # or a dataset made by `weld-train convert`

1. convert the sessions into a dataset (a dataset folder is used as it is);
2. held-out run: the recipe trained on every session but the dataset's test sessions, which are
   measured, each with the good-class offset chosen on the others (and the board's rules on the
   same frames);
3. final run: the held-out run's network trained on, on every session (``--final_epochs`` epochs at
   a quarter of the peak learning rate), with the offset chosen on all of step 2's held-out frames
   folded in;
4. export: ``model.onnx`` with its ``.sha256`` sidecar, parity-checked against the checkpoint; its
   ``validation_metrics`` are step 2's held-out figures (what this procedure reaches on sessions it
   did not see), with the final run's sessions and its check on its own training frames. Beside it
   ``model.int8.onnx`` (and sidecar): the same network quantised to 8 bits, the input layers and the
   softmax in float, for the board's CPU (docs/board.md).

A run that does not learn a class is trained again with the next seed (``--retries``); if the
final run still misses one, no file is written and the command fails. Everything else lands in
``--work`` (default ``runs/release-<UTC time>``): the dataset, both runs' logs and checkpoints, the
held-out report. Options: those of ``weld-train fit`` (``--config``, ``--model.*``, ...).
"""

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from training.config import parse, recipe_of, recipe_parser
from training.convert import convert
from training.dataset import MANIFEST
from training.errors import TrainingError
from training.export import export
from training.fit import REPORT, default_out, held_out_run, held_out_summary, summary_lines, write_report
from training.procedure import (
    datamodule,
    fold_offset,
    held_out_sessions,
    quiet_lightning,
    save_checkpoint,
    set_threads,
    train,
)
from weld_core.errors import WeldError


class ReleaseError(TrainingError, RuntimeError):
    """The release cannot give a model fit to deploy (a class not learnt, too few sessions)."""


def build_parser() -> ArgumentParser:
    parser = recipe_parser('weld-train release', __doc__.split('\n')[0])
    parser.add_argument('sources', nargs='+', help='session bags / .tar.gz exports, or one dataset folder')
    parser.add_argument('-o', '--out', required=True, help='the ONNX file to write (and its .sha256)')
    parser.add_argument('--work', type=str, default=None, help='working folder (default runs/release-<time>)')
    parser.add_argument('--version', type=str, default=None, help='model_version (default: UTC time stamp)')
    return parser


def release(argv: Sequence[str] = ()) -> dict[str, Any]:
    """``weld-train release`` from Python; returns what it wrote and measured."""
    config = parse(build_parser(), argv)
    started = time.perf_counter()
    recipe = recipe_of(config)
    set_threads(recipe.threads)
    quiet_lightning()
    work = Path(config.work) if config.work else default_out('release')
    sources = [Path(source) for source in config.sources]
    if len(sources) == 1 and (sources[0] / MANIFEST).is_file():
        dataset = sources[0]
    else:
        dataset = work / 'dataset'
        print(convert(sources, dataset).summary(), file=sys.stderr)
    held = held_out_sessions(datamodule(recipe, dataset))
    if len(held) < 2:
        raise ReleaseError(
            f'{dataset}: its split holds out {held or "no session"}, and measuring the procedure takes '
            'two held-out sessions (each thresholded on the other); record three sessions or more'
        )
    print(f'release: held-out run (every session but {", ".join(held)})', file=sys.stderr)
    held_out, figures = held_out_run(recipe, dataset, work / 'held_out', held)
    # DDP: every process trains both runs; rank 0 alone writes and reports
    report = write_report(held_out, figures, work / 'held_out' / REPORT) if not held_out.rank else {}
    offset = float(figures['offset_for_all']['good_logit_bias'])
    print(f'release: final run (every session; good-class offset {offset:+.1f})', file=sys.stderr)
    every_session = datamodule(recipe, dataset, val_sessions=[], test_sessions=[])
    final = train(recipe.continued(), every_session, work / 'final', start=held_out.model)
    if final.rank:
        return {}
    fold_offset(final.model, offset)
    record = {
        'procedure': 'release',
        'held_out': held_out_summary(figures) | {'rules': report['rules'].get('test')},
        # the final run continued the held-out run's network (its epochs are the continued ones)
        'run': final.record() | {'continued_from': 'held_out', 'held_out_epochs': held_out.epochs},
        'good_logit_offset': offset,
    }
    checkpoint = save_checkpoint(work / 'final' / 'model.ckpt', final.model, record)
    if final.weak:
        listed = ', '.join(f'{name} {recall:.2f}' for name, recall in final.weak.items())
        raise ReleaseError(
            f'the final run did not learn {listed} (recall on its own training frames) in '
            f'{len(final.attempts)} attempts; no model written (checkpoint kept: {checkpoint})'
        )
    # the INT8 file too: the board's CPU default where it is faster there (docs/board.md)
    exported = export(checkpoint, config.out, dataset, version=config.version, int8=True)
    return {
        'model': str(exported.path),
        'model_id': exported.model_id,
        'int8_model': str(exported.int8_path),
        'int8_agreement': exported.int8_report['agreement'],
        'work': str(work),
        'held_out': report,
        'final': final.record(),
        'seconds': time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = release(sys.argv[1:] if argv is None else argv)
    except WeldError as exc:
        print(f'release: {exc}', file=sys.stderr)
        return 2
    if not result:  # a DDP process other than rank 0
        return 0
    final = result['final']
    print(
        '\n'.join(
            [
                *summary_lines(result['held_out']),
                f'final run: {final["train_frames"]} frames of {", ".join(final["train_sessions"])}, '
                f'{final["seconds"]:.0f} s',
                f'wrote {result["model"]} ({result["model_id"]}) and {result["int8_model"]} (the same '
                f'class as the FP32 file on {result["int8_agreement"]:.0%} of the validation frames), '
                f'each with its .sha256, in {result["seconds"]:.0f} s; '
                f'working folder {result["work"]}',
            ]
        )
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
