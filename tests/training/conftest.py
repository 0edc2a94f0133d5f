"""Fixtures of the training tests: tiny labelled sessions written as real bags, converted."""

from pathlib import Path

import pytest

from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert

CLASSES = ['good', 'porosity', 'spatter', 'gap', 'undercut']


def tiny_bags(folder: Path, sessions: int = 3) -> list[Path]:
    """``sessions`` labeler-style bags of two frames per class each (48x64, learnable defects)."""
    return [
        write_bag(folder / f'bag{index}', make_frames(CLASSES * 2, seed=index), session_id=f's{index}')
        for index in range(sessions)
    ]


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Three sessions of ten frames: one each for training, validation and test."""
    convert(
        tiny_bags(tmp_path), tmp_path / 'ds', progress=False, workers=1, val_fraction=0.34, test_fraction=0.34
    )
    return tmp_path / 'ds'


def tiny_args() -> list[str]:
    """A recipe of two CPU epochs at 24x32 with a small net."""
    return [
        '--data.input_size=[24, 32]',
        '--data.batch_size=8',
        '--model.train_crop=null',
        '--model.stage_widths=[16, 32]',
        '--trainer.max_epochs=2',
        '--threads=1',
    ]
