"""One validated ONNX Runtime session of a weld model: preprocessing, the call and output checks.

Everything the runner needs comes from the model file (weld_core.model_file / weld_core.preprocess);
it holds no constants about a model. :meth:`ModelRunner.load` refuses a file before it is used:
checksum sidecar (``<model>.onnx.sha256``, optional), loadable by ONNX Runtime, metadata complete
and consistent with the graph, and one self-test call on a neutral input that must give one finite
probability per class.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from weld_core.model_file import ModelError, ModelInfo, file_sha256, read_model_info
from weld_inference.errors import ModelOutputError, ModelRejectedError, ModelRunError

SIDECAR_SUFFIX = '.sha256'
# Exported models end in a float32 softmax; allow its rounding, refuse anything that is not a distribution.
PROBABILITY_TOLERANCE = 1e-3


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: Path) -> str | None:
    """The hex digest in ``<model>.onnx.sha256`` (``sha256sum`` format accepted), None without one."""
    sidecar = sidecar_path(model_path)
    if not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding='ascii', errors='replace').strip()
    except OSError as exc:
        raise ModelRejectedError(f'{sidecar}: cannot read the checksum file ({exc})') from exc
    digest = text.split()[0].lower() if text else ''
    if len(digest) != 64 or any(c not in '0123456789abcdef' for c in digest):
        raise ModelRejectedError(
            f'{sidecar}: not a sha256 digest (write it with `sha256sum {model_path.name} > {sidecar.name}`)'
        )
    return digest


def check_probabilities(raw: Any, n_classes: int) -> np.ndarray:
    """A model output -> (n_classes,) float64 probabilities; ModelOutputError when it is not one."""
    scores = np.asarray(raw)
    if scores.shape not in ((1, n_classes), (n_classes,)):
        raise ModelOutputError(f'output shape {list(scores.shape)}, expected [1, {n_classes}]')
    if not np.issubdtype(scores.dtype, np.floating):
        raise ModelOutputError(f'output dtype {scores.dtype}, expected float probabilities')
    scores = scores.reshape(n_classes).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        bad = 'NaN' if np.isnan(scores).any() else 'inf'
        raise ModelOutputError(f'output contains {bad}')
    if scores.min() < -PROBABILITY_TOLERANCE or abs(scores.sum() - 1.0) > PROBABILITY_TOLERANCE:
        raise ModelOutputError(
            f'output is not a probability distribution (min {scores.min():.3g}, sum {scores.sum():.4g})'
        )
    return np.clip(scores, 0.0, 1.0)


class ModelRunner:
    """A loaded model; :meth:`infer` may be called from one thread at a time."""

    def __init__(self, info: ModelInfo, session: ort.InferenceSession, load_ms: float, mtime_ns: int) -> None:
        self.info = info
        self.session = session
        self.load_ms = load_ms
        self.mtime_ns = mtime_ns
        self.output_name = str(session.get_outputs()[0].name)

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def path(self) -> Path:
        return self.info.path

    @classmethod
    def load(cls, path: str | Path, intra_op_threads: int = 1, inter_op_threads: int = 1) -> 'ModelRunner':
        """Load and validate ``path``; ModelRejectedError naming the file and the problem otherwise."""
        path = Path(path)
        started = time.perf_counter()
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError as exc:
            raise ModelRejectedError(f'{path}: cannot read the model file ({exc})') from exc
        expected = read_sidecar(path)
        if expected is not None:
            actual = file_sha256(path)
            if actual != expected:
                raise ModelRejectedError(
                    f'{path}: sha256 {actual[:12]}... does not match {sidecar_path(path).name} '
                    f'({expected[:12]}...): the copy is incomplete or corrupt; copy the model again'
                )
        options = ort.SessionOptions()
        # 0 would let ONNX Runtime take every core of the board; the node's parameters decide instead.
        # failures are reported by the node with the pair they hit; the ORT log line would repeat them
        options.log_severity_level = 4
        # idle intra-op threads spin by default: on a board whose cores the camera and labeler share, that
        # burns CPU others need (measured here: half the CPU per call, and no slower, without spinning)
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        options.intra_op_num_threads = max(1, int(intra_op_threads))
        options.inter_op_num_threads = max(1, int(inter_op_threads))
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        try:
            session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        except Exception as exc:  # onnxruntime raises its own, non-exported exception classes
            raise ModelRejectedError(
                f'{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).strip()[:300]}); '
                're-export it with `python -m training.export`'
            ) from exc
        try:
            info = read_model_info(path, session=session)
        except ModelError as exc:
            raise ModelRejectedError(str(exc)) from exc
        if expected is not None and info.sha256 != expected:
            raise ModelRejectedError(f'{path}: the file changed while it was being checked; it is retried')
        runner = cls(info, session, load_ms=0.0, mtime_ns=mtime_ns)
        runner.self_test()
        runner.load_ms = (time.perf_counter() - started) * 1000.0
        return runner

    def self_test(self) -> None:
        """One call on an all-zero input: a model that cannot answer it is refused before it is used."""
        height, width = self.info.preprocessor.input_size
        channels = len(self.info.preprocessor.channels)
        x = np.zeros((1, channels, height, width), np.float32)
        try:
            self.run_tensor(x)
        except (ModelOutputError, ModelRunError) as exc:
            raise ModelRejectedError(f'{self.path}: self-test call failed: {exc}') from exc

    def preprocess(self, rgb: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """The model's own preprocessing (from its metadata) -> (1, C, H, W) float32."""
        return self.info.preprocessor(rgb, depth_m)[None]

    def run_tensor(self, x: np.ndarray, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """One ONNX Runtime call -> checked (n_classes,) probabilities."""
        try:
            outputs = self.session.run([self.output_name], {self.info.input_name: x}, run_options)
        except Exception as exc:  # onnxruntime raises its own, non-exported exception classes
            raise ModelRunError(f'{type(exc).__name__}: {str(exc).strip()[:300]}') from exc
        return check_probabilities(outputs[0], len(self.class_names))

    def infer(
        self, rgb: np.ndarray, depth_m: np.ndarray, run_options: ort.RunOptions | None = None
    ) -> np.ndarray:
        return self.run_tensor(self.preprocess(rgb, depth_m), run_options)
