"""``training.evaluate --rules``: the board's rule-based fallback as a column beside the models.

Simulator frames go through a real bag (lossless forms, so the arrays are the rendered ones) and
``training.convert``; the rules' column must be what the detector says on those frames with the
bag's own camera intrinsics.
"""

from pathlib import Path

import numpy as np
import pytest

from tests.training.bagmaker import Frame, write_bag
from training.convert import convert
from training.errors import DatasetError
from training.evaluate import RULES, evaluate, format_table, main
from weld_core.classes import DEFAULT_CLASSES
from weld_inference.rules import RuleDetector

sim = pytest.importorskip('weld_camera.sim', reason='the simulator (weld_camera.sim) is not installed')

# half the detector's default camera (300 px at 320 wide): it changes the rules' answer on 3 of
# these 10 frames, so a column that ignored the bag's CameraInfo would not match
FX = 150.0


@pytest.fixture(scope='module')
def sim_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Frame]]:
    root = tmp_path_factory.mktemp('rules')
    simulator = sim.WeldSimulator(sim.SimConfig(width=320, height=240, seed=5))
    frames = []
    for index in range(10):
        rendered = simulator.render(index=index, label=DEFAULT_CLASSES[index % len(DEFAULT_CLASSES)])
        frames.append(
            Frame(1_800_000_000_000_000_000 + index * 10**8, rendered.rgb, rendered.depth_m, rendered.label)
        )
    write_bag(root / 'bag', frames, session_id='s1', rgb_form='raw', depth_form='raw32', fx=FX)
    convert([root / 'bag'], root / 'ds', progress=False, workers=1)
    return root / 'ds', frames


@pytest.mark.slow
def test_rules_column_is_the_detector_on_the_same_frames(sim_dataset: tuple[Path, list[Frame]]) -> None:
    dataset, frames = sim_dataset
    (row,) = evaluate([], dataset, split='all', rules=True)
    detector = RuleDetector(class_names=DEFAULT_CLASSES)
    said = [detector(f.rgb, f.depth_m, fx=FX, fy=FX, cx=160.0, cy=120.0).label for f in frames]
    truth = [f.label for f in frames]

    def recalls(labels: list[str]) -> dict[str, float]:
        pairs = list(zip(labels, truth, strict=True))
        return {name: float(np.mean([s == name for s, t in pairs if t == name])) for name in DEFAULT_CLASSES}

    # the frames tell the two cameras apart
    assert recalls(said) != recalls([detector(f.rgb, f.depth_m).label for f in frames])
    assert row['model'] == RULES and row['frames'] == len(frames)
    assert row['accuracy'] == pytest.approx(np.mean([s == t for s, t in zip(said, truth, strict=True)]))
    assert {name: row['per_class'][name]['recall'] for name in DEFAULT_CLASSES} == pytest.approx(
        recalls(said)
    )
    assert row['latency_ms'] > 0 and 'default camera' not in row['input']
    table = format_table([row])
    assert 'rules' in table.splitlines()[0] and 'macro-recall' in table


def test_sessions_pick_frames_whatever_their_split(sim_dataset: tuple[Path, list[Frame]]) -> None:
    dataset, frames = sim_dataset
    (row,) = evaluate([], dataset, split='val', rules=True, sessions=['s1'])
    assert row['frames'] == len(frames)  # one session: every frame, though the split put it elsewhere
    with pytest.raises(DatasetError, match='no session s9'):
        evaluate([], dataset, rules=True, sessions=['s9'])


def test_nothing_to_evaluate_is_refused(
    sim_dataset: tuple[Path, list[Frame]], capsys: pytest.CaptureFixture
) -> None:
    dataset, _ = sim_dataset
    with pytest.raises(DatasetError, match='nothing to evaluate'):
        evaluate([], dataset, split='all')
    assert main(['--dataset', str(dataset), '--split', 'all']) == 2
    assert 'nothing to evaluate' in capsys.readouterr().err
