"""Classification figures from predictions, and the warning for a class a run did not learn."""

import torch

from training.fit import summary_lines
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


def _metrics(test_recall: float, rules_recall: float, weak: dict[str, float]) -> dict:
    test = {'macro_recall': test_recall, 'good_fpr': 0.0, 'missed_defect_rate': 0.3, 'frames': 97}
    rules = {'macro_recall': rules_recall, 'good_fpr': 0.1, 'missed_defect_rate': 0.35}
    return {
        'test': test,
        'sessions': {'test': ['s01', 's03']},
        'rules': {'test': rules},
        'run': {'train_weak_classes': weak, 'seconds': 12.0, 'epochs': 45},
    }


def test_summary_warns_about_a_class_not_learnt() -> None:
    assert 'warning' not in '\n'.join(summary_lines(_metrics(0.7, 0.6, {})))
    lines = '\n'.join(summary_lines(_metrics(0.7, 0.6, {'porosity': 0.17})))
    assert 'not learnt (porosity 0.17 recall on its own training frames): do not deploy it' in lines


def test_summary_sets_the_model_beside_the_rules_and_warns_when_they_win() -> None:
    lines = '\n'.join(summary_lines(_metrics(0.7, 0.6, {})))
    assert 'rules on the same frames: macro-recall 0.600, good-FPR 0.100' in lines
    assert 'held out, each session thresholded on the others: macro-recall 0.700' in lines
    assert 'warning' not in lines
    lines = '\n'.join(summary_lines(_metrics(0.7, 0.75, {})))
    assert 'warning: the model does not beat the rule-based fallback on these frames' in lines
