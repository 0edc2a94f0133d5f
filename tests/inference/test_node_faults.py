"""The inference node in its own process, fed over real DDS: every pair it is sent gets one result,
whatever happens to the model files (fault injection by files in the watched models folder).
"""

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.inference.frames import weld_frame
from tests.inference.harness import InferenceHarness, stamps_from
from tests.inference.models import build_model, model_metadata, write_model
from weld_core.images import ImageFields, array_to_image, depth_m_to_image
from weld_core.model_file import read_model_info

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def node_args(models_dir: Path, **overrides: object) -> list[str]:
    params = {
        'models_dir': str(models_dir),
        'model_poll_interval_s': 0.2,
        'diagnostics_period_s': 0.2,
        'image_qos_reliable': True,
        'max_rate_hz': 0.0,
        'ort_intra_op_num_threads': 1,
        'model_budget_ms': 150.0,
        **overrides,
    }
    args = ['-m', 'weld_inference.inference_node', '--ros-args']
    for name, value in params.items():
        args += ['-p', f'{name}:={str(value).lower() if isinstance(value, bool) else value}']
    return args


def model_id_of(path: Path) -> str:
    return read_model_info(path).model_id


def touch_newer(path: Path, seconds: float) -> None:
    stamp = time.time() + seconds
    os.utime(path, (stamp, stamp))


