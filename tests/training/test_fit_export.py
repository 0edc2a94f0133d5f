"""End to end on tiny bags: a held-out run (weld-train fit) -> export with parity -> evaluate."""

import json
from pathlib import Path

import onnx
import pytest
import torch

from tests.training.conftest import CLASSES, tiny_args
from training.data import FrameStore, WeldDataModule
from training.errors import ExportError
from training.evaluate import evaluate, format_table
from training.export import export, parity_check
from training.fit import fit
from training.procedure import CheckpointError, load_checkpoint, metrics_at, predict
from weld_core.model_file import REQUIRED_METADATA_KEYS, read_model_info
from weld_core.model_store import read_sidecar


@pytest.mark.slow
def test_fit_reports_held_out_figures_and_exports_a_verified_model(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'run'
    metrics = fit([str(tiny_dataset), *tiny_args(), f'--out={out}'])
    sessions = metrics['sessions']
    assert len(sessions['train']) == len(sessions['val']) == len(sessions['test']) == 1
    assert metrics['run']['train_sessions'] == sessions['train'] and metrics['run']['epochs'] == 2
    # the offset is chosen on validation and the test split measured at it; the arg-max beside it
    model, record = load_checkpoint(metrics['checkpoint'])
    offset = metrics['calibration']['good_logit_bias']
    assert record['good_logit_offset'] == offset
    assert record['held_out']['test']['macro_recall'] == metrics['test']['macro_recall']
    data_args = {'channels': ','.join(model.channels), 'input_size': (24, 32)}
    data = WeldDataModule(str(tiny_dataset), **data_args)
    folded = predict(model, data.inputs('test'))  # the checkpoint carries the offset in its weights
    assert (
        metrics_at(folded, data.labels('test'), model.class_names)['confusion']
        == metrics['test']['confusion']
    )
    # the rules on the same frames, and the report's files
    assert set(metrics['rules']) == {'val', 'test'} and metrics['rules']['test']['frames'] == 10
    report = out / 'report'
    assert json.loads((report / 'metrics.json').read_text())['test'] == metrics['test']
    for name in ('confusion_test.png', 'confusion_val.png', 'curves.png'):
        assert (report / name).is_file(), name
    header = (out / 'metrics.csv').read_text().splitlines()[0]
    assert 'train/loss_epoch' in header

    exported = export(
        metrics['checkpoint'], tmp_path / 'model.onnx', tiny_dataset, version='t1', parity_frames=6
    )
    assert exported.parity_max_abs_diff <= 1e-4
    proto = onnx.load(str(exported.path))
    assert max(op.version for op in proto.opset_import if op.domain in ('', 'ai.onnx')) <= 17
    info = read_model_info(exported.path)
    assert exported.model_id == info.model_id and info.model_id.startswith('compact-t1-')
    assert set(REQUIRED_METADATA_KEYS) <= set(info.metadata)
    assert read_sidecar(exported.path) == info.sha256  # the node checks the copy it is given
    assert list(info.class_names) == CLASSES
    assert (
        info.metadata['training_data'] == json.loads((tiny_dataset / 'manifest.json').read_text())['digest']
    )
    # the file says what made it: the checkpoint's record, held-out figures included
    recorded = json.loads(info.metadata['validation_metrics'])
    assert recorded['held_out']['test']['macro_recall'] == metrics['test']['macro_recall']
    assert recorded['run']['train_sessions'] == sessions['train']

    # a checkpoint that disagrees with the file must fail the parity check loudly
    with torch.no_grad():
        model.net.head[1].bias.add_(3.0 * torch.arange(5.0))
    with pytest.raises(ExportError, match='do not deploy'):
        parity_check(model, exported.path, FrameStore(tiny_dataset), limit=4)

    results = evaluate([exported.path, exported.path], tiny_dataset, split='test')
    assert results[0]['macro_recall'] == results[1]['macro_recall']
    assert 'macro-recall' in format_table(results)


@pytest.mark.slow
def test_int8_export_keeps_the_input_layers_in_float(tiny_dataset: Path, tmp_path: Path) -> None:
    metrics = fit([str(tiny_dataset), *tiny_args(), f'--out={tmp_path / "run"}'])
    exported = export(
        metrics['checkpoint'],
        tmp_path / 'model.onnx',
        tiny_dataset,
        parity_frames=4,
        int8=True,
        calibration_frames=8,
    )
    assert exported.int8_path is not None
    assert read_model_info(exported.int8_path).metadata['quantization'] == 'int8-static-qdq'
    assert read_sidecar(exported.int8_path) == read_model_info(exported.int8_path).sha256
    assert set(exported.int8_report) >= {'fp32', 'int8', 'macro_recall_change'}
    graph = onnx.load(str(exported.int8_path)).graph
    kept = set(exported.int8_report['float_layers'])
    assert kept and 0.0 <= exported.int8_report['agreement'] <= 1.0
    produced_by = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name in kept:
            source = produced_by.get(node.input[0])
            assert source is None or source.op_type != 'DequantizeLinear'


def test_checkpoints_of_other_tools_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        load_checkpoint(tmp_path / 'missing.ckpt')
    (tmp_path / 'junk.ckpt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'):
        load_checkpoint(tmp_path / 'junk.ckpt')
    torch.save({'state_dict': {}, 'hyper_parameters': {}}, tmp_path / 'lightning.ckpt')
    with pytest.raises(CheckpointError, match='not a weldvision checkpoint'):
        load_checkpoint(tmp_path / 'lightning.ckpt')
