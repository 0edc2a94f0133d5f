"""``weld-train compare a.onnx b.onnx ... --dataset DIR``: the A/B table for choosing a model.

Same options as ``weld-train evaluate``; every model runs on exactly the same frames.
"""

import sys
from collections.abc import Sequence

from training.evaluate import main as evaluate_main


def main(argv: Sequence[str] | None = None) -> int:
    return evaluate_main(argv, prog='weld-train compare')


if __name__ == '__main__':
    sys.exit(main())
