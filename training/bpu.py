"""The files D-Robotics' model converter needs to compile a model for the RDK X5's BPU.

    weld-train export CHECKPOINT -o models/weld.onnx --dataset data/weldsim --bpu models/weld-bpu

writes, into the ``--bpu`` folder, the input of ``hb_mapper makertbin`` (OpenExplorer's PTQ
converter; march ``bayes-e`` is the RDK X5's BPU):

- ``model.onnx``: the network at ONNX opset 11 (IR version <= 7) with a fixed 1xCxHxW input, as the
  converter takes them (opset 10 or 11, fixed 4-D inputs with N = 1). It ends at the logits: the
  softmax (and so every step after the last weighted layer) stays in float on the CPU, where an 8-bit
  softmax would give probabilities in steps of 1/255 that do not sum to 1;
- ``calibration/NNNN.bin``: training frames through the model's own preprocessing (the runtime's
  :class:`weld_core.preprocess.Preprocessor` from the exported file's metadata), float32 NCHW written
  with ``numpy.tofile``: the input is a feature map of C channels, not an image, and the converter
  reads feature-map calibration samples with ``numpy.fromfile``;
- ``config.yaml``: the converter's configuration (``model_parameters``, ``input_parameters``,
  ``calibration_parameters``, ``compiler_parameters``) filled from the model's metadata;
- ``metadata.json``: the model's metadata (class names, preprocessing), which a compiled ``.bin``
  does not carry, with ``output: logits``.

The opset-11 graph is checked against the exported model on the calibration tensors (ONNX Runtime,
softmax of its logits) before anything is reported. Nothing here runs the vendor's toolchain or a
BPU: compiling the bundle and running the ``.bin`` were not done on this machine (docs/bpu.md).
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from training.errors import ExportError
from training.module import WeldClassifier

BPU_OPSET = 11  # the converter takes opset 10 or 11 and IR version <= 7
BPU_IR_VERSION = 7
MARCH = 'bayes-e'  # the RDK X5's BPU (RDK X3: bernoulli2, RDK Ultra: bayes)
CALIBRATION_DIR = 'calibration'
OUTPUT_LOGITS = 'logits'


@dataclass
class BpuBundle:
    folder: Path
    onnx_path: Path
    config_path: Path
    calibration_files: int
    max_abs_diff: float  # softmax of the bundle's logits vs the exported model, over the calibration tensors


def converter_config(metadata: dict[str, str], input_name: str, channels: int) -> dict[str, Any]:
    """``hb_mapper makertbin`` configuration for the bundle's model, paths relative to the bundle folder."""
    height, width = (int(v) for v in metadata['input_size'].lower().split('x'))
    prefix = re.sub(r'[^A-Za-z0-9_]+', '_', f'{metadata["model_name"]}_{metadata["model_version"]}')
    return {
        'model_parameters': {
            'onnx_model': 'model.onnx',
            'march': MARCH,
            'layer_out_dump': False,
            'working_dir': 'model_output',
            'output_model_file_prefix': prefix,
        },
        'input_parameters': {
            'input_name': input_name,
            'input_shape': f'1x{channels}x{height}x{width}',
            # the preprocessed, normalised channels: a feature map, fed as float32 NCHW at run time
            'input_type_train': 'featuremap',
            'input_layout_train': 'NCHW',
            'input_type_rt': 'featuremap',
            'input_layout_rt': 'NCHW',
            'norm_type': 'no_preprocess',
        },
        'calibration_parameters': {
            'cal_data_dir': f'./{CALIBRATION_DIR}',
            'cal_data_type': 'float32',
            'calibration_type': 'default',
        },
        'compiler_parameters': {
            'compile_mode': 'latency',
            'debug': False,
            'optimize_level': 'O3',
        },
    }


def write_bpu_bundle(
    model: WeldClassifier,
    exported: Path,
    folder: Path,
    tensors: list[np.ndarray],
    tolerance: float,
) -> BpuBundle:
    """Write the bundle for ``model`` into ``folder``; ``tensors`` are preprocessed (1, C, H, W) inputs.

    ``exported`` is the model's deployable ONNX file (its metadata and its outputs are the reference).
    """
    import onnx

    from training.export import write_onnx
    from weld_core.model_file import open_session, read_model_info

    if not tensors:
        raise ExportError('no calibration frames for the BPU bundle: the dataset has no training frames')
    info = read_model_info(exported)
    metadata = {**info.metadata, 'output': OUTPUT_LOGITS, 'opset': str(BPU_OPSET)}
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / 'model.onnx'
    write_onnx(model, onnx_path, metadata, opset=BPU_OPSET, batch=1, softmax=False)
    proto = onnx.load(str(onnx_path))
    proto.ir_version = min(proto.ir_version, BPU_IR_VERSION)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))

    calibration = folder / CALIBRATION_DIR
    calibration.mkdir(exist_ok=True)
    for stale in calibration.glob('*.bin'):
        stale.unlink()
    reference = open_session(exported)
    bundle = open_session(onnx_path)
    worst = 0.0
    for index, tensor in enumerate(tensors):
        tensor = np.ascontiguousarray(tensor, dtype=np.float32)
        tensor.tofile(calibration / f'{index:04d}.bin')
        logits = bundle.run(None, {info.input_name: tensor})[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        expected = reference.run(None, {info.input_name: tensor})[0]
        worst = max(worst, float(np.abs(probabilities - expected).max()))
    if worst > tolerance:
        raise ExportError(
            f'{onnx_path}: the opset-{BPU_OPSET} graph differs from {exported.name} by {worst:.2e} '
            f'(tolerance {tolerance:.0e}) on the calibration frames; do not compile it'
        )
    config_path = folder / 'config.yaml'
    header = (
        f'# hb_mapper makertbin configuration for {info.model_id} (RDK X5, march {MARCH}), written by\n'
        '# weld-train export --bpu. Run in this folder: hb_mapper makertbin --config config.yaml\n'
        '# --model-type onnx (OpenExplorer for the RDK X5; see docs/bpu.md).\n'
    )
    config = converter_config(info.metadata, info.input_name, tensors[0].shape[1])
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    (folder / 'metadata.json').write_text(json.dumps(metadata, indent=2, sort_keys=True) + '\n')
    return BpuBundle(folder, onnx_path, config_path, len(tensors), worst)
