"""A model trained and exported by ``training`` gives the same answers in the node as in
``training.evaluate`` on the same frames: one preprocessing (weld_core.preprocess), one model file.

The chain is the real one: labelled bags (rosbags) -> ``training.convert`` -> ``training.fit`` (three
short epochs on tiny frames) -> ``training.export`` (with its parity check) -> the models folder of
an inference node in its own process, fed the dataset's frames over DDS.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.inference.harness import InferenceHarness
from tests.inference.test_node_faults import node_args
from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert
from training.data import FrameStore
from training.evaluate import evaluate_model
from training.export import export
from training.fit import fit
from training.metrics import classification_metrics
from weld_core.images import array_to_image, depth_m_to_image
from weld_core.model_file import open_session, read_model_info
from weld_core.model_store import install_model

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CLASSES = ['good', 'porosity', 'spatter', 'gap', 'undercut']


@pytest.fixture(scope='module')
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp('trained')
    bags = []
    for session in range(4):
        frames = make_frames(CLASSES * 3, seed=session + 1)
        bags.append(
            write_bag(
                root / f'bag{session}', frames, session_id=f's{session}', rgb_form='raw', depth_form='raw32'
            )
        )
    convert(bags, root / 'dataset', progress=False, workers=1)
    metrics = fit(
        [
            str(root / 'dataset'),
            '--data.input_size=[48, 64]',
            '--data.batch_size=4',
            '--model.stem_width=8',
            '--model.stage_widths=[16, 32]',
            '--trainer.max_epochs=3',
            '--threads=1',
            f'--out={root / "run"}',
        ]
    )
    exported = export(
        metrics['checkpoint'],
        root / 'export' / 'weld.onnx',
        root / 'dataset',
        version='parity',
        int8=True,
        calibration_frames=8,
    )
    assert exported.int8_path is not None
    # each in a models folder of its own, placed the way the deploy tools place them
    fp32 = install_model(exported.path, root / 'models').path
    int8 = install_model(exported.int8_path, root / 'models_int8').path
    return fp32, int8, root / 'dataset'


def test_node_answers_equal_training_evaluate(trained_model, ros_node, spawn_node) -> None:
    model_path, _int8, dataset = trained_model
    node_answers_equal_the_runtime_path(model_path, FrameStore(dataset), ros_node, spawn_node)


def test_node_runs_an_int8_export(trained_model, ros_node, spawn_node) -> None:
    """``training.export --int8`` writes a file the node takes (float softmax) and answers with."""
    _fp32, model_path, dataset = trained_model
    assert read_model_info(model_path).metadata['quantization'] == 'int8-static-qdq'
    node_answers_equal_the_runtime_path(model_path, FrameStore(dataset), ros_node, spawn_node)


def node_answers_equal_the_runtime_path(model_path: Path, store: FrameStore, ros_node, spawn_node) -> None:
    """A node on ``model_path``'s folder answers every frame of ``store`` with the model, as evaluate does."""
    frames = store.frames
    evaluated = evaluate_model(model_path, store, frames)
    info = read_model_info(model_path)

    first = store.pair(frames[0])
    harness = InferenceHarness(ros_node, *first)
    node = spawn_node(node_args(model_path.parent, model_budget_ms=5000.0), name='inference')
    harness.wait_ready(node)
    harness.wait_diag(lambda d: d.get('model_id') == info.model_id, 'the exported model to run', node)

    stamps = []
    for index, frame in enumerate(frames):
        rgb, depth = store.pair(frame)
        stamp = 300 * 1_000_000_000 + index * 50_000_000
        harness.rgb_fields, harness.depth_fields = (
            array_to_image(rgb, 'rgb8'),
            depth_m_to_image(depth, '32FC1'),
        )
        harness.send_lockstep([stamp], node)
        stamps.append(stamp)
    results = harness.exactly_one_each(stamps)
    assert {(r.source, r.model_id, r.fallback_reason) for r in results} == {('model', info.model_id, '')}
    assert all(list(r.class_names) == list(info.class_names) for r in results)

    names = list(info.class_names)
    preds = torch.tensor([names.index(r.label) for r in results])
    targets = torch.tensor([names.index(f['label']) for f in frames])
    from_node = classification_metrics(preds, targets, names)
    for key in ('frames', 'accuracy', 'macro_recall', 'per_class', 'confusion'):
        if key in evaluated:
            assert from_node[key] == evaluated[key], key

    # and frame by frame: the node's scores are the runtime path's probabilities (float32 over DDS)
    session = open_session(model_path)
    for frame, result in zip(frames, results, strict=True):
        expected = session.run(None, {info.input_name: info.preprocessor(*store.pair(frame))[None]})[0][0]
        np.testing.assert_allclose(np.asarray(result.scores), expected, rtol=1e-5, atol=1e-6)
    assert node.stop() == 0, node.output
