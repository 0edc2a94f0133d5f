"""``python -m training.compare a.onnx b.onnx ... --dataset DIR``: the A/B table for choosing a model.

Same options as ``python -m training.evaluate``; every model runs on exactly the same frames.
"""

import sys
from collections.abc import Sequence

from training.evaluate import main as evaluate_main


def main(argv: Sequence[str] | None = None) -> int:
    return evaluate_main(argv, prog='python -m training.compare')


if __name__ == '__main__':
    sys.exit(main())
