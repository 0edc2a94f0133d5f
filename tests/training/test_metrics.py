"""Classification figures from predictions, and the warning for a class a run did not learn."""

from pathlib import Path

import torch

from training.fit import FitResult, _summary
from training.metrics import classification_metrics, weak_classes

CLASSES = ('good', 'porosity', 'spatter', 'gap', 'undercut')


def test_good_fpr_missed_defects_and_a_class_not_learnt() -> None:
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    preds = torch.tensor([0, 0, 0, 2, 1, 1, 0, 0, 2, 3])
    metrics = classification_metrics(preds, targets, CLASSES)
    assert metrics['good_fpr'] == 0.25
    assert abs(metrics['missed_defect_rate'] - 2 / 6) < 1e-6
    # undercut has no frame here: left out of the macro average and of the weak classes
    assert abs(metrics['macro_recall'] - (0.75 + 1 + 1 / 3 + 1) / 4) < 1e-6
    assert weak_classes(metrics) == {'spatter': 0.333}
    assert weak_classes(metrics, below=0.3) == {}


def test_fit_summary_warns_about_a_class_not_learnt() -> None:
    split = {'macro_recall': 0.7, 'good_fpr': 0.0, 'accuracy': 0.7, 'missed_defect_rate': 0.3, 'frames': 97}
    result = FitResult(Path('best.ckpt'), Path('report'), {'val': split, 'val_weak_classes': {}}, 1.0)
    assert 'warning' not in _summary(result)
    result.metrics['val_weak_classes'] = {'porosity': 0.17}
    assert 'not learnt in this run (validation recall porosity 0.17)' in _summary(result)


def test_fit_summary_sets_the_model_beside_the_rules_and_warns_when_they_win() -> None:
    val = {'macro_recall': 0.7, 'good_fpr': 0.0, 'accuracy': 0.7, 'missed_defect_rate': 0.3, 'frames': 97}
    rules = {'macro_recall': 0.6, 'good_fpr': 0.1, 'missed_defect_rate': 0.35}
    result = FitResult(Path('best.ckpt'), Path('report'), {'val': val, 'rules': {'val': rules}}, 1.0)
    summary = _summary(result)
    assert 'val, rules on the same frames: macro-recall 0.600, good-FPR 0.100' in summary
    assert 'warning' not in summary
    result.metrics['rules']['val'] = {**rules, 'macro_recall': 0.75}
    assert 'on val this model does not beat the rule-based fallback (0.700 vs 0.750)' in _summary(result)
