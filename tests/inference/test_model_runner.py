"""ModelRunner: validation before use and checks on every output (real ONNX Runtime sessions)."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.inference.frames import weld_frame
from tests.inference.models import build_model, model_metadata, write_model
from weld_core.model_file import read_model_info
from weld_inference.errors import ModelOutputError, ModelRejectedError, ModelRunError
from weld_inference.model_runner import ModelRunner, check_probabilities


def test_valid_model_gives_probabilities_with_its_own_preprocessing(tmp_path: Path) -> None:
    path = write_model(tmp_path / 'm.onnx', name='weldnet', version='4')
    runner = ModelRunner.load(path, intra_op_threads=1, inter_op_threads=1)
    info = read_model_info(path)
    assert runner.model_id == info.model_id and runner.model_id.startswith('weldnet-4-')
    assert runner.class_names == ('good', 'porosity', 'spatter', 'gap', 'undercut')
    rgb, depth = weld_frame()
    probabilities = runner.infer(rgb, depth)
    assert probabilities.shape == (5,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    # the same numbers as running the file directly on the shared preprocessing's tensor
    direct = runner.session.run(None, {info.input_name: info.preprocessor(rgb, depth)[None]})[0][0]
    np.testing.assert_allclose(probabilities, direct, rtol=1e-6)


def test_sidecar_checksum_is_enforced(tmp_path: Path) -> None:
    path = write_model(tmp_path / 'm.onnx')
    sidecar = tmp_path / 'm.onnx.sha256'
    sidecar.write_text(hashlib.sha256(path.read_bytes()).hexdigest() + '  m.onnx\n')
    ModelRunner.load(path)
    sidecar.write_text('f' * 64 + '\n')
    with pytest.raises(ModelRejectedError, match='does not match'):
        ModelRunner.load(path)
    sidecar.write_text('not a digest\n')
    with pytest.raises(ModelRejectedError, match='not a sha256 digest'):
        ModelRunner.load(path)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'graph_input_size': (32, 32)}, 'has shape'),
        ({'graph_classes': 3}, '5 classes'),
        ({'metadata': {**model_metadata('x', '1'), 'output': 'logits'}}, 'not supported'),
        ({'metadata': {**model_metadata('x', '1'), 'class_names': '"good"'}}, 'JSON list'),
    ],
)
def test_inconsistent_models_are_rejected(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = tmp_path / 'bad.onnx'
    path.write_bytes(build_model(**kwargs))
    with pytest.raises(ModelRejectedError, match=match):
        ModelRunner.load(path)


def test_unloadable_files_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / 'bad.onnx'
    path.write_bytes(b'\x00' * 100)
    with pytest.raises(ModelRejectedError, match='cannot load'):
        ModelRunner.load(path)
    with pytest.raises(ModelRejectedError, match='cannot read'):
        ModelRunner.load(tmp_path / 'missing.onnx')


def test_models_that_fail_on_real_frames_pass_the_self_test_and_fail_per_call(tmp_path: Path) -> None:
    rgb, depth = weld_frame()
    nan = ModelRunner.load(write_model(tmp_path / 'nan.onnx', 'nan'))
    with pytest.raises(ModelOutputError, match='NaN'):
        nan.infer(rgb, depth)
    raising = ModelRunner.load(write_model(tmp_path / 'raising.onnx', 'raising'))
    with pytest.raises(ModelRunError, match='Gather'):
        raising.infer(rgb, depth)


def test_check_probabilities() -> None:
    good = check_probabilities(np.array([[0.2, 0.8]], np.float32), 2)
    np.testing.assert_allclose(good, [0.2, 0.8], rtol=1e-6)
    for raw, match in [
        (np.array([[0.2, 0.3, 0.5]], np.float32), 'shape'),
        (np.array([[np.nan, 1.0]], np.float32), 'NaN'),
        (np.array([[np.inf, 0.0]], np.float32), 'inf'),
        (np.array([[0.7, 0.7]], np.float32), 'probability distribution'),
        (np.array([[1.5, -0.5]], np.float32), 'probability distribution'),
        (np.array([[0, 1]], np.int64), 'dtype'),
    ]:
        with pytest.raises(ModelOutputError, match=match):
            check_probabilities(raw, 2)
