"""``weld-train export CHECKPOINT -o model.onnx --dataset DIR``: checkpoint -> ONNX, verified.

    weld-train export runs/fit-20261207-101500/model.ckpt -o models/weld.onnx --dataset data/weldsim [--int8]

``weld-train release`` exports its model itself; this command is for the checkpoints of ``fit``.

The exported graph takes the preprocessed (N, C, H, W) float32 input of
:class:`weld_core.preprocess.Preprocessor` and outputs softmax probabilities; everything the runtime
needs is in ``metadata_props`` (keys: :data:`weld_core.model_file.REQUIRED_METADATA_KEYS`).

Parity check (always): raw frames of the validation split go through the runtime path (decoded
arrays -> ``Preprocessor.from_metadata(file metadata)`` -> ONNX Runtime) and through the checkpoint
in PyTorch; the export fails when any probability differs by more than ``--tolerance``.

``--int8``: static INT8 quantisation with onnxruntime.quantization, calibrated on training frames;
the layers that read the input and the softmax after the classifier stay in float
(:func:`input_layers`, :func:`output_layers`); the file passes the inference node's own check; the
accuracy of both files on the validation split is reported side by side, with how often they agree.
"""

import argparse
import datetime as dt
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.bpu import BpuBundle, write_bpu_bundle
from training.data import FrameStore, make_preprocessor
from training.errors import ExportError
from training.module import MODEL_NAME, WeldClassifier
from training.procedure import load_checkpoint
from weld_core.errors import WeldError
from weld_core.model_file import OUTPUT_PROBABILITIES, open_session, read_model_info
from weld_core.model_store import check_model, write_sidecar
from weld_core.preprocess import Preprocessor

OPSET = 17  # onnxruntime >= 1.14 (Humble-era boards) runs opset 17
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    model_id: str
    metadata: dict[str, str]
    parity_max_abs_diff: float
    parity_frames: int
    int8_path: Path | None = None
    int8_report: dict[str, Any] = field(default_factory=dict)
    bpu: BpuBundle | None = None


