"""Per-pair decision: the running model when it answers in time with a valid output, else the rules.

:meth:`InferenceEngine.classify` never raises for a decodable, registered frame pair and always
returns exactly one :class:`Decision`. The model call runs in a dedicated thread so that the budget
is enforced by the clock, not by the model: when ``model_budget_ms`` passes, the call is cancelled
through ONNX Runtime's ``RunOptions.terminate`` and the rules answer the pair at once. While a
cancelled call is still unwinding (ONNX Runtime stops at the next operator boundary), later pairs
are answered by the rules with ``fallback_reason`` saying so instead of queueing behind it.
Every pair tries the model again, so the node returns to the model as soon as it works.
"""

import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnxruntime as ort

from weld_core.preprocess import PreprocessError
from weld_inference.errors import ModelOutputError, ModelRunError
from weld_inference.model_runner import ModelRunner

SOURCE_MODEL = 'model'
SOURCE_RULES = 'rules'

# short keys of fallback_reason, for counting in /diagnostics
FALLBACK_NO_MODEL = 'no_model'
FALLBACK_BUSY = 'model_busy'
FALLBACK_BUDGET = 'over_budget'
FALLBACK_OUTPUT = 'bad_output'
FALLBACK_RUN_ERROR = 'run_error'
FALLBACK_INPUT = 'input_error'


class RuleAnswer(Protocol):
    label: str
    confidence: float
    scores: tuple[float, ...]
    measurements: dict[str, float]
    reason: str


RuleFunction = Callable[..., RuleAnswer]
ModelSource = Callable[[], tuple[ModelRunner | None, str]]


@dataclass(frozen=True)
class Decision:
    label: str
    confidence: float
    class_names: tuple[str, ...]
    scores: tuple[float, ...]
    source: str
    model_id: str
    fallback_reason: str
    fallback_kind: str = ''
    measurements: dict[str, float] = field(default_factory=dict)
    model_ms: float | None = None
    rules_ms: float | None = None


class InferenceEngine:
    """Model-or-rules for one frame pair at a time (one caller thread)."""

    def __init__(
        self,
        models: ModelSource,
        rules: RuleFunction,
        rule_class_names: Sequence[str],
        model_budget_ms: float,
    ) -> None:
        if model_budget_ms <= 0:
            raise ValueError(f'model_budget_ms must be > 0, got {model_budget_ms}')
        self._models = models
        self._rules = rules
        self.rule_class_names = tuple(rule_class_names)
        self.model_budget_ms = float(model_budget_ms)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='weld-model')
        self._pending: concurrent.futures.Future[tuple[np.ndarray, float]] | None = None
        self._pending_options = ort.RunOptions()

    def close(self) -> None:
        """Cancel a call still running (so shutdown never waits for a slow model), stop the thread."""
        if self._pending is not None and not self._pending.done():
            self._pending_options.terminate = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def classify(
        self, rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Mapping[str, float] | None = None
    ) -> Decision:
        """One answer for one registered pair; ``intrinsics`` (fx, fy, cx, cy in pixels) go to the rules."""
        runner, unavailable = self._models()
        if runner is None:
            return self.rules_decision(rgb, depth_m, intrinsics, FALLBACK_NO_MODEL, unavailable)
        if self._pending is not None and not self._pending.done():
            return self.rules_decision(
                rgb,
                depth_m,
                intrinsics,
                FALLBACK_BUSY,
                f'model {runner.model_id} is still finishing a call that exceeded the '
                f'{self.model_budget_ms:g} ms budget',
            )
        run_options = ort.RunOptions()
        future = self._pool.submit(self._timed_infer, runner, rgb, depth_m, run_options)
        self._pending, self._pending_options = future, run_options
        try:
            probabilities, model_ms = future.result(timeout=self.model_budget_ms / 1000.0)
        except concurrent.futures.TimeoutError:
            run_options.terminate = True
            return self.rules_decision(
                rgb,
                depth_m,
                intrinsics,
                FALLBACK_BUDGET,
                f'model {runner.model_id} exceeded its {self.model_budget_ms:g} ms budget',
            )
        except ModelOutputError as exc:
            return self.rules_decision(
                rgb, depth_m, intrinsics, FALLBACK_OUTPUT, f'model {runner.model_id}: {exc}'
            )
        except ModelRunError as exc:
            return self.rules_decision(
                rgb, depth_m, intrinsics, FALLBACK_RUN_ERROR, f'model {runner.model_id} failed: {exc}'
            )
        except PreprocessError as exc:
            return self.rules_decision(
                rgb, depth_m, intrinsics, FALLBACK_INPUT, f'preprocessing for {runner.model_id} failed: {exc}'
            )
        except Exception as exc:  # a model must never take the node down; the rules answer instead
            return self.rules_decision(
                rgb,
                depth_m,
                intrinsics,
                FALLBACK_RUN_ERROR,
                f'model {runner.model_id} raised {type(exc).__name__}: {exc}',
            )
        index = int(np.argmax(probabilities))
        return Decision(
            label=runner.class_names[index],
            confidence=float(probabilities[index]),
            class_names=runner.class_names,
            scores=tuple(float(p) for p in probabilities),
            source=SOURCE_MODEL,
            model_id=runner.model_id,
            fallback_reason='',
            model_ms=model_ms,
        )

    def measure(
        self, rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Mapping[str, float] | None = None
    ) -> tuple[str, dict[str, float]]:
        """The rules' label and measurements after a model answer (for the operator and the console's
        model-versus-rules review); ('', {}) if they fail."""
        try:
            answer = self._rules(rgb, depth_m, **(intrinsics or {}))
            return answer.label, dict(answer.measurements)
        except Exception:  # measurements are an extra; the pair was already answered
            return '', {}

    @staticmethod
    def _timed_infer(
        runner: ModelRunner, rgb: np.ndarray, depth_m: np.ndarray, run_options: ort.RunOptions
    ) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        probabilities = runner.infer(rgb, depth_m, run_options)
        return probabilities, (time.perf_counter() - started) * 1000.0

    def rules_decision(
        self,
        rgb: np.ndarray,
        depth_m: np.ndarray,
        intrinsics: Mapping[str, float] | None,
        kind: str,
        reason: str,
    ) -> Decision:
        """The rules' answer; if even they fail, an explicit no-decision answer (label '') says why."""
        started = time.perf_counter()
        try:
            answer = self._rules(rgb, depth_m, **(intrinsics or {}))
            scores = tuple(float(s) for s in answer.scores)
            if len(scores) != len(self.rule_class_names) or answer.label not in self.rule_class_names:
                raise ValueError(
                    f'rules answered {answer.label!r} with {len(scores)} scores '
                    f'for classes {self.rule_class_names}'
                )
        except Exception as exc:  # the pair still gets its one answer, saying that nobody could decide
            return Decision(
                label='',
                confidence=0.0,
                class_names=self.rule_class_names,
                scores=tuple(0.0 for _ in self.rule_class_names),
                source=SOURCE_RULES,
                model_id='',
                fallback_reason=f'{reason}; rules failed too: {type(exc).__name__}: {exc}',
                fallback_kind=kind,
                rules_ms=(time.perf_counter() - started) * 1000.0,
            )
        return Decision(
            label=answer.label,
            confidence=float(answer.confidence),
            class_names=self.rule_class_names,
            scores=scores,
            source=SOURCE_RULES,
            model_id='',
            fallback_reason=f'{reason}; rules: {answer.reason}' if answer.reason else reason,
            fallback_kind=kind,
            measurements=dict(answer.measurements),
            rules_ms=(time.perf_counter() - started) * 1000.0,
        )
