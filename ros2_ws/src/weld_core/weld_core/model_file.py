"""ONNX model files: the metadata contract, loading with ONNX Runtime and validation.

Only ``onnxruntime`` is needed (the board has no ``onnx`` package). A model file carries
everything the runtime needs in its ``metadata_props`` (see ../shared/CONTRACT.md, "Models"):
the class list, the preprocessing (:class:`weld_core.preprocess.Preprocessor`), provenance and
the validation metrics it reached. :func:`read_model_info` refuses a file whose metadata is
incomplete or disagrees with the graph's input and output shapes, with a message that names the
file, the problem and what to do.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weld_core.classes import check_class_list
from weld_core.errors import LabelError, WeldError
from weld_core.preprocess import PREPROCESS_METADATA_KEYS, PreprocessError, Preprocessor

# What the output tensor holds; the exporter appends a softmax so the runtime never guesses.
OUTPUT_PROBABILITIES = 'probabilities'

REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    'class_names',
    'model_name',
    'model_version',
    'created_at',
    'training_data',
    'validation_metrics',
    'output',
    *PREPROCESS_METADATA_KEYS,
)


class ModelError(WeldError, ValueError):
    """A model file cannot be used: missing, unreadable, or its metadata is incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    model_id: str
    class_names: tuple[str, ...]
    preprocessor: Preprocessor
    metadata: dict[str, str] = field(repr=False)
    sha256: str
    input_name: str

    @property
    def validation_metrics(self) -> dict[str, Any]:
        return dict(json.loads(self.metadata['validation_metrics']))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open('rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def make_model_id(metadata: dict[str, str], sha256: str) -> str:
    return f'{metadata["model_name"]}-{metadata["model_version"]}-{sha256[:8]}'


def open_session(path: Path, intra_op_threads: int = 0, inter_op_threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for ``path`` as the inference node runs it; ModelError if unloadable.

    ``intra_op_threads`` 0 lets ONNX Runtime take every core (desktop evaluation); the node passes
    its parameter. Idle intra-op threads do not spin: on a board whose cores the camera and labeler
    share, spinning burns CPU others need (measured: half the CPU per call, and no slower, without).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # failures are reported with the file or the pair they hit; ONNX Runtime's own log would repeat them
    options.log_severity_level = 4
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    if intra_op_threads > 0:
        options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = max(1, int(inter_op_threads))
    options.execution_mode = (
        onnxruntime.ExecutionMode.ORT_PARALLEL
        if inter_op_threads > 1
        else onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    )
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as exc:  # onnxruntime raises its own (non-exported) exception classes
        raise ModelError(
            f'{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).strip()[:300]}); '
            're-export the model with `python -m training.export`'
        ) from exc


def _dim_matches(dim: Any, expected: int) -> bool:
    """A static dim must equal ``expected``; a symbolic (str/None) dim accepts anything."""
    return not isinstance(dim, int) or dim == expected


def read_model_info(path: str | Path, session: Any | None = None) -> ModelInfo:
    """Load ``path`` with ONNX Runtime (or use ``session``), validate its metadata, return a ModelInfo."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'{path}: no such model file; put an exported .onnx file there')
    if session is None:
        session = open_session(path)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    missing = [key for key in REQUIRED_METADATA_KEYS if not metadata.get(key, '').strip()]
    if missing:
        raise ModelError(
            f'{path}: the model metadata lacks {", ".join(missing)}; this file was not made by '
            '`python -m training.export` (or by an older version): re-export it'
        )
    try:
        names = json.loads(metadata['class_names'])
        if not isinstance(names, list):
            raise TypeError('not a JSON list')
        class_names = check_class_list([str(name) for name in names])
    except (ValueError, TypeError, LabelError) as exc:
        raise ModelError(f'{path}: class_names must be a JSON list of unique names ({exc})') from exc
    try:
        metrics = json.loads(metadata['validation_metrics'])
        if not isinstance(metrics, dict):
            raise TypeError('not a JSON object')
    except (ValueError, TypeError) as exc:
        raise ModelError(f'{path}: validation_metrics must be a JSON object ({exc})') from exc
    if metadata['output'] != OUTPUT_PROBABILITIES:
        raise ModelError(
            f'{path}: output {metadata["output"]!r} is not supported (expected {OUTPUT_PROBABILITIES!r})'
        )
    try:
        preprocessor = Preprocessor.from_metadata(metadata)
    except PreprocessError as exc:
        raise ModelError(f'{path}: {exc}; re-export the model with a matching weld_core') from exc

    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(
            f'{path}: expected one input and at least one output, got {len(inputs)} and {len(outputs)}'
        )
    shape = list(inputs[0].shape)
    height, width = preprocessor.input_size
    channels = len(preprocessor.channels)
    if len(shape) != 4 or not all(
        _dim_matches(d, e) for d, e in zip(shape[1:], (channels, height, width), strict=True)
    ):
        raise ModelError(
            f'{path}: input {inputs[0].name!r} has shape {shape}, but the metadata says '
            f'[N, {channels}, {height}, {width}] ({",".join(preprocessor.channels)} at {height}x{width})'
        )
    out_shape = list(outputs[0].shape)
    if len(out_shape) != 2 or not _dim_matches(out_shape[1], len(class_names)):
        raise ModelError(
            f'{path}: output {outputs[0].name!r} has shape {out_shape}, but the metadata lists '
            f'{len(class_names)} classes'
        )
    sha256 = file_sha256(path)
    return ModelInfo(
        path=path,
        model_id=make_model_id(metadata, sha256),
        class_names=class_names,
        preprocessor=preprocessor,
        metadata=metadata,
        sha256=sha256,
        input_name=str(inputs[0].name),
    )
