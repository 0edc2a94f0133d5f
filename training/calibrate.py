"""Decision threshold of the good class, set on the validation split and folded into the network.

A classifier trained on a few hundred frames is not calibrated for the cost a weld-inspection team
puts on a false alarm (a good weld sent to rework): the arg-max of its scores may call 10-30 % of
good welds defective. :func:`choose_good_bias` picks the offset added to the good-class logit that
gives the highest validation macro-recall among the offsets that keep the good-FPR (good welds
called defective) within ``max_good_fpr``; :func:`fold_good_bias` adds it to the bias of the
network's last linear layer, so the checkpoint, the exported ONNX model and the board's inference
node all apply it with no extra code.

A validation split holds a few dozen good welds, so the good-FPR seen there is a coarse estimate:
one of 33 flagged (3 %) is as consistent with a true rate of 10 % as with 1 %. The limit is therefore
applied to an upper confidence bound of the rate (``confidence``, 0.8 by default; one-sided
Clopper-Pearson from the flagged count and the number of good welds), not to the count itself: with
33 good welds that means none flagged, with 100 good welds at most two.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from weld_core.classes import GOOD_CLASS

# how sure the validation split must make the good-FPR limit (the fit's --good_fpr_confidence)
GOOD_FPR_CONFIDENCE = 0.8

# offsets tried, in logits: from favouring defects a little to favouring good welds strongly
BIAS_GRID = tuple(float(b) for b in np.round(np.arange(-2.0, 4.01, 0.1), 2))


@dataclass(frozen=True)
class Calibration:
    good_logit_bias: float
    max_good_fpr: float
    confidence: float
    val_good_frames: int
    val_frames: int
    val_macro_recall_before: float
    val_good_fpr_before: float
    val_macro_recall_after: float
    val_good_fpr_after: float
    val_good_fpr_bound: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def decide(log_probs: np.ndarray, good: int, bias: float) -> np.ndarray:
    """The classes called from (N, K) log-probabilities with ``bias`` added to class ``good``'s."""
    shifted = log_probs.copy()
    shifted[:, good] += bias
    return shifted.argmax(1)


def _scores(log_probs: np.ndarray, targets: np.ndarray, good: int, bias: float) -> tuple[float, float]:
    preds = decide(log_probs, good, bias)
    recalls = [float((preds[targets == c] == c).mean()) for c in np.unique(targets)]
    goods = targets == good
    fpr = float((preds[goods] != good).mean()) if goods.any() else 0.0
    return float(np.mean(recalls)), fpr


def rate_upper_bound(count: int, total: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen as ``count`` of ``total``.

    The rate p at which seeing ``count`` or fewer has probability ``1 - confidence``; the observed
    rate itself for ``confidence`` 0.
    """
    if total <= 0:
        return 1.0
    if confidence <= 0 or count >= total:
        return count / total

    def at_most(p: float) -> float:  # P(X <= count), X ~ Binomial(total, p), in log space
        terms = [
            math.lgamma(total + 1)
            - math.lgamma(i + 1)
            - math.lgamma(total - i + 1)
            + (i * math.log(p) if i else 0.0)
            + (total - i) * math.log1p(-p)
            for i in range(count + 1)
        ]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    low, high = count / total, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if at_most(middle) > 1.0 - confidence:
            low = middle
        else:
            high = middle
    return high


def choose_good_bias(
    probabilities: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    max_good_fpr: float = 0.05,
    confidence: float = GOOD_FPR_CONFIDENCE,
) -> Calibration:
    """The good-class logit offset for these validation probabilities (N, K) and labels (N,).

    Among the offsets whose good-FPR upper bound (at ``confidence``) is within ``max_good_fpr``,
    those with the highest macro-recall (usually a plateau on a split of a hundred frames) and of
    them the middle one. If none reaches it (too few good welds to be that sure), the same among
    the offsets that flag the fewest good welds. Offset 0 when the split has no good weld or no
    defect to judge by.
    """
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets)
    if GOOD_CLASS not in class_names:
        raise ValueError(f'class list {list(class_names)} has no {GOOD_CLASS!r} class to calibrate')
    good = list(class_names).index(GOOD_CLASS)
    goods = int((targets == good).sum())
    log_probs = np.log(np.clip(probabilities, 1e-9, 1.0))
    before = _scores(log_probs, targets, good, 0.0) if len(targets) else (0.0, 0.0)
    fixed = (max_good_fpr, confidence, goods, len(targets))

    def bound(fpr: float) -> float:  # of the good-FPR, from the flagged count behind ``fpr``
        return rate_upper_bound(round(fpr * goods), goods, confidence)

    if goods == 0 or goods == len(targets):
        return Calibration(0.0, *fixed, *before, *before, bound(before[1]), 'no good and defective frames')
    results = []
    for bias in BIAS_GRID:
        macro, fpr = _scores(log_probs, targets, good, bias)
        results.append((bias, macro, fpr, bound(fpr)))
    within = [r for r in results if r[3] <= max_good_fpr + 1e-9]
    sure = f'{confidence:.0%} sure' if confidence > 0 else 'as seen'
    if within:
        reason = (
            f'middle of the best validation macro-recall plateau with good-FPR <= {max_good_fpr:g} ({sure})'
        )
    else:
        fewest = min(r[2] for r in results)
        within = [r for r in results if r[2] <= fewest + 1e-9]
        reason = (
            f'no offset makes good-FPR <= {max_good_fpr:g} {sure} with {goods} good welds in validation: '
            'fewest good welds flagged'
        )
    # the offsets that reach the best macro-recall form a plateau on a small validation split;
    # its middle leaves the most margin on both sides for frames the split did not have
    top = max(r[1] for r in within)
    plateau = [r for r in within if r[1] >= top - 1e-9]
    bias, macro, fpr, upper = plateau[len(plateau) // 2]
    return Calibration(bias, *fixed, *before, macro, fpr, upper, reason)


def fold_good_bias(net: nn.Module, class_names: Sequence[str], bias: float) -> None:
    """Add ``bias`` to the good-class output of the last linear layer of ``net`` (in place)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None or linears[-1].out_features != len(class_names):
        raise ValueError('the network does not end in a linear layer with a bias per class')
    with torch.no_grad():
        linears[-1].bias[list(class_names).index(GOOD_CLASS)] += float(bias)
