"""Decision threshold of the good class, set on the validation split and folded into the network.

A classifier trained on a few hundred frames is not calibrated for the cost a weld-inspection team
puts on a false alarm (a good weld sent to rework): the arg-max of its scores may call 10-30 % of
good welds defective. :func:`choose_good_bias` picks the offset added to the good-class logit that
gives the highest validation macro-recall among the offsets that keep the validation good-FPR
(good welds called defective) within ``max_good_fpr``; :func:`fold_good_bias` adds it to the bias
of the network's last linear layer, so the checkpoint, the exported ONNX model and the board's
inference node all apply it with no extra code.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from weld_core.classes import GOOD_CLASS

# offsets tried, in logits: from favouring defects a little to favouring good welds strongly
BIAS_GRID = tuple(float(b) for b in np.round(np.arange(-2.0, 4.01, 0.1), 2))


@dataclass(frozen=True)
class Calibration:
    good_logit_bias: float
    max_good_fpr: float
    val_frames: int
    val_macro_recall_before: float
    val_good_fpr_before: float
    val_macro_recall_after: float
    val_good_fpr_after: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _scores(log_probs: np.ndarray, targets: np.ndarray, good: int, bias: float) -> tuple[float, float]:
    shifted = log_probs.copy()
    shifted[:, good] += bias
    preds = shifted.argmax(1)
    recalls = [float((preds[targets == c] == c).mean()) for c in np.unique(targets)]
    goods = targets == good
    fpr = float((preds[goods] != good).mean()) if goods.any() else 0.0
    return float(np.mean(recalls)), fpr


def choose_good_bias(
    probabilities: np.ndarray, targets: np.ndarray, class_names: Sequence[str], max_good_fpr: float = 0.05
) -> Calibration:
    """The good-class logit offset for these validation probabilities (N, K) and labels (N,).

    Among the offsets whose good-FPR is within ``max_good_fpr``, those with the highest macro-recall
    (usually a plateau on a split of a hundred frames) and of them the middle one; if none reaches
    it, the one with the lowest good-FPR. Offset 0 when the split has no good weld or no defect to
    judge by.
    """
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets)
    if GOOD_CLASS not in class_names:
        raise ValueError(f'class list {list(class_names)} has no {GOOD_CLASS!r} class to calibrate')
    good = list(class_names).index(GOOD_CLASS)
    log_probs = np.log(np.clip(probabilities, 1e-9, 1.0))
    before = _scores(log_probs, targets, good, 0.0) if len(targets) else (0.0, 0.0)
    if not (targets == good).any() or (targets == good).all():
        return Calibration(0.0, max_good_fpr, len(targets), *before, *before, 'no good and defective frames')
    results = [(bias, *_scores(log_probs, targets, good, bias)) for bias in BIAS_GRID]
    within = [r for r in results if r[2] <= max_good_fpr + 1e-9]
    if within:
        # the offsets that reach the best macro-recall form a plateau on a small validation split;
        # its middle leaves the most margin on both sides for frames the split did not have
        top = max(r[1] for r in within)
        plateau = [r for r in within if r[1] >= top - 1e-9]
        bias, macro, fpr = plateau[len(plateau) // 2]
        reason = f'middle of the best validation macro-recall plateau at good-FPR <= {max_good_fpr:g}'
    else:
        bias, macro, fpr = min(results, key=lambda r: (r[2], -r[1]))
        reason = f'no offset reaches good-FPR <= {max_good_fpr:g}: lowest good-FPR'
    return Calibration(bias, max_good_fpr, len(targets), *before, macro, fpr, reason)


def fold_good_bias(net: nn.Module, class_names: Sequence[str], bias: float) -> None:
    """Add ``bias`` to the good-class output of the last linear layer of ``net`` (in place)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None or linears[-1].out_features != len(class_names):
        raise ValueError('the network does not end in a linear layer with a bias per class')
    with torch.no_grad():
        linears[-1].bias[list(class_names).index(GOOD_CLASS)] += float(bias)
