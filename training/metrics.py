"""Classification metrics of weld inspection, from torchmetrics, as one JSON-ready dict."""

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from weld_core.classes import GOOD_CLASS


def classification_metrics(
    preds: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-recall, good-FPR, missed-defect rate, confusion.

    ``good_fpr``: share of good welds called defective. ``missed_defect_rate``: share of defective
    welds called good. Classes absent from ``targets`` are left out of the macro average.
    """
    num = len(class_names)
    preds, targets = preds.long().cpu(), targets.long().cpu()
    kwargs: dict[str, Any] = {'num_classes': num, 'average': None, 'zero_division': 0}
    recall = multiclass_recall(preds, targets, **kwargs)
    precision = multiclass_precision(preds, targets, **kwargs)
    f1 = multiclass_f1_score(preds, targets, **kwargs)
    confusion = multiclass_confusion_matrix(preds, targets, num_classes=num)
    present = confusion.sum(1) > 0
    result: dict[str, Any] = {
        'frames': int(targets.numel()),
        'accuracy': float(multiclass_accuracy(preds, targets, num_classes=num, average='micro')),
        'macro_recall': float(recall[present].mean()) if present.any() else 0.0,
        'per_class': {
            name: {
                'precision': float(precision[i]),
                'recall': float(recall[i]),
                'f1': float(f1[i]),
                'support': int(confusion[i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        'confusion': confusion.tolist(),
    }
    if GOOD_CLASS in class_names:
        good = class_names.index(GOOD_CLASS)
        good_total = int(confusion[good].sum())
        defect_total = int(confusion.sum() - good_total)
        result['good_fpr'] = float(1 - confusion[good, good] / good_total) if good_total else 0.0
        result['missed_defect_rate'] = (
            float((confusion[:, good].sum() - confusion[good, good]) / defect_total) if defect_total else 0.0
        )
    return result


# below this validation recall a class counts as not learnt: a failed run, not a weak model
WEAK_CLASS_RECALL = 0.4


def weak_classes(split_metrics: dict[str, Any], below: float = WEAK_CLASS_RECALL) -> dict[str, float]:
    """Classes present in a split whose recall there is under ``below`` (name -> recall)."""
    return {
        name: round(values['recall'], 3)
        for name, values in split_metrics.get('per_class', {}).items()
        if values['support'] > 0 and values['recall'] < below
    }
