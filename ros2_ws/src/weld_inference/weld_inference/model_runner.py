"""One validated ONNX Runtime session of a weld model: preprocessing, the call and output checks.

Everything the runner needs comes from the model file (weld_core.model_file / weld_core.preprocess);
it holds no constants about a model. :meth:`ModelRunner.load` refuses a file before it is used with
the checks of :func:`weld_core.model_store.check_model` (checksum sidecar ``<model>.onnx.sha256`` when
there is one, loadable by ONNX Runtime, metadata complete and consistent with the graph, one
self-test call on a neutral input that must give one finite probability per class), the same checks
the deploy tool and the console's upload make before they place a file.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from weld_core.model_file import ModelError, ModelInfo
from weld_core.model_store import ModelOutputError, check_model, check_probabilities
from weld_inference.errors import ModelRejectedError, ModelRunError

__all__ = ['ModelOutputError', 'ModelRunner', 'check_probabilities']


class ModelRunner:
    """A loaded model; :meth:`infer` may be called from one thread at a time."""

    def __init__(self, info: ModelInfo, session: Any, load_ms: float, mtime_ns: int) -> None:
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
        """Load and check ``path``; ModelRejectedError naming the file and the problem otherwise."""
        started = time.perf_counter()
        try:
            checked = check_model(path, max(1, int(intra_op_threads)), max(1, int(inter_op_threads)))
        except ModelError as exc:
            raise ModelRejectedError(str(exc)) from exc
        runner = cls(checked.info, checked.session, load_ms=0.0, mtime_ns=checked.mtime_ns)
        runner.load_ms = (time.perf_counter() - started) * 1000.0
        return runner

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
