"""End to end on tiny bags: a held-out run (weld-train fit) -> export with parity -> evaluate."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml

from tests.training.bagmaker import make_frames, write_bag
from tests.training.conftest import CLASSES, tiny_args
from training.bpu import BpuBundle
from training.calibrate import choose_good_bias
from training.compare import main as compare_main
from training.convert import convert
from training.data import FrameStore, WeldDataModule
from training.errors import ExportError
from training.evaluate import evaluate, format_table
from training.export import export, parity_check
from training.export import main as export_main
from training.fit import fit
from training.procedure import CheckpointError, load_checkpoint, metrics_at, predict
from weld_core.model_file import REQUIRED_METADATA_KEYS, open_session, read_model_info
from weld_core.model_store import check_model, read_sidecar


@pytest.mark.slow
def test_fit_reports_held_out_figures_and_exports_a_verified_model(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'run'
    metrics = fit([str(tiny_dataset), *tiny_args(), f'--out={out}'])
    sessions = metrics['sessions']
    # one session trains; the test session and the validation one are held out (two are needed)
    assert len(sessions['train']) == 1 and len(sessions['test']) == 2
    assert metrics['run']['train_sessions'] == sessions['train'] and metrics['run']['epochs'] == 2
    # each held-out session is thresholded with the offset chosen on the other's frames
    data = WeldDataModule(
        str(tiny_dataset), input_size=(24, 32), val_sessions=[], test_sessions=sessions['test']
    )
    model, record = load_checkpoint(metrics['checkpoint'])
    assert record['good_logit_offset'] == metrics['offset_for_all']['good_logit_bias']
    assert record['held_out']['test']['macro_recall'] == metrics['test']['macro_recall']
    assert set(metrics['nested_offsets']) == set(sessions['test'])
    folded = predict(model, data.inputs('test'))  # the checkpoint carries the offset for all
    raw = np.log(folded)
    raw[:, 0] -= record['good_logit_offset']  # back to the run's own logits (up to a constant)
    sessions_of = np.array([f['session'] for f in data.splits['test']])
    for session, offset in metrics['nested_offsets'].items():
        mine = sessions_of == session
        others = np.exp(raw[~mine]) / np.exp(raw[~mine]).sum(1, keepdims=True)
        expected = choose_good_bias(others, data.labels('test')[~mine], model.class_names, 0.05, 0.8)
        assert offset == pytest.approx(expected.good_logit_bias)
    assert (
        metrics_at(np.exp(raw) / np.exp(raw).sum(1, keepdims=True), data.labels('test'), model.class_names)[
            'confusion'
        ]
        == metrics['test_argmax']['confusion']
    )
    # the rules on the same frames, and the report's files
    assert set(metrics['rules']) == {'test'} and metrics['rules']['test']['frames'] == 20
    report = out / 'report'
    assert json.loads((report / 'metrics.json').read_text())['test'] == metrics['test']
    for name in ('confusion_test.png', 'curves.png'):
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
    assert info.metadata['preprocess_version'] == '3' and 'tophat_px' not in info.metadata
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

    # the file names the dataset version it trained on; after the dataset grows, compare resolves it
    assert info.metadata['dataset_version'] == 'v0001' == recorded['run']['dataset_version']
    more = write_bag(tmp_path / 'more', make_frames(CLASSES * 3, seed=7), session_id='s7')
    assert convert([more], tiny_dataset, progress=False, workers=1).version == 'v0002'
    assert (
        compare_main(
            [
                str(exported.path),
                '--dataset',
                str(tiny_dataset),
                '--version',
                'model',
                '--split',
                'all',
                '--json',
                str(tmp_path / 'c.json'),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / 'c.json').read_text())[0]['frames'] == 30  # v0001's, not v0002's 45
    assert evaluate([exported.path], tiny_dataset, split='all')[0]['frames'] == 45
    assert compare_main([str(exported.path), '--dataset', str(tiny_dataset), '--version', 'v0009']) == 2


@pytest.mark.slow
def test_int8_and_bpu_exports_for_the_board(tiny_dataset: Path, tmp_path: Path) -> None:
    """The INT8 file keeps the input layers and the softmax in float; the BPU bundle is complete."""
    metrics = fit([str(tiny_dataset), *tiny_args(), f'--out={tmp_path / "run"}'])
    exported = export(
        metrics['checkpoint'],
        tmp_path / 'model.onnx',
        tiny_dataset,
        parity_frames=4,
        int8=True,
        calibration_frames=8,
        bpu_dir=tmp_path / 'bpu',
        bpu_frames=5,
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
    # ... and so does the softmax after the classifier: the node takes the file (check_model) and
    # its outputs are probabilities, not 8-bit steps
    assert any(node.op_type == 'Softmax' and node.name in kept for node in graph.node)
    checked = check_model(exported.int8_path)
    store = FrameStore(tiny_dataset)
    tensor = checked.info.preprocessor(*store.pair(store.frames[0]))[None]
    probabilities = checked.session.run(None, {checked.info.input_name: tensor})[0][0]
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5 and probabilities.min() >= 0.0
    assert len(set(np.round(probabilities * 255.0, 3) % 1.0)) > 1  # not multiples of 1/255

    assert exported.bpu is not None
    check_bpu_bundle(exported.bpu, exported.path, store)
    # the command line of docs/bpu.md
    argv = [metrics['checkpoint'], '-o', str(tmp_path / 'cli.onnx'), '--dataset', str(tiny_dataset)]
    assert export_main([*argv, '--bpu', str(tmp_path / 'cli-bpu'), '--bpu-frames', '2']) == 0
    assert len(list((tmp_path / 'cli-bpu' / 'calibration').glob('*.bin'))) == 2


def check_bpu_bundle(bundle: BpuBundle, exported: Path, store: FrameStore) -> None:
    """The RDK X5 converter's input: opset 11, fixed input, calibration as the runtime preprocesses."""
    info = read_model_info(exported)
    channels, (height, width) = len(info.preprocessor.channels), info.preprocessor.input_size
    proto = onnx.load(str(bundle.onnx_path))
    assert max(op.version for op in proto.opset_import if op.domain in ('', 'ai.onnx')) == 11
    assert proto.ir_version <= 7
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, channels, height, width] and proto.graph.output[0].name == 'logits'

    config = yaml.safe_load(bundle.config_path.read_text())
    assert config['model_parameters']['march'] == 'bayes-e'
    assert (bundle.folder / config['model_parameters']['onnx_model']) == bundle.onnx_path
    inputs = config['input_parameters']
    assert inputs['input_name'] == info.input_name
    assert inputs['input_shape'] == f'1x{channels}x{height}x{width}'
    assert (inputs['input_type_train'], inputs['input_layout_train'], inputs['norm_type']) == (
        'featuremap',
        'NCHW',
        'no_preprocess',
    )
    calibration = sorted((bundle.folder / config['calibration_parameters']['cal_data_dir']).glob('*.bin'))
    assert config['calibration_parameters']['cal_data_type'] == 'float32'
    assert len(calibration) == bundle.calibration_files == 5
    # each sample is a training frame through the runtime preprocessing, float32 NCHW as numpy.tofile
    frames = [frame for frame in store.frames if frame['split'] == 'train']
    first = np.fromfile(calibration[0], dtype=np.float32).reshape(1, channels, height, width)
    np.testing.assert_array_equal(first[0], info.preprocessor(*store.pair(frames[0])))
    metadata = json.loads((bundle.folder / 'metadata.json').read_text())
    assert metadata['output'] == 'logits' and json.loads(metadata['class_names']) == CLASSES

    # the softmax of the bundle's logits is the deployed model's output
    session, reference = onnxruntime.InferenceSession(str(bundle.onnx_path)), open_session(exported)
    logits = session.run(None, {info.input_name: first})[0]
    expected = reference.run(None, {info.input_name: first})[0]
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), expected, atol=1e-5)
    assert bundle.max_abs_diff <= 1e-4


def test_checkpoints_of_other_tools_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='no such checkpoint'):
        load_checkpoint(tmp_path / 'missing.ckpt')
    (tmp_path / 'junk.ckpt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a readable checkpoint'):
        load_checkpoint(tmp_path / 'junk.ckpt')
    torch.save({'state_dict': {}, 'hyper_parameters': {}}, tmp_path / 'lightning.ckpt')
    with pytest.raises(CheckpointError, match='not a weldvision checkpoint'):
        load_checkpoint(tmp_path / 'lightning.ckpt')