def test_model_files_come_and_go_without_an_unanswered_pair(ros_node, spawn_node, tmp_path: Path) -> None:
    models = tmp_path / 'models'
    models.mkdir()
    rgb, depth = weld_frame(seed=1, height=120, width=160)
    harness = InferenceHarness(ros_node, rgb, depth)
    node = spawn_node(node_args(models), name='inference')
    harness.wait_ready(node)

    # unusable pairs are not handled: counted, warned about, no result; the next good pair is answered
    bad_encoding = ImageFields(**{**array_to_image(rgb, 'rgb8').__dict__, 'encoding': 'yuv422'})
    small_depth = depth_m_to_image(depth[: depth.shape[0] // 2, : depth.shape[1] // 2], '32FC1')
    empty = ImageFields(height=0, width=0, encoding='rgb8', is_bigendian=0, step=0, data=b'')
    bad_stamps = stamps_from(100, 3)
    for stamp, pair in zip(
        bad_stamps, [(bad_encoding, None), (None, small_depth), (empty, None)], strict=True
    ):
        harness.send(stamp, *pair)
        time.sleep(0.05)
    [first] = harness.send_lockstep(stamps_from(101, 1), node)
    harness.wait_diag(lambda d: d.get('rejected_frames') == '3', 'three rejected pairs', node)
    assert harness.result_count() == 1, 'an unusable pair got a result'

    # no model at all: the rules answer, saying why
    assert first.source == 'rules' and first.model_id == ''
    assert 'no model' in first.fallback_reason
    assert list(first.class_names) == ['good', 'porosity', 'spatter', 'gap', 'undercut']
    assert first.label in first.class_names and 0 < first.confidence <= 1
    assert sum(first.scores) == pytest.approx(1.0, abs=1e-4)
    assert first.header.frame_id == 'weld_camera_optical_frame'
    assert first.latency_ms > 0
    for result in harness.send_lockstep(stamps_from(102, 3), node):
        assert result.source == 'rules' and 'no model' in result.fallback_reason

    # four broken files: each rejected with a diagnostic naming its problem; the rules keep answering
    (models / 'corrupt.onnx').write_bytes(np.random.default_rng(0).bytes(5000))
    write_model(models / 'wrong_input.onnx', graph_input_size=(32, 32))
    write_model(models / 'wrong_classes.onnx', graph_classes=4)
    incomplete = model_metadata('testnet', '9')
    del incomplete['training_data']
    write_model(models / 'no_provenance.onnx', metadata=incomplete)
    harness.wait_diag(lambda d: d.get('model_rejections') == '4', 'four rejected model files', node)
    assert 'cannot load' in harness.diag('rejected_model corrupt.onnx')
    assert 'has shape' in harness.diag('rejected_model wrong_input.onnx')
    assert '5 classes' in harness.diag('rejected_model wrong_classes.onnx')
    assert 'training_data' in harness.diag('rejected_model no_provenance.onnx')
    for result in harness.send_lockstep(stamps_from(103, 3), node):
        assert result.source == 'rules' and 'no valid model' in result.fallback_reason

    # a valid model dropped in while frames flow: switch without losing a pair
    v1 = models / 'weldnet_v1.onnx'
    v1_bytes = build_model(name='weldnet', version='1', seed=1)
    staged = tmp_path / 'v1.onnx'
    staged.write_bytes(v1_bytes)
    v1_id = model_id_of(staged)
    flow = stamps_from(110, 30)
    harness.send_flow(flow, 10.0, {8: lambda: os.replace(staged, v1)})
    _assert_switch(harness.exactly_one_each(flow), before=('rules', ''), after=('model', v1_id))

    # an invalid newer file (and a valid one whose checksum sidecar disagrees) are rejected; v1 stays
    # cut inside the graph (a cut in the trailing metadata may still parse: that is what the sidecar is for)
    (models / 'weldnet_v2_truncated.onnx').write_bytes(build_model(name='weldnet', version='2', seed=2)[:300])
    touch_newer(models / 'weldnet_v2_truncated.onnx', 5)
    write_model(models / 'weldnet_v3.onnx', name='weldnet', version='3', seed=3)
    (models / 'weldnet_v3.onnx.sha256').write_text('0' * 64 + '  weldnet_v3.onnx\n')
    touch_newer(models / 'weldnet_v3.onnx', 6)
    harness.wait_diag(
        lambda d: d.get('model_rejections') == '6', 'the truncated and mismatching models rejected', node
    )
    assert 'does not match' in harness.diag('rejected_model weldnet_v3.onnx')
    for result in harness.send_lockstep(stamps_from(120, 3), node):
        assert (result.source, result.model_id, result.fallback_reason) == ('model', v1_id, '')
        assert list(result.class_names) == ['good', 'porosity', 'spatter', 'gap', 'undercut']
        assert sum(result.scores) == pytest.approx(1.0, abs=1e-4)

    # fixing v3's sidecar makes it valid: the node picks it up (the newest valid file) while frames flow
    v3 = models / 'weldnet_v3.onnx'
    v3_id = model_id_of(v3)
    flow = stamps_from(130, 20)
    good_sidecar = hashlib.sha256(v3.read_bytes()).hexdigest() + '  weldnet_v3.onnx\n'
    harness.send_flow(flow, 10.0, {5: lambda: (models / 'weldnet_v3.onnx.sha256').write_text(good_sidecar)})
    _assert_switch(harness.exactly_one_each(flow), before=('model', v1_id), after=('model', v3_id))

    # the running file deleted: withdrawn, the next valid file (v1) runs; v1 deleted too: the rules answer
    flow = stamps_from(140, 30)
    harness.send_flow(flow, 10.0, {5: v3.unlink, 18: v1.unlink})
    results = harness.exactly_one_each(flow)
    sources = [(r.source, r.model_id) for r in results]
    assert sources[0] == ('model', v3_id) and ('model', v1_id) in sources
    assert results[-1].source == 'rules' and 'withdrawn' in results[-1].fallback_reason
    harness.wait_diag(
        lambda d: d.get('skipped') == '0' and d.get('model_withdrawals') == '1', 'no skipped pair', node
    )
    assert node.stop() == 0, node.output


def _assert_switch(results: list, before: tuple[str, str], after: tuple[str, str]) -> None:
    """Results go from ``before`` to ``after`` once, and stay there."""
    seen = [(r.source, r.model_id) for r in results]
    assert seen[0] == before, seen
    assert seen[-1] == after, seen
    switch = seen.index(after)
    assert all(s == before for s in seen[:switch]) and all(s == after for s in seen[switch:]), seen
    for result in results[switch:]:
        assert result.fallback_reason == '' if after[0] == 'model' else result.fallback_reason


def test_failing_models_are_answered_by_the_rules_and_the_model_returns(
    ros_node, spawn_node, tmp_path
) -> None:
    models = tmp_path / 'models'
    models.mkdir()
    write_model(models / 'nan.onnx', 'nan', name='nan', version='1')
    rgb, depth = weld_frame(seed=2, height=120, width=160)
    harness = InferenceHarness(ros_node, rgb, depth)
    node = spawn_node(node_args(models, model_budget_ms=60.0), name='inference')
    harness.wait_ready(node)

    for result in harness.send_lockstep(stamps_from(200, 3), node):
        assert result.source == 'rules' and 'NaN' in result.fallback_reason, result.fallback_reason

    def drop(kind: str, seconds: float) -> str:
        path = write_model(models / f'{kind}.onnx', kind, name=kind, version='1')
        touch_newer(path, seconds)
        model_id = model_id_of(path)
        harness.wait_diag(lambda d: d.get('model_id') == model_id, f'the {kind} model to load', node)
        return model_id

    drop('raising', 5)
    for result in harness.send_lockstep(stamps_from(201, 3), node):
        assert result.source == 'rules' and 'Gather' in result.fallback_reason, result.fallback_reason

    slow_id = drop('slow', 10)
    for result in harness.send_lockstep(stamps_from(202, 3), node):
        assert result.source == 'rules', result.fallback_reason
        assert f'{slow_id} exceeded its 60 ms budget' in result.fallback_reason

    valid_id = drop('valid', 15)
    for result in harness.send_lockstep(stamps_from(203, 3), node):
        assert (result.source, result.model_id, result.fallback_reason) == ('model', valid_id, '')
    # the other encodings of the contract give the same answer: bgr8 colour, 16UC1 / mono16 millimetres
    reference = harness.exactly_one_each(stamps_from(203, 1))[0]
    harness.rgb_fields = array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8')
    for offset, encoding in enumerate(('16UC1', 'mono16')):
        harness.depth_fields = depth_m_to_image(depth, encoding)
        [other] = harness.send_lockstep(stamps_from(204 + offset, 1), node)
        assert (other.source, other.model_id, other.label) == ('model', valid_id, reference.label)
        np.testing.assert_allclose(other.scores, reference.scores, atol=0.05)
    harness.wait_diag(
        lambda d: (
            d.get('fallback_bad_output') == '3'
            and d.get('fallback_run_error') == '3'
            and d.get('source_model') == '5'
            and int(d.get('model_failures', '0')) >= 9
        ),
        'the failures counted by kind',
        node,
    )
    assert node.stop() == 0, node.output