class _Probabilities(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def build_metadata(
    model: WeldClassifier,
    checkpoint: Path,
    validation_metrics: dict[str, Any],
    training_data: str,
    version: str,
) -> dict[str, str]:
    """The ONNX metadata; ``training_data``: the dataset digest when the run recorded none."""
    preprocessor = preprocessor_of(model)
    run = validation_metrics.get('run', {})
    metadata = {
        'class_names': json.dumps(list(model.class_names)),
        'model_name': MODEL_NAME,
        'model_version': version,
        'created_at': dt.datetime.now(dt.UTC).isoformat(timespec='seconds'),
        'training_data': run.get('dataset_digest', training_data),
        # the frozen dataset version the model was trained on (weld-train dataset versions)
        'dataset_version': run.get('dataset_version', ''),
        'validation_metrics': json.dumps(validation_metrics),
        'output': OUTPUT_PROBABILITIES,
        'source_checkpoint': checkpoint.name,
        'gflop': f'{model.complexity()["gflop"]:.4f}',
        'opset': str(OPSET),
        **preprocessor.to_metadata(),
    }
    return metadata


def preprocessor_of(model: WeldClassifier) -> Preprocessor:
    return make_preprocessor(model.channels, model.hparams['input_size'], model.hparams.get('preprocess'))


def write_onnx(
    model: WeldClassifier,
    path: Path,
    metadata: dict[str, str],
    opset: int = OPSET,
    batch: int | None = None,
    softmax: bool = True,
) -> None:
    """``model`` (softmax on its eval-mode logits, its views included) as ONNX with ``metadata``.

    ``batch`` fixes the batch size (the BPU toolchain takes fixed shapes); ``softmax=False`` ends
    the graph at the logits.
    """
    import onnx

    wrapped = (_Probabilities(model) if softmax else model).eval()
    height, width = model.hparams['input_size']
    dummy = torch.zeros(batch or 1, len(model.channels), height, width)
    output = 'probabilities' if softmax else 'logits'
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        raw = Path(temp) / 'model.onnx'
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(raw),
            input_names=['input'],
            output_names=[output],
            dynamic_axes=None if batch else {'input': {0: 'batch'}, output: {0: 'batch'}},
            opset_version=opset,
            dynamo=False,
        )
        proto = onnx.load(str(raw))
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f'weldvision {metadata["model_name"]} {metadata["model_version"]}'
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _spread(store: FrameStore, split: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` frames of ``split`` (all frames if it has none), evenly spaced over its sessions."""
    frames = [f for f in store.frames if f['split'] == split] or store.frames
    if len(frames) <= limit:
        return list(frames)
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, limit).round()]


def parity_check(
    model: WeldClassifier,
    onnx_path: Path,
    store: FrameStore,
    limit: int = 32,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[float, int]:
    """Max |p_onnx - p_torch| over validation frames, runtime path vs checkpoint; raises beyond tolerance."""
    info = read_model_info(onnx_path)
    session = open_session(onnx_path)
    runtime_pre = info.preprocessor
    training_pre = preprocessor_of(model)
    frames = _spread(store, 'val', limit)
    model.eval()
    worst = 0.0
    for frame in frames:
        rgb, depth = store.pair(frame)
        runtime_input = runtime_pre(rgb, depth)[None]
        onnx_probs = session.run(None, {info.input_name: runtime_input})[0]
        with torch.no_grad():
            torch_probs = torch.softmax(model(torch.from_numpy(training_pre(rgb, depth)[None])), 1).numpy()
        worst = max(worst, float(np.abs(onnx_probs - torch_probs).max()))
    if worst > tolerance:
        raise ExportError(
            f'{onnx_path}: ONNX Runtime + runtime preprocessing differ from the checkpoint by {worst:.2e} '
            f'(tolerance {tolerance:.0e}) on {len(frames)} validation frames; do not deploy this file'
        )
    return worst, len(frames)


def export(
    checkpoint: str | Path,
    out: str | Path,
    dataset_dir: str | Path,
    version: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    parity_frames: int = 32,
    int8: bool = False,
    calibration_frames: int = 256,
    bpu_dir: str | Path | None = None,
    bpu_frames: int = 100,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (ONNX), verify parity on ``dataset_dir``'s validation frames.

    ``bpu_dir``: also write the RDK X5 BPU converter's input there (:mod:`training.bpu`), calibrated
    on ``bpu_frames`` training frames.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    model, record = load_checkpoint(checkpoint)
    store = FrameStore(dataset_dir)
    if list(store.manifest['classes']) != list(model.class_names):
        raise ExportError(
            f"{dataset_dir}: its classes {store.manifest['classes']} differ from the model's "
            f'{list(model.class_names)}'
        )
    created = dt.datetime.now(dt.UTC)
    version = version or created.strftime('%Y%m%d-%H%M%S')
    metadata = build_metadata(model, checkpoint, record, store.manifest['digest'], version)
    write_onnx(model, out, metadata)
    worst, count = parity_check(model, out, store, parity_frames, tolerance)
    write_sidecar(out)
    result = ExportResult(
        path=out,
        model_id=read_model_info(out).model_id,
        metadata=metadata,
        parity_max_abs_diff=worst,
        parity_frames=count,
    )
    if int8:
        result.int8_path, result.int8_report = quantize_int8(out, store, calibration_frames)
        write_sidecar(result.int8_path)
    if bpu_dir is not None:
        runtime = read_model_info(out).preprocessor
        tensors = [runtime(*store.pair(frame))[None] for frame in _spread(store, 'train', bpu_frames)]
        result.bpu = write_bpu_bundle(model, out, Path(bpu_dir), tensors, tolerance)
    return result


# Layers with weights: the first of them on each path from the graph's input stay in float when
# quantising. The input is one tensor whose channels spread differently (relief from -17 to +10 of
# the frame's noise units, colour within +-2); quantised to 8 bits per tensor, a step is 0.1 relief
# noise units and the faint relief of pores and droplets is lost. Measured 2026-12-05 on the four
# fold models of training.crossval (817 frames out of fold): 0.688 macro-recall with every layer
# quantised, 0.890 with these kept in float, 0.888 in FP32.
_WEIGHTED_OPS = frozenset({'Conv', 'ConvTranspose', 'Gemm', 'MatMul'})


def input_layers(graph: Any) -> list[str]:
    """Names of the first weighted nodes (:data:`_WEIGHTED_OPS`) on every path from ``graph``'s inputs."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initialisers = {tensor.name for tensor in graph.initializer}
    frontier = [tensor.name for tensor in graph.input if tensor.name not in initialisers]
    seen: set[int] = set()
    found: list[str] = []
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in _WEIGHTED_OPS:
                if not node.name:
                    raise ExportError(
                        f'an unnamed {node.op_type} node reads the input: it cannot be kept in float'
                    )
                found.append(node.name)
            else:
                frontier.extend(node.output)
    return sorted(found)


def output_layers(graph: Any) -> list[str]:
    """Names of the nodes after the last weighted nodes (:data:`_WEIGHTED_OPS`) on every path to the outputs.

    The softmax (and any averaging of views after the classifier) stays in float when quantising:
    quantised to 8 bits, the output's probabilities come in steps of 1/255 that do not sum to 1, and
    the node refuses the file (weld_core.model_store.check_probabilities).
    """
    producers = {name: node for node in graph.node for name in node.output}
    frontier = [tensor.name for tensor in graph.output]
    seen: set[int] = set()
    found: list[str] = []
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or id(node) in seen or node.op_type in _WEIGHTED_OPS:
            continue
        seen.add(id(node))
        if not node.name:
            raise ExportError(
                f'an unnamed {node.op_type} node follows the classifier: it cannot be kept in float'
            )
        found.append(node.name)
        frontier.extend(node.input)
    return sorted(found)


def _unquantise_inputs(graph: Any, names: Sequence[str]) -> None:
    """Feed the nodes ``names`` the float tensors their QuantizeLinear -> DequantizeLinear pairs stood for.

    onnxruntime.quantization quantises a weighted node's output whatever reads it: the classifier's
    logits would reach the float softmax in 8-bit steps. The pairs no longer read are removed, with
    their scales and zero points.
    """
    producers = {name: node for node in graph.node for name in node.output}
    for node in graph.node:
        if node.name not in names:
            continue
        for index, name in enumerate(node.input):
            dequantise = producers.get(name)
            if dequantise is None or dequantise.op_type != 'DequantizeLinear':
                continue
            quantise = producers.get(dequantise.input[0])
            if quantise is not None and quantise.op_type == 'QuantizeLinear':
                node.input[index] = quantise.input[0]
    while True:
        read = {name for node in graph.node for name in node.input} | {t.name for t in graph.output}
        unread = [
            node
            for node in graph.node
            if node.op_type in ('QuantizeLinear', 'DequantizeLinear') and not set(node.output) & read
        ]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def quantize_int8(onnx_path: Path, store: FrameStore, calibration_frames: int) -> tuple[Path, dict[str, Any]]:
    """Static INT8 (QDQ) quantisation calibrated on training frames; accuracy of both on validation frames.

    The layers that read the input (:func:`input_layers`) and everything after the classifier's last
    weighted layer (:func:`output_layers`: the softmax) stay in float. The file must pass the node's
    own check (:func:`weld_core.model_store.check_model`), or the export fails.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info = read_model_info(onnx_path)
    calib = _spread(store, 'train', calibration_frames)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self.items, None)
            return None if frame is None else {info.input_name: info.preprocessor(*store.pair(frame))[None]}

    int8_path = onnx_path.with_name(onnx_path.stem + '.int8.onnx')
    with tempfile.TemporaryDirectory() as temp:
        prepared = Path(temp) / 'prepared.onnx'
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        kept_float = input_layers(graph) + output_layers(graph)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=kept_float,
        )
    proto = onnx.load(str(int8_path))
    _unquantise_inputs(proto.graph, output_layers(graph))
    del proto.metadata_props[:]
    for key, value in sorted({**info.metadata, 'quantization': 'int8-static-qdq'}.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(int8_path))
    try:
        check_model(int8_path)
    except WeldError as exc:
        raise ExportError(f'the INT8 file would not deploy: {exc}') from exc
    from training.evaluate import metrics_of, run_model

    val = [f for f in store.frames if f['split'] == 'val'] or store.frames
    run32, run8 = run_model(onnx_path, store, val), run_model(int8_path, store, val)
    fp32, quant = metrics_of(run32), metrics_of(run8)
    p32, p8 = run32.probabilities, run8.probabilities
    keys = ('macro_recall', 'good_fpr', 'accuracy', 'latency_ms', 'size_mb')
    report = {
        'fp32': {k: fp32[k] for k in keys},
        'int8': {k: quant[k] for k in keys},
        'macro_recall_change': quant['macro_recall'] - fp32['macro_recall'],
        # share of validation frames whose class is the same in both files
        'agreement': float(np.mean(p32.argmax(1) == p8.argmax(1))),
        'max_abs_prob_change': float(np.abs(p32 - p8).max()),
        'float_layers': kept_float,
        'calibration_frames': len(calib),
        'frames': len(val),
    }
    return int8_path, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='weld-train export', description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('-o', '--out', required=True, help='ONNX file to write')
    parser.add_argument(
        '--dataset', required=True, help='dataset folder (parity check and calibration frames)'
    )
    parser.add_argument('--version', default=None, help='model_version (default: UTC time stamp)')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument('--parity-frames', type=int, default=32)
    parser.add_argument('--int8', action='store_true', help='also write an INT8 statically quantised model')
    parser.add_argument('--calibration-frames', type=int, default=256)
    parser.add_argument(
        '--bpu',
        metavar='DIR',
        default=None,
        help='also write the RDK X5 BPU converter input (opset-11 ONNX, calibration, config.yaml) to DIR',
    )
    parser.add_argument('--bpu-frames', type=int, default=100, help='calibration frames of --bpu')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = export(
            args.checkpoint,
            args.out,
            args.dataset,
            version=args.version,
            tolerance=args.tolerance,
            parity_frames=args.parity_frames,
            int8=args.int8,
            calibration_frames=args.calibration_frames,
            bpu_dir=args.bpu,
            bpu_frames=args.bpu_frames,
        )
    except WeldError as exc:
        print(f'export: {exc}', file=sys.stderr)
        return 2
    print(
        f'wrote {result.path} (opset {OPSET}); parity: max |dp| {result.parity_max_abs_diff:.2e} over '
        f'{result.parity_frames} validation frames'
    )
    if result.int8_path:
        print(f'wrote {result.int8_path}; {json.dumps(result.int8_report)}')
    if result.bpu:
        print(
            f'wrote {result.bpu.folder}: {result.bpu.onnx_path.name} (opset 11), '
            f'{result.bpu.calibration_files} calibration frames, {result.bpu.config_path.name}; '
            f'max |dp| {result.bpu.max_abs_diff:.2e} '
            'against the exported model (the vendor toolchain was not run)'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
