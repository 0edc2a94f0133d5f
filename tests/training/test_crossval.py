"""Cross-validation over sessions: fold groups, out-of-fold figures, nested threshold, final model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_fit_export import CLASSES, tiny_dataset, tiny_fit_args  # noqa: F401 (fixture)
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
)
from training.errors import DatasetError
from training.export import export
from weld_core.model_file import read_model_info


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
    summary = summarise(tmp_path, groups, max_good_fpr=0.05, confidence=0.8)
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
def test_crossval_trains_each_fold_without_its_sessions_then_the_final_model(
    tiny_dataset: Path,  # noqa: F811 (fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / 'cv'
    args = [*tiny_fit_args(tiny_dataset), '--out', str(out), '--refit_retries', '0']
    with pytest.raises(DatasetError, match='--final'):
        crossval([*args, '--refit', 'all'])
    with pytest.raises(DatasetError, match='every fold done first'):
        crossval([*args, '--only', '0', '--final', 'true'])
    assert not (out / SUMMARY).exists()  # the refused run wrote no summary; its fold 0 is kept
    assert not (out / 'folds' / 's0' / LOCK).exists()
    # a fold another process is training (its lock file) is left to it
    (out / 'folds' / 's1').mkdir(parents=True)
    (out / 'folds' / 's1' / LOCK).write_text('12345\n')
    assert crossval([*args, '--only', '1'])['folds_missing'] == ['s1', 's2']
    assert not (out / 'folds' / 's1' / PREDICTIONS).exists()
    (out / 'folds' / 's1' / LOCK).unlink()
    fold0 = out / 'folds' / 's0' / 'fold.json'
    assert fold0.is_file()
    first = fold0.stat().st_mtime_ns
    summary = crossval([*args, '--final', 'true'])
    assert fold0.stat().st_mtime_ns == first  # done folds are not trained again
    assert summary['groups'] == [['s0'], ['s1'], ['s2']] and not summary['folds_missing']
    for session in ('s0', 's1', 's2'):
        fold = json.loads((out / 'folds' / session / 'fold.json').read_text())
        assert fold['held_out'] == [session] and session not in fold['train_sessions']
        with np.load(out / 'folds' / session / PREDICTIONS) as data:
            assert set(data['sessions']) == {session}
            assert len(data['labels']) == fold['test_argmax']['frames'] == 10
    assert summary['argmax']['frames'] == 30
    # the rule-based fallback on the same held-out frames
    assert summary['rules']['frames'] == 30 and 0.0 <= summary['rules']['macro_recall'] <= 1.0
    final = summary['final']
    assert final['train_sessions'] == ['s0', 's1', 's2']
    assert final['good_logit_bias'] == summary['calibration']['good_logit_bias']
    state = torch.load(final['checkpoint'], weights_only=False)
    assert state['weldvision_calibration'] == summary['calibration']
    assert state['weldvision_crossval']['argmax']['macro_recall'] == summary['argmax']['macro_recall']
    exported = export(final['checkpoint'], tmp_path / 'final.onnx', tiny_dataset, parity_frames=4)
    recorded = json.loads(read_model_info(exported.path).metadata['validation_metrics'])
    assert recorded['refit'] == 'all' and recorded['sessions']['train'] == ['s0', 's1', 's2']
    assert recorded['crossval']['nested']['macro_recall'] == summary['nested']['macro_recall']

    # only the views changed: every fold is predicted again from its checkpoint, none trained again
    checkpoints = {
        s: (out / 'folds' / s / 'checkpoints' / 'refit.ckpt').stat().st_mtime_ns for s in ('s0', 's1', 's2')
    }
    with np.load(out / 'folds' / 's0' / PREDICTIONS) as data:
        assert 'eval_views' in data.files and int(data['eval_views']) == 1
        one_view = data['probabilities']
    summary = crossval([*args, '--only', 'none', '--model.eval_views', '4'])
    assert summary['eval_views'] == 4 and summary['argmax']['frames'] == 30
    for session in ('s0', 's1', 's2'):
        fold_dir = out / 'folds' / session
        assert fold_dir.joinpath('checkpoints', 'refit.ckpt').stat().st_mtime_ns == checkpoints[session]
        assert json.loads((fold_dir / 'fold.json').read_text())['eval_views'] == 4
        with np.load(fold_dir / PREDICTIONS) as data:
            assert int(data['eval_views']) == 4 and set(data['sessions']) == {session}
    with np.load(out / 'folds' / 's0' / PREDICTIONS) as data:
        four_views = data['probabilities']
    # (a two-epoch net answers nearly alike whatever it is shown: the views move it a little)
    assert four_views.shape == one_view.shape and not np.array_equal(four_views, one_view)
    written = (out / 'folds' / 's0' / PREDICTIONS).stat().st_mtime_ns
    crossval([*args, '--only', 'none', '--model.eval_views', '4'])
    assert (out / 'folds' / 's0' / PREDICTIONS).stat().st_mtime_ns == written  # nothing left to redo
    # the final model with four views: its offset chosen on the four-view predictions, views in its ONNX graph
    summary = crossval([*args, '--model.eval_views', '4', '--final', 'true'])
    assert summary['final']['good_logit_bias'] == summary['calibration']['good_logit_bias']
    assert (out / 'folds' / 's0' / PREDICTIONS).stat().st_mtime_ns == written
    exported = export(summary['final']['checkpoint'], tmp_path / 'final4.onnx', tiny_dataset, parity_frames=4)
    assert exported.metadata['eval_views'] == '4' and exported.parity_max_abs_diff <= 1e-4
