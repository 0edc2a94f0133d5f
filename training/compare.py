"""``weld-train compare a.onnx b.onnx ... --dataset DIR``: the A/B table for choosing a model.

Same options as ``weld-train evaluate``; every model runs on exactly the same frames.
"""

import argparse
import sys
from collections.abc import Sequence

from training import evaluate

PROG = 'weld-train compare'


def build_parser() -> argparse.ArgumentParser:
    return evaluate.build_parser(PROG)


def main(argv: Sequence[str] | None = None) -> int:
    return evaluate.main(argv, prog=PROG)


if __name__ == '__main__':
    sys.exit(main())
