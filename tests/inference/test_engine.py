"""InferenceEngine: one Decision per pair, model first, rules with a reason otherwise."""

import threading
import time
from pathlib import Path

import pytest

from tests.inference.frames import weld_frame
from tests.inference.models import write_model
from weld_core.classes import DEFAULT_CLASSES
from weld_inference.engine import (
    FALLBACK_BUDGET,
    FALLBACK_NO_MODEL,
    FALLBACK_OUTPUT,
    FALLBACK_RUN_ERROR,
    InferenceEngine,
)
from weld_inference.model_manager import ModelManager
from weld_inference.rules import RuleDetector


@pytest.fixture
def frame():
    return weld_frame(seed=3)


def engine_for(folder: Path, budget_ms: float = 500.0, rules=None) -> tuple[InferenceEngine, ModelManager]:
    manager = ModelManager(folder, on_event=lambda *_: None)
    manager.poll_once()
    return InferenceEngine(manager.current, rules or RuleDetector(), DEFAULT_CLASSES, budget_ms), manager


def test_model_answers_when_it_works(tmp_path: Path, frame) -> None:
    write_model(tmp_path / 'm.onnx', name='net', version='7')
    engine, manager = engine_for(tmp_path)
    decision = engine.classify(*frame)
    engine.close()
    runner, _ = manager.current()
    assert decision.source == 'model' and decision.model_id == runner.model_id
    assert decision.fallback_reason == '' and decision.fallback_kind == ''
    assert decision.label == decision.class_names[max(range(5), key=lambda i: decision.scores[i])]
    assert decision.confidence == max(decision.scores) and decision.model_ms is not None


def test_rules_answer_without_a_model_with_their_measurements(tmp_path: Path, frame) -> None:
    engine, _ = engine_for(tmp_path)
    decision = engine.classify(*frame, {'fx': 300.0, 'fy': 300.0, 'cx': 159.5, 'cy': 119.5})
    engine.close()
    assert decision.source == 'rules' and decision.model_id == ''
    assert decision.fallback_kind == FALLBACK_NO_MODEL and 'no model' in decision.fallback_reason
    assert decision.class_names == DEFAULT_CLASSES and decision.label in DEFAULT_CLASSES
    assert decision.measurements['bead_width_mm'] == pytest.approx(6.0, abs=1.5)


@pytest.mark.parametrize(
    ('kind', 'expected', 'text'), [('nan', FALLBACK_OUTPUT, 'NaN'), ('raising', FALLBACK_RUN_ERROR, 'Gather')]
)
def test_failing_model_calls_fall_back(tmp_path: Path, frame, kind: str, expected: str, text: str) -> None:
    write_model(tmp_path / 'm.onnx', kind)
    engine, _ = engine_for(tmp_path)
    decision = engine.classify(*frame)
    engine.close()
    assert (
        decision.source == 'rules' and decision.fallback_kind == expected and text in decision.fallback_reason
    )


def test_budget_is_enforced_by_the_clock_and_the_call_is_cancelled(tmp_path: Path, frame) -> None:
    write_model(tmp_path / 'slow.onnx', 'slow', slow_matmuls=100)
    engine, manager = engine_for(tmp_path, budget_ms=30.0)
    runner, _ = manager.current()
    started = time.perf_counter()
    runner.infer(*frame)
    full_call_s = time.perf_counter() - started
    decision = engine.classify(*frame)
    assert decision.source == 'rules' and decision.fallback_kind == FALLBACK_BUDGET
    assert 'exceeded its 30 ms budget' in decision.fallback_reason
    # the cancelled call stops at an operator boundary, long before the model would have finished
    pending = engine._pending
    deadline = time.perf_counter() + full_call_s / 2
    while not pending.done() and time.perf_counter() < deadline:
        time.sleep(0.005)
    assert pending.done(), f'the over-budget call was not cancelled (a full call takes {full_call_s:.2f} s)'
    engine.close()


def test_rules_failing_too_still_gives_one_explicit_answer(tmp_path: Path, frame) -> None:
    def broken_rules(*_args, **_kwargs):
        raise RuntimeError('sensor exploded')

    engine, _ = engine_for(tmp_path, rules=broken_rules)
    decision = engine.classify(*frame)
    engine.close()
    assert decision.label == '' and decision.confidence == 0.0 and decision.source == 'rules'
    assert decision.scores == (0.0,) * 5
    assert 'rules failed too: RuntimeError: sensor exploded' in decision.fallback_reason


def test_close_cancels_a_call_in_flight(tmp_path: Path, frame) -> None:
    write_model(tmp_path / 'slow.onnx', 'slow', slow_matmuls=400)
    engine, manager = engine_for(tmp_path, budget_ms=60000.0)
    full_call_s = manager.current()[0].load_ms / 1000.0  # loading includes one full self-test call
    worker = threading.Thread(target=engine.classify, args=frame)
    worker.start()
    time.sleep(full_call_s / 10)  # the model call is under way
    started = time.perf_counter()
    engine.close()
    worker.join(timeout=30)
    assert time.perf_counter() - started < full_call_s / 2, f'close waited for the call ({full_call_s:.2f} s)'
