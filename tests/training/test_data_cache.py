"""The preprocessed-input cache on disk: two fits that start on one dataset both write it without
harm, a failed write leaves nothing, and reading it does not hold the inputs in memory."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import training.data
from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert
from training.data import WeldDataModule
from training.dataset import write_rows

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
    inner: list[np.ndarray] = []
    calls: list[str] = []

    def write_while_another_fit_writes(
        path: Path, shape: tuple[int, ...], dtype: object, rows: Iterable
    ) -> None:
        calls.append(str(path))

        def rows_then_the_other_fit() -> Iterable[np.ndarray]:
            yield from rows
            if len(calls) == 1:
                # the second fit writes and renames the file while the first is still writing its own
                inner.append(second.inputs('train')[:])

        write_rows(path, shape, dtype, rows_then_the_other_fit())

    monkeypatch.setattr(training.data, 'write_rows', write_while_another_fit_writes)
    outer = first.inputs('train')[:]
    monkeypatch.setattr(training.data, 'write_rows', write_rows)
    assert len(calls) == 2 and calls[0] == calls[1]
    np.testing.assert_array_equal(outer, inner[0])
    cache = dataset / 'cache'
    assert [p.name for p in cache.rglob('*') if p.name.endswith('.tmp.npy')] == []
    np.testing.assert_array_equal(_module(dataset).inputs('train')[:], outer)


def test_a_failed_cache_write_leaves_no_file_behind(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(np, 'ascontiguousarray', disk_full)
    with pytest.raises(OSError, match='No space left'):
        _module(dataset).inputs('train')
    assert [p for p in (dataset / 'cache').rglob('*') if p.is_file()] == []


def test_the_inputs_are_the_preprocessed_frames_read_back_from_disk(dataset: Path) -> None:
    data = _module(dataset)
    inputs = data.inputs('train')
    expected = np.stack([data.preprocessor(*data.store.pair(f)) for f in data.splits['train']]).astype(
        np.float16
    )
    np.testing.assert_array_equal(inputs[:], expected)
    np.testing.assert_array_equal(inputs[1], expected[1])
    np.testing.assert_array_equal(inputs[[2, 0]], expected[[2, 0]])
    assert not isinstance(inputs[:], np.memmap) and inputs.shape == expected.shape


def test_loader_workers_read_the_same_inputs(dataset: Path) -> None:
    data = _module(dataset)
    data.setup()
    with_workers = DataLoader(data.datasets['train'], batch_size=2, num_workers=2)
    in_process = DataLoader(data.datasets['train'], batch_size=2, num_workers=0)
    for (a, la), (b, lb) in zip(with_workers, in_process, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(la, lb)
