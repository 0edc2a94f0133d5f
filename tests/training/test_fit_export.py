"""End to end on tiny bags: convert -> a couple of fit steps on CPU -> export with parity -> evaluate."""

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert
from training.data import FrameStore, WeldDataModule
from training.errors import ExportError
from training.evaluate import evaluate, format_table
from training.export import export, parity_check
from training.fit import _summary, fit, split_metrics
from training.metrics import weak_classes
from training.module import WeldClassifier
from weld_core.model_file import REQUIRED_METADATA_KEYS, read_model_info
from weld_core.model_store import read_sidecar

CLASSES = ['good', 'porosity', 'spatter', 'gap', 'undercut']


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    bags = []
    for index in range(3):
        bags.append(
            write_bag(tmp_path / f'bag{index}', make_frames(CLASSES * 2, seed=index), session_id=f's{index}')
        )
    convert(bags, tmp_path / 'ds', progress=False, workers=1, val_fraction=0.34, test_fraction=0.34)
    return tmp_path / 'ds'


def tiny_fit_args(dataset: Path) -> list[str]:
    """A two-epoch CPU fit of ``dataset`` at 24x32, quiet."""
    return [
        '--data.dataset_dir',
        str(dataset),
        '--data.input_size',
        '[24, 32]',
        '--data.batch_size',
        '8',
        '--trainer.max_epochs',
        '2',
        '--trainer.enable_progress_bar',
        'false',
        '--data.progress',
        'false',
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    'model_args',
    [
        # with a moving average of the weights: the averaged net is what is selected and exported
        [
            '--model.model_name',
            'compact',
            '--data.preprocess',
            '{"relief_denoise_px": 1.0}',
            '--model.ema_decay',
            '0.9',
        ],
        ['--model.model_name', 'resnet18', '--model.model_kwargs', '{}', '--data.channels', 'rgb'],
    ],
)
def test_fit_export_parity_and_evaluate(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = fit([*tiny_fit_args(tiny_dataset), *model_args])
    assert result.best_checkpoint.is_file()
    metrics = json.loads((result.report_dir / 'metrics.json').read_text())
    assert {'val', 'test', 'complexity', 'calibration', 'rules'} <= set(metrics)
    # the rule-based fallback on the same validation and test frames
    assert set(metrics['rules']) == {'val', 'test'}
    assert all(0.0 <= row['macro_recall'] <= 1.0 for row in metrics['rules'].values())
    # the good-class threshold was set on the validation split and saved in the checkpoint used
    assert result.best_checkpoint.name == 'calibrated.ckpt'
    calibration = torch.load(result.best_checkpoint, weights_only=False)['weldvision_calibration']
    assert calibration == metrics['calibration']
    assert calibration['val_good_fpr_after'] <= max(0.05, calibration['val_good_fpr_before'])
    assert metrics['sessions']['val'] != metrics['sessions']['test']
    assert (result.report_dir / 'confusion_val.png').is_file()
    # per-class validation recall each epoch (a class a run did not learn shows there), and the
    # classes under the warning line are exactly those with a low validation recall
    header = next(iter(result.report_dir.parent.glob('metrics.csv'))).read_text().splitlines()[0]
    assert all(f'val/recall_{name}' in header for name in CLASSES)
    assert (result.report_dir / 'curves.png').is_file()
    assert metrics['val_weak_classes'] == {
        name: round(values['recall'], 3)
        for name, values in metrics['val']['per_class'].items()
        if values['support'] and values['recall'] < 0.4
    }

    exported = export(
        result.best_checkpoint,
        tmp_path / 'model.onnx',
        tiny_dataset,
        version='t1',
        parity_frames=6,
        int8=model_args[1] == 'compact',
        calibration_frames=8,
    )
    assert exported.parity_max_abs_diff <= 1e-4
    proto = onnx.load(str(exported.path))
    assert max(op.version for op in proto.opset_import if op.domain in ('', 'ai.onnx')) <= 17
    info = read_model_info(exported.path)
    assert set(REQUIRED_METADATA_KEYS) <= set(info.metadata)
    assert read_sidecar(exported.path) == info.sha256  # the node checks the copy it is given
    assert list(info.class_names) == CLASSES
    if model_args[1] == 'compact':
        assert info.metadata['relief_denoise_px'] == '1'  # data.preprocess travels with the model
    assert (
        info.metadata['training_data'] == json.loads((tiny_dataset / 'manifest.json').read_text())['digest']
    )
    if exported.int8_path is not None:
        assert read_model_info(exported.int8_path).metadata['quantization'] == 'int8-static-qdq'
        assert set(exported.int8_report) >= {'fp32', 'int8', 'macro_recall_change'}
        # the layers that read the input stay in float: no quantised tensor feeds them
        graph = onnx.load(str(exported.int8_path)).graph
        kept = set(exported.int8_report['float_layers'])
        assert kept and 0.0 <= exported.int8_report['agreement'] <= 1.0
        produced_by = {out: node for node in graph.node for out in node.output}
        for node in graph.node:
            if node.name in kept:
                source = produced_by.get(node.input[0])
                assert source is None or source.op_type != 'DequantizeLinear'

    # a checkpoint that disagrees with the file must fail the parity check loudly
    other = WeldClassifier.load_from_checkpoint(result.best_checkpoint, map_location='cpu')
    with torch.no_grad():
        other.net.head[1].bias.add_(3.0 * torch.arange(5.0))
    with pytest.raises(ExportError, match='do not deploy'):
        parity_check(other, exported.path, FrameStore(tiny_dataset), limit=4)

    results = evaluate([exported.path, exported.path], tiny_dataset, split='test')
    assert results[0]['macro_recall'] == results[1]['macro_recall']
    assert 'macro-recall' in format_table(results)


@pytest.mark.slow
def test_refit_trains_on_more_sessions_with_the_validated_threshold(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = tiny_fit_args(tiny_dataset)
    result = fit([*common, '--refit', 'trainval'])
    metrics = json.loads((result.report_dir / 'metrics.json').read_text())
    refitted = metrics['refit']
    sessions = metrics['sessions']
    # trained on the validation session as well; the test session stays held out and is measured
    assert refitted['train_sessions'] == sorted(sessions['train'] + sessions['val'])
    assert refitted['test_sessions'] == sessions['test']
    assert refitted['epochs'] == 2
    # a refit that misses a class on its own training frames is trained again with the next seed
    # (two epochs on a few frames usually miss one); the best attempt is kept, the others removed
    attempts = refitted['attempts']
    assert [a['seed'] for a in attempts] == list(range(len(attempts)))
    assert len(attempts) == (2 if attempts[0]['train_weak_classes'] else 1)
    assert refitted['train'] == max((a['train'] for a in attempts), key=lambda t: t['macro_recall'])
    assert sorted(p.name for p in result.refit_checkpoint.parent.glob('refit*')) == ['refit.ckpt']
    assert refitted['good_logit_bias'] == metrics['calibration']['good_logit_bias']
    assert result.refit_checkpoint is not None and result.refit_checkpoint.name == 'refit.ckpt'
    state = torch.load(result.refit_checkpoint, weights_only=False)
    assert state['weldvision_refit']['train_frames'] == refitted['train_frames']
    assert state['weldvision_calibration'] == metrics['calibration']
    # the saved checkpoint is the model that was measured (threshold folded in)
    model = WeldClassifier.load_from_checkpoint(result.refit_checkpoint, map_location='cpu')
    store = FrameStore(tiny_dataset)
    test_frames = [f for f in store.frames if f['session'] in sessions['test']]
    assert refitted['test']['frames'] == len(test_frames)
    data = WeldDataModule(
        str(tiny_dataset),
        channels=','.join(model.channels),
        input_size=(24, 32),
        val_sessions=[],
        test_sessions=sessions['test'],
        progress=False,
    )
    assert split_metrics(model, data)[0]['confusion'] == refitted['test']['confusion']
    exported = export(result.refit_checkpoint, tmp_path / 'refit.onnx', tiny_dataset, parity_frames=4)
    assert exported.parity_max_abs_diff <= 1e-4
    # the file says what it was trained on and measured with: its own test figures, not the
    # validated model's validation figures (the validation session was in its training data)
    recorded = json.loads(read_model_info(exported.path).metadata['validation_metrics'])
    assert recorded['refit'] == 'trainval' and 'val' not in recorded
    assert recorded['test']['macro_recall'] == refitted['test']['macro_recall']
    assert recorded['sessions']['train'] == refitted['train_sessions']
    assert recorded['validated_model']['val']['macro_recall'] == metrics['val']['macro_recall']
    assert 'refit' in _summary(result)
    # a class the refit did not learn shows on its own training frames, and in the summary
    (train,) = split_metrics(model, data, 'train')
    assert refitted['train']['macro_recall'] == train['macro_recall']
    assert refitted['train_weak_classes'] == weak_classes(train)
    result.metrics['refit']['train_weak_classes'] = {'spatter': 0.0}
    assert 'the refit did not learn spatter 0.00' in _summary(result)

    # started from local weights (here the first fit's): the refit starts from them too, and the
    # trained checkpoints no longer need the file
    start = tmp_path / 'start.ckpt'
    shutil.copy(result.best_checkpoint, start)
    everything = fit([*common, '--refit', 'all', '--model.init_weights', str(start)])
    refitted = everything.metrics['refit']
    assert refitted['train_sessions'] == sorted({f['session'] for f in store.frames})
    assert 'test' not in refitted and 'every session trained on' in _summary(everything)
    assert everything.refit_checkpoint is not None
    for checkpoint in (everything.best_checkpoint, everything.refit_checkpoint):
        assert torch.load(checkpoint, weights_only=False)['hyper_parameters']['init_weights'] == str(start)
    start.unlink()
    assert export(
        everything.refit_checkpoint, tmp_path / 'all.onnx', tiny_dataset, parity_frames=4
    ).path.is_file()
