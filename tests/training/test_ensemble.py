"""Ensembles of cross-validated runs: averaged out-of-fold figures, one ONNX graph of the final models."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_fit_export import CLASSES, tiny_dataset, tiny_fit_args  # noqa: F401 (fixture)
from training.crossval import PREDICTIONS, SUMMARY, crossval, fold_name, summarise_folds
from training.data import FrameStore, make_preprocessor
from training.ensemble import average_runs, ensemble_summary, export_ensemble, main
from training.errors import DatasetError, ExportError
from training.module import WeldClassifier
from weld_core.classes import GOOD_CLASS
from weld_core.model_file import open_session, read_model_info

GROUPS = [['a'], ['b'], ['c']]


def _write_run(run: Path, logits: dict[str, np.ndarray], labels: np.ndarray, stamps: np.ndarray) -> None:
    for name, values in logits.items():
        folder = run / 'folds' / name
        folder.mkdir(parents=True)
        probabilities = np.exp(values) / np.exp(values).sum(1, keepdims=True)
        np.savez(
            folder / PREDICTIONS,
            probabilities=probabilities.astype(np.float32),
            labels=labels,
            sessions=np.array([name] * len(labels)),
            stamps=stamps,
            class_names=np.array(CLASSES),
            eval_views=np.int64(1),
        )
    summary = {'groups': GROUPS, 'dataset_digest': 'd1', 'eval_views': 1, 'class_names': CLASSES}
    (run / SUMMARY).write_text(json.dumps(summary))


def test_the_runs_are_averaged_in_log_probability_then_summarised_as_crossval_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1, 2, 3, 4] * 10)
    stamps = np.arange(len(labels))
    logits = [{g[0]: rng.normal(0, 2, (len(labels), len(CLASSES))) for g in GROUPS} for _ in range(3)]
    runs = [tmp_path / f'run{i}' for i in range(3)]
    for run, values in zip(runs, logits, strict=True):
        _write_run(run, values, labels, stamps)

    _, averaged = average_runs(runs)
    for group in GROUPS:
        name = fold_name(group)
        mean = np.mean([values[name] for values in logits], axis=0)  # the mean logit: the same decision
        expected = np.exp(mean) / np.exp(mean).sum(1, keepdims=True)
        assert np.allclose(averaged[name]['probabilities'], expected, atol=1e-5)
    summary = ensemble_summary(runs, 0.05, 0.8)
    by_hand = summarise_folds(averaged, GROUPS, 0.05, 0.8)
    assert summary['argmax'] == by_hand['argmax'] and summary['nested'] == by_hand['nested']
    assert summary['calibration'] == by_hand['calibration'] and not summary['folds_missing']
    assert summary['argmax']['frames'] == 3 * len(labels) and list(summary['members']) == [
        str(r) for r in runs
    ]


def test_runs_that_did_not_predict_the_same_frames_are_refused(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 3, 4] * 4)
    zeros = {g[0]: np.zeros((len(labels), len(CLASSES))) for g in GROUPS}
    _write_run(tmp_path / 'one', zeros, labels, np.arange(len(labels)))
    _write_run(tmp_path / 'shifted', zeros, labels, np.arange(len(labels)) + 1)
    with pytest.raises(DatasetError, match='two crossval runs'):
        average_runs([tmp_path / 'one'])
    with pytest.raises(DatasetError, match='different frames'):
        average_runs([tmp_path / 'one', tmp_path / 'shifted'])
    other = tmp_path / 'other_data'
    _write_run(other, zeros, labels, np.arange(len(labels)))
    summary = json.loads((other / SUMMARY).read_text())
    (other / SUMMARY).write_text(json.dumps(summary | {'dataset_digest': 'd2'}))
    with pytest.raises(DatasetError, match='dataset_digest'):
        average_runs([tmp_path / 'one', other])
    (tmp_path / 'shifted' / 'folds' / 'b' / PREDICTIONS).unlink()
    with pytest.raises(DatasetError, match='fold b is not done'):
        average_runs([tmp_path / 'one', tmp_path / 'shifted'])
    assert main([str(tmp_path / 'one'), str(tmp_path / 'shifted')]) == 2


@pytest.mark.slow
def test_the_final_models_become_one_graph_carrying_the_ensembles_offset(
    tiny_dataset: Path,  # noqa: F811 (fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [tmp_path / f'cv{seed}' for seed in (0, 1)]
    for seed, run in enumerate(runs):
        args = [*tiny_fit_args(tiny_dataset), '--out', str(run), '--refit_retries', '0']
        crossval([*args, '--seed_everything', str(seed)])
    with pytest.raises(ExportError, match='no final model'):
        export_ensemble(runs, tmp_path / 'ens.onnx', tiny_dataset, 'v1')
    finals = []
    for run in runs:
        args = [*tiny_fit_args(tiny_dataset), '--out', str(run), '--refit_retries', '0', '--final', 'true']
        finals.append(crossval(args)['final'])
    # the second member as if calibrated otherwise: one more logit folded into its good class, and recorded
    state = torch.load(finals[1]['checkpoint'], weights_only=False)
    last_bias = [
        k for k, v in state['state_dict'].items() if k.startswith('net.') and v.shape == (len(CLASSES),)
    ]
    state['state_dict'][last_bias[-1]][CLASSES.index(GOOD_CLASS)] += 1.0
    state['weldvision_calibration']['good_logit_bias'] += 1.0
    torch.save(state, finals[1]['checkpoint'])

    summary, result = export_ensemble(runs, tmp_path / 'ens.onnx', tiny_dataset, 'v1', parity_frames=4)
    assert result.parity_max_abs_diff <= 1e-4
    # (two epochs at 24x32 learn no defect class: flagged for whoever deploys it, as crossval does)
    assert set(summary['weak_members']) == {str(r) for r in runs}
    info = read_model_info(result.path)
    metadata = info.metadata
    assert metadata['model_name'] == 'ensemble2-compact'
    member_gflop = WeldClassifier.load_from_checkpoint(
        finals[0]['checkpoint'], map_location='cpu'
    ).complexity()
    assert metadata['gflop'] == f'{2 * member_gflop["gflop"]:.4f}'  # every member counted
    recorded = json.loads(metadata['validation_metrics'])
    assert recorded['crossval']['nested']['macro_recall'] == pytest.approx(summary['nested']['macro_recall'])
    assert recorded['sessions']['train'] == ['s0', 's1', 's2'] and set(recorded['members']) == set(
        map(str, runs)
    )

    # by hand: each final model with its own folded offset taken out, the ensemble's added, logits averaged
    bias = summary['calibration']['good_logit_bias']
    store = FrameStore(tiny_dataset)
    frame = store.frames[0]
    inputs = []
    mean = 0
    for final in finals:
        member = WeldClassifier.load_from_checkpoint(final['checkpoint'], map_location='cpu').eval()
        pre = make_preprocessor(
            member.channels, member.hparams['input_size'], member.hparams.get('preprocess')
        )
        inputs.append(pre(*store.pair(frame))[None])
        with torch.no_grad():
            logits = member(torch.from_numpy(inputs[-1]))[0].numpy().astype(np.float64)
        folded = torch.load(final['checkpoint'], weights_only=False)['weldvision_calibration']
        logits[CLASSES.index(GOOD_CLASS)] += bias - folded['good_logit_bias']
        mean = mean + logits / len(finals)
    expected = np.exp(mean) / np.exp(mean).sum()
    got = open_session(result.path).run(None, {info.input_name: inputs[0]})[0][0]
    assert np.allclose(got, expected, atol=1e-5)
    # figures only, from the command line
    assert main([str(r) for r in runs]) == 0
