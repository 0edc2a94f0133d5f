"""``weld-train``: the training commands, one subcommand each.

    weld-train release SESSIONS... -o model.onnx    the model to deploy (held-out run, final run, export)
    weld-train convert SESSIONS... -o DATASET       recorded sessions -> a dataset folder (or into one)
    weld-train dataset versions DATASET             a dataset's frozen versions (also: remove, prune)
    weld-train fit DATASET                          one held-out run of a config, with a report
    weld-train crossval DATASET --folds 4           held-out figures over folds of sessions
    weld-train export CHECKPOINT -o model.onnx --dataset DATASET
    weld-train evaluate MODEL.onnx --dataset DATASET [--rules]
    weld-train compare A.onnx B.onnx --dataset DATASET [--rules]

``weld-train <command> --help`` lists a command's options. Paths are relative to the folder the
command runs in.
"""

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    'release': 'the model to deploy: convert, held-out run, final run, export',
    'convert': 'recorded sessions -> a dataset folder, or the new ones into it',
    'dataset': "a dataset's frozen versions; remove sessions; prune old versions",
    'fit': 'one held-out run of a config, with a report (experiments)',
    'crossval': 'held-out figures of the procedure over folds of sessions',
    'export': 'a checkpoint -> ONNX with its sidecar, parity-checked',
    'evaluate': 'ONNX models (and the rules) on a dataset or bags, as the board runs them',
    'compare': 'several ONNX models side by side on the same frames',
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f'  {name.ljust(width)}  {text}' for name, text in COMMANDS.items()]
    return 'usage: weld-train COMMAND [options]   (weld-train COMMAND --help)\n\ncommands:\n' + '\n'.join(
        lines
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ('-h', '--help'):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f'weld-train: unknown command {command!r}\n{usage()}', file=sys.stderr)
        return 2
    return int(importlib.import_module(f'training.{command}').main(rest))


if __name__ == '__main__':
    sys.exit(main())
