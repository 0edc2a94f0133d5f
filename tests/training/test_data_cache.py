"""The preprocessed-input cache: two fits that start on one dataset both write it without harm."""

from pathlib import Path

import numpy as np
import pytest

from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert
from training.data import WeldDataModule

CLASSES = ['good', 'porosity', 'spatter', 'gap', 'undercut']


def _module(dataset: Path) -> WeldDataModule:
    return WeldDataModule(str(dataset), channels='rgb,height,relief,valid', input_size=(24, 32))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    bag = write_bag(tmp_path / 'bag', make_frames(CLASSES, seed=0), session_id='s0')
    convert([bag], tmp_path / 'ds', progress=False, workers=1, val_fraction=0.2, test_fraction=0.2)
    return tmp_path / 'ds'


def test_two_modules_writing_the_same_cache_at_once_both_succeed(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _module(dataset), _module(dataset)
    save = np.save
    inner: list[np.ndarray] = []
    calls: list[str] = []

    def save_while_another_fit_saves(
        target: object, array: np.ndarray, *args: object, **kwargs: object
    ) -> None:
        # the second fit writes and renames its cache file after the first has written its own and
        # before the first renames it
        calls.append('save')
        save(target, array, *args, **kwargs)
        if len(calls) == 1:
            inner.append(second.inputs('train'))

    monkeypatch.setattr(np, 'save', save_while_another_fit_saves)
    outer = first.inputs('train')
    monkeypatch.setattr(np, 'save', save)
    assert len(calls) == 2
    np.testing.assert_array_equal(outer, inner[0])
    cache = dataset / 'cache'
    assert [p.name for p in cache.iterdir() if p.name.endswith('.tmp.npy')] == []
    np.testing.assert_array_equal(_module(dataset).inputs('train'), outer)


def test_a_failed_cache_write_leaves_no_file_behind(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(np, 'save', disk_full)
    with pytest.raises(OSError, match='No space left'):
        _module(dataset).inputs('train')
    assert list((dataset / 'cache').iterdir()) == []
