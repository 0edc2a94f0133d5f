"""weld-train release: sessions in, one verified model file out, its held-out figures inside."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import CLASSES, tiny_args, tiny_bags
from training.procedure import Recipe, load_checkpoint
from training.release import ReleaseError, release
from weld_core.model_file import read_model_info
from weld_core.model_store import check_model, read_sidecar


@pytest.mark.slow
def test_release_from_bags_writes_one_checked_model_with_the_procedures_figures(tmp_path: Path) -> None:
    bags = tiny_bags(tmp_path / 'bags', sessions=4)
    out, work = tmp_path / 'models' / 'weld.onnx', tmp_path / 'work'
    args = [*map(str, bags), '-o', str(out), f'--work={work}', '--version=r1', *tiny_args()]
    # enough epochs for the tiny frames' defects to be learnt by every run
    result = release([*args, '--trainer.max_epochs=30', '--model.lr=0.01'])
    # the file the inference node would run, with its sidecar
    checked = check_model(out)
    assert read_sidecar(out) == checked.info.sha256
    assert result['model_id'] == checked.info.model_id and checked.info.model_id.startswith('compact-r1-')
    assert list(checked.info.class_names) == CLASSES
    # the final run trained on every session; the held-out run on all but the dataset's test sessions
    held_out = result['held_out']
    sessions = held_out['sessions']
    assert result['final']['train_sessions'] == ['s0', 's1', 's2', 's3']
    assert len(sessions['test']) >= 2 and not set(sessions['train']) & set(sessions['test'])
    assert sorted(sessions['train'] + sessions['test']) == ['s0', 's1', 's2', 's3']
    assert held_out['run']['train_sessions'] == sessions['train']
    # the metadata records the held-out figures of the procedure (not the final run's own frames)
    recorded = json.loads(read_model_info(out).metadata['validation_metrics'])
    assert recorded['procedure'] == 'release'
    assert recorded['held_out']['test']['macro_recall'] == held_out['test']['macro_recall']
    assert recorded['held_out']['sessions']['test'] == sessions['test']
    assert recorded['held_out']['rules']['frames'] == held_out['test']['frames']
    assert recorded['run']['train_sessions'] == ['s0', 's1', 's2', 's3']
    # it continued the held-out run's network for the final epochs (the default)
    assert recorded['run']['continued_from'] == 'held_out'
    assert recorded['run']['epochs'] == Recipe.final_epochs
    assert recorded['run']['held_out_epochs'] == held_out['run']['epochs'] == 30
    # the offset chosen on every held-out frame is the one folded into the final model
    assert recorded['good_logit_offset'] == held_out['offset_for_all']['good_logit_bias']
    _, record = load_checkpoint(work / 'final' / 'model.ckpt')
    assert record == recorded
    assert (work / 'dataset' / 'manifest.json').is_file()
    # and the INT8 file for the board's CPU, which the node takes as well
    int8 = check_model(result['int8_model'])
    assert read_sidecar(Path(result['int8_model'])) == int8.info.sha256
    assert int8.info.metadata['quantization'] == 'int8-static-qdq' and 0.0 <= result['int8_agreement'] <= 1.0
    assert (work / 'held_out' / 'report' / 'metrics.json').is_file()


@pytest.mark.slow
def test_a_final_run_that_learns_nothing_writes_no_model(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / 'weld.onnx'
    # a learning rate of 0: the network stays as initialised and calls nearly everything one class
    args = [str(tiny_dataset), '-o', str(out), f'--work={tmp_path / "work"}', *tiny_args()]
    with pytest.raises(ReleaseError, match=r'did not learn .* no model written'):
        release([*args, '--model.lr=0', '--retries=1'])
    assert not out.exists() and not out.with_name('weld.onnx.sha256').exists()
    _, record = load_checkpoint(tmp_path / 'work' / 'final' / 'model.ckpt')
    assert [attempt['seed'] for attempt in record['run']['attempts']] == [0, 1]


def test_a_dataset_too_small_to_measure_is_refused(tmp_path: Path) -> None:
    from training.convert import convert

    convert(tiny_bags(tmp_path / 'bags', sessions=2), tmp_path / 'ds', progress=False, workers=1)
    with pytest.raises(ReleaseError, match='two held-out sessions'):
        release(
            [str(tmp_path / 'ds'), '-o', str(tmp_path / 'm.onnx'), *tiny_args(), '--trainer.max_epochs=1']
        )
    assert not (tmp_path / 'm.onnx').exists()


def test_weld_train_runs_from_any_folder_with_help_for_every_option(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name('weld-train')
    listed = subprocess.run([command, '--help'], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert 'release' in listed.stdout and listed.stderr == ''
    for name in ('release', 'fit', 'crossval'):
        shown = subprocess.run(
            [command, name, '--help'], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        assert shown.stderr == '', shown.stderr
        assert '--model.lr' in shown.stdout and '(type: ' in shown.stdout
        assert 'peak learning rate' in shown.stdout  # each option's own description
