"""Cross-validation over sessions: fold groups, out-of-fold figures, nested threshold, resuming."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import CLASSES, tiny_args
from training.calibrate import choose_good_bias
from training.crossval import (
    LOCK,
    PREDICTIONS,
    SUMMARY,
    _selected,
    crossval,
    fold_name,
    session_groups,
    summarise,
    table,
)
from training.errors import DatasetError
from training.procedure import Recipe


def test_sessions_are_dealt_into_groups_in_sorted_order() -> None:
    assert session_groups(['s3', 's1', 's2', 's4', 's1'], 2) == [['s1', 's3'], ['s2', 's4']]
    assert session_groups(['b', 'a', 'c'], 0) == [['a'], ['b'], ['c']]
    assert session_groups(['b', 'a', 'c'], 7) == [['a'], ['b'], ['c']]
    with pytest.raises(DatasetError, match='two sessions'):
        session_groups(['only'], 0)
    with pytest.raises(DatasetError, match='two folds'):
        session_groups(['a', 'b'], 1)


def _write_fold(out: Path, group: list[str], labels: np.ndarray, good_margin: float) -> np.ndarray:
    """Defects are called right; good welds score their class ``good_margin`` logits under spatter."""
    logits = np.zeros((len(labels), len(CLASSES)))
    logits[np.arange(len(labels)), labels] = 3.0
    goods = labels == 0
    logits[goods, 0] = 3.0 - good_margin
    logits[goods, 2] = 3.0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    folder = out / 'folds' / fold_name(group)
    folder.mkdir(parents=True)
    np.savez(
        folder / PREDICTIONS,
        probabilities=probabilities.astype(np.float32),
        labels=labels,
        sessions=np.array([group[0]] * len(labels)),
        stamps=np.arange(len(labels)),
        class_names=np.array(CLASSES),
    )
    return probabilities.astype(np.float32)


def test_out_of_fold_figures_threshold_each_group_on_the_others_only(tmp_path: Path) -> None:
    labels = np.array([0] * 40 + [1, 2, 3, 4] * 10)
    groups = [['a'], ['b'], ['c'], ['d']]
    # every good weld of a and b is called spatter at the arg-max by a margin of 0.55 logits; those of
    # c by 2.55: an offset chosen with c's predictions is larger than one chosen without them
    probs = {
        'a': _write_fold(tmp_path, ['a'], labels, 0.55),
        'b': _write_fold(tmp_path, ['b'], labels, 0.55),
        'c': _write_fold(tmp_path, ['c'], labels, 2.55),
    }
    summary = summarise(tmp_path, groups, Recipe(model={}, data={}, trainer={}))
    assert summary['folds_done'] == ['a', 'b', 'c'] and summary['folds_missing'] == ['d']
    assert summary['argmax']['frames'] == 3 * len(labels)
    assert summary['argmax']['good_fpr'] == 1.0  # every good weld flagged without a threshold
    for name in probs:
        others = [n for n in probs if n != name]
        expected = choose_good_bias(
            np.concatenate([probs[n] for n in others]), np.tile(labels, len(others)), CLASSES, 0.05, 0.8
        ).good_logit_bias
        assert summary['folds'][name]['nested_offset'] == pytest.approx(expected)
    # a and b are thresholded with c's predictions among the others, c only with a's and b's
    assert summary['folds']['a']['nested_offset'] > 2.55
    assert 0.55 < summary['folds']['c']['nested_offset'] < 2.55
    assert summary['folds']['a']['nested']['good_fpr'] == 0.0
    assert summary['folds']['c']['nested']['good_fpr'] == 1.0  # its own larger margin was not seen
    # a's and b's good welds passed, c's were flagged: 80 and 40 of the 120
    confusion = summary['nested']['confusion']
    assert confusion[0][0] == 80 and confusion[0][2] == 40
    assert summary['nested']['per_class']['spatter']['recall'] == 1.0  # no defect swallowed
    # the offset for a model of every session is chosen on all the out-of-fold predictions
    assert summary['calibration']['val_frames'] == 3 * len(labels)
    assert summary['calibration']['good_logit_bias'] > 2.55


def test_fold_selection_is_checked() -> None:
    assert _selected('all', 3) == [0, 1, 2] and _selected('none', 3) == [] and _selected('2,0', 3) == [0, 2]
    with pytest.raises(DatasetError, match='folds 0-2'):
        _selected('3', 3)
    with pytest.raises(DatasetError, match='fold numbers'):
        _selected('s01', 3)


@pytest.mark.slow
def test_crossval_trains_each_fold_without_its_sessions(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / 'cv'
    args = [str(tiny_dataset), *tiny_args(), '--out', str(out), '--retries', '0']
    # a fold another process is training (its lock file) is left to it
    (out / 'folds' / 's1').mkdir(parents=True)
    (out / 'folds' / 's1' / LOCK).write_text('12345\n')
    assert crossval([*args, '--only', '1'])['folds_missing'] == ['s0', 's1', 's2']
    assert not (out / 'folds' / 's1' / PREDICTIONS).exists()
    (out / 'folds' / 's1' / LOCK).unlink()
    summary = crossval([*args, '--only', '0'])
    assert summary['folds_done'] == ['s0'] and summary['folds_missing'] == ['s1', 's2']
    fold0 = out / 'folds' / 's0' / 'fold.json'
    first = fold0.stat().st_mtime_ns
    summary = crossval(args)
    assert fold0.stat().st_mtime_ns == first  # done folds are not trained again
    assert summary['groups'] == [['s0'], ['s1'], ['s2']] and not summary['folds_missing']
    for session in ('s0', 's1', 's2'):
        fold = json.loads((out / 'folds' / session / 'fold.json').read_text())
        assert fold['held_out'] == [session] and session not in fold['run']['train_sessions']
        assert fold['run']['epochs'] == 2
        with np.load(out / 'folds' / session / PREDICTIONS) as data:
            assert set(data['sessions']) == {session}
            assert len(data['labels']) == fold['test_argmax']['frames'] == 10
    assert summary['argmax']['frames'] == summary['nested']['frames'] == 30
    # the rule-based fallback on the same held-out frames
    assert summary['rules']['frames'] == 30 and 0.0 <= summary['rules']['macro_recall'] <= 1.0
    assert json.loads((out / SUMMARY).read_text())['argmax'] == summary['argmax']
    assert 'all, nested' in table(summary)
