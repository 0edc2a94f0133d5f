"""Small ONNX models for the inference tests, built with the onnx package (no torch, fast).

Each carries the real metadata of an exported weldvision model (weld_core.model_file keys, the
Preprocessor's settings), so the node validates and preprocesses them exactly as a trained model.
The faulty ones are faulty in the graph, not by a hook in the code under test:
``nan`` gives NaN for any non-zero input, ``raising`` makes ONNX Runtime's Gather fail on any non-zero
input (both pass the all-zero self-test at load time, as a model that breaks only on real frames
would), ``slow`` runs a chain of 512x512 matmuls that depends on the input.
"""

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from weld_core.classes import DEFAULT_CLASSES
from weld_core.model_file import OUTPUT_PROBABILITIES, REQUIRED_METADATA_KEYS
from weld_core.preprocess import Preprocessor

INPUT_SIZE = (48, 64)
OPSET = 17


def model_metadata(
    name: str,
    version: str,
    class_names: tuple[str, ...] = DEFAULT_CLASSES,
    preprocessor: Preprocessor | None = None,
) -> dict[str, str]:
    metadata = {
        'class_names': json.dumps(list(class_names)),
        'model_name': name,
        'model_version': version,
        'created_at': '2026-11-27T12:00:00Z',
        'training_data': 'sha256:' + '0' * 64,
        'validation_metrics': json.dumps({'val/macro_recall': 0.5}),
        'output': OUTPUT_PROBABILITIES,
        **(preprocessor or Preprocessor(input_size=INPUT_SIZE)).to_metadata(),
    }
    missing = set(REQUIRED_METADATA_KEYS) - set(metadata)
    if missing:
        raise RuntimeError(f'test models lack metadata keys {missing}: update tests/inference/models.py')
    return metadata


def _classifier_nodes(channels: int, n_classes: int, seed: int, scale: float = 1.0) -> tuple[list, list]:
    """x -> GlobalAveragePool -> Flatten -> Gemm -> Softmax = 'probs' (``scale`` near 0: always unsure)."""
    rng = np.random.default_rng(seed)
    weights = (scale * rng.normal(0.0, 1.0, (channels, n_classes))).astype(np.float32)
    bias = (scale * rng.normal(0.0, 0.5, (n_classes,))).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, 'W'), numpy_helper.from_array(bias, 'B')]
    nodes = [
        helper.make_node('GlobalAveragePool', ['x'], ['pooled']),
        helper.make_node('Flatten', ['pooled'], ['flat'], axis=1),
        helper.make_node('Gemm', ['flat', 'W', 'B'], ['logits']),
        helper.make_node('Softmax', ['logits'], ['probs'], axis=1),
    ]
    return nodes, initializers


def build_model(
    kind: str = 'valid',
    name: str = 'testnet',
    version: str = '1',
    seed: int = 0,
    graph_input_size: tuple[int, int] = INPUT_SIZE,
    graph_classes: int | None = None,
    metadata: dict[str, str] | None = None,
    slow_matmuls: int = 60,
    weight_scale: float = 1.0,
) -> bytes:
    """An ONNX model (bytes) of the given ``kind``: valid, nan, raising, slow; ``weight_scale`` 0.01
    makes a valid model whose answers are all close calls (top-2 margin near 0)."""
    meta = metadata if metadata is not None else model_metadata(name, version)
    channels = len(Preprocessor.from_metadata(meta).channels) if 'input_channels' in meta else 6
    n_classes = (
        graph_classes if graph_classes is not None else len(json.loads(meta.get('class_names', '[1]')))
    )
    nodes, initializers = _classifier_nodes(channels, n_classes, seed, weight_scale)
    output = 'probs'
    if kind == 'nan':
        nodes += [
            helper.make_node('Abs', ['x'], ['absx']),
            helper.make_node('ReduceMax', ['absx'], ['peak'], keepdims=0),
            helper.make_node('Neg', ['peak'], ['negpeak']),
            helper.make_node('Sqrt', ['negpeak'], ['poison']),
            helper.make_node('Add', ['probs', 'poison'], ['out']),
        ]
        output = 'out'
    elif kind == 'raising':
        initializers += [
            numpy_helper.from_array(np.array([0.0], np.float32), 'table'),
            numpy_helper.from_array(np.array(1000.0, np.float32), 'scale'),
        ]
        nodes += [
            helper.make_node('Abs', ['x'], ['absx']),
            helper.make_node('ReduceMax', ['absx'], ['peak'], keepdims=0),
            helper.make_node('Mul', ['peak', 'scale'], ['scaled']),
            helper.make_node('Cast', ['scaled'], ['index'], to=TensorProto.INT64),
            helper.make_node('Gather', ['table', 'index'], ['picked'], axis=0),
            helper.make_node('Add', ['probs', 'picked'], ['out']),
        ]
        output = 'out'
    elif kind == 'slow':
        size = 512
        rng = np.random.default_rng(seed + 1)
        rotation, _ = np.linalg.qr(rng.normal(size=(size, size)))
        initializers += [
            numpy_helper.from_array(rotation.astype(np.float32), 'R'),
            numpy_helper.from_array(np.ones((size, size), np.float32), 'ones'),
            numpy_helper.from_array(np.array(0.0, np.float32), 'zero'),
        ]
        nodes += [
            helper.make_node('ReduceMean', ['x'], ['level'], keepdims=0),
            helper.make_node('Mul', ['ones', 'level'], ['m0']),
        ]
        for index in range(slow_matmuls):
            nodes.append(helper.make_node('MatMul', [f'm{index}', 'R'], [f'm{index + 1}']))
        nodes += [
            helper.make_node('ReduceMean', [f'm{slow_matmuls}'], ['drift'], keepdims=0),
            helper.make_node('Mul', ['drift', 'zero'], ['nothing']),
            helper.make_node('Add', ['probs', 'nothing'], ['out']),
        ]
        output = 'out'
    elif kind != 'valid':
        raise ValueError(f'unknown test model kind {kind!r}')
    height, width = graph_input_size
    graph = helper.make_graph(
        nodes,
        f'{name}_{kind}',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['N', channels, height, width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ['N', n_classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_model(path: Path, kind: str = 'valid', **kwargs: object) -> Path:
    """Write atomically (hidden temp file, then rename) as an operator's deploy script should."""
    data = build_model(kind, **kwargs)  # type: ignore[arg-type]
    temporary = path.with_name('.' + path.name + '.part')
    temporary.write_bytes(data)
    temporary.replace(path)
    return path
