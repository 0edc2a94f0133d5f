"""The converted dataset as training inputs: every frame preprocessed once by the shared Preprocessor.

The preprocessed inputs (float16) are cached on disk beside the dataset, one file per stored bag
and preprocessing (``cache/<bag>/<key>.npy``), so a second run, another split or a new version that
adds a session preprocesses only what it has not seen. Training reads them row by row from those
files (no memory map, no copy in RAM), in the loader's worker processes when ``num_workers`` > 0:
a process's memory does not grow with the number of frame pairs. Splits come from the manifest
(grouped by session); ``val_sessions`` / ``test_sessions`` override them.
"""

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm import tqdm

from training.dataset import ARRAYS, CACHE, RowFile, load_manifest, write_rows
from training.errors import DatasetError
from weld_core.classes import check_class_list
from weld_core.preprocess import DEFAULT_NORMALIZATION, Preprocessor, expand_channels

# Preprocessor settings a config may change (``data.preprocess``); they travel in the ONNX metadata
PREPROCESS_SETTINGS = ('height_clip_mm', 'relief_sigma_px', 'relief_denoise_px')


def make_preprocessor(
    channels: Sequence[str], input_size: Sequence[int], settings: dict[str, Any] | None = None
) -> Preprocessor:
    """The Preprocessor a training run uses: these channels, size and settings, default normalisation."""
    names = expand_channels(list(channels))
    unknown = sorted(set(settings or {}) - set(PREPROCESS_SETTINGS))
    if unknown:
        raise DatasetError(
            f'unknown preprocess setting(s) {", ".join(unknown)}: use {", ".join(PREPROCESS_SETTINGS)}'
        )
    return Preprocessor(
        input_size=(int(input_size[0]), int(input_size[1])),
        channels=names,
        normalization={name: DEFAULT_NORMALIZATION[name] for name in names},
        **(settings or {}),
    )


class FrameStore:
    """The frames of a dataset version (the current one unless ``version`` names another), each
    pair read from the stored arrays on demand."""

    def __init__(self, dataset_dir: str | Path, version: str | None = None) -> None:
        self.root = Path(dataset_dir)
        self.manifest = load_manifest(self.root, version)
        self._arrays: dict[str, tuple[RowFile, RowFile]] = {}
        self._intrinsics: dict[str, dict[str, float] | None] | None = None

    @property
    def frames(self) -> list[dict[str, Any]]:
        return self.manifest['frames']

    @property
    def version(self) -> str:
        return str(self.manifest['name'])

    def pair(self, frame: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        key = frame['array']
        if key not in self._arrays:
            base = self.root / ARRAYS
            self._arrays[key] = (RowFile(base / f'{key}_rgb.npy'), RowFile(base / f'{key}_depth.npy'))
        rgb, depth = self._arrays[key]
        row = int(frame['row'])
        return rgb.row(row), depth.row(row)

    def intrinsics(self, frame: dict[str, Any]) -> dict[str, float] | None:
        """fx, fy, cx, cy (pixels of the stored arrays) of the bag ``frame`` came from; None if unknown."""
        if self._intrinsics is None:
            self._intrinsics = {bag['key']: bag.get('intrinsics') for bag in self.manifest['bags']}
        return self._intrinsics.get(frame['array'])


class CachedInputs:
    """(N, C, H, W) float16 inputs of some frames, read from the per-bag cache files on demand.

    An int index gives one (C, H, W) input; a slice or a sequence of indices a stacked batch.
    """

    def __init__(
        self, files: dict[str, RowFile], frames: Sequence[dict[str, Any]], shape: tuple[int, ...]
    ) -> None:
        self.files = files
        self.places = [(frame['array'], int(frame['row'])) for frame in frames]
        self.shape = (len(self.places), *shape)

    def __len__(self) -> int:
        return len(self.places)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            key, row = self.places[index]
            return self.files[key].row(row)
        picked = range(len(self))[index] if isinstance(index, slice) else [int(i) for i in index]
        out = np.empty((len(picked), *self.shape[1:]), np.float16)
        for slot, position in enumerate(picked):
            key, row = self.places[position]
            self.files[key].row(row, out=out[slot])
        return out


class InputDataset(Dataset):
    """(input, label) pairs of :class:`CachedInputs`: the float16 input and its class index, or for a
    list of indices the stacked batch (read straight into one array: no per-item tensors to collate)."""

    def __init__(self, inputs: CachedInputs, labels: np.ndarray) -> None:
        self.inputs, self.labels = inputs, torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(index, (int, np.integer)):
            index = [int(i) for i in index]
        return torch.from_numpy(self.inputs[index]), self.labels[index]


def batch_loader(
    dataset: Dataset, sampler: Any, batch_size: int, drop_last: bool, workers: int
) -> DataLoader:
    """Batches of ``dataset`` in ``sampler``'s order, each read as one batch (the same batches as
    ``DataLoader(batch_size=...)`` with that sampler; under DDP Lightning splits them by batch)."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=BatchSampler(sampler, batch_size, drop_last),
        num_workers=workers,
        persistent_workers=workers > 0,
    )


class WeldDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a dataset folder made by ``training.convert``.

    Args:
        dataset_dir: the dataset folder (a command's DATASET argument); its current version.
        channels: preprocessed input channels, comma-separated (``rgb`` stands for r,g,b); see
            weld_core.preprocess for the list.
        input_size: (height, width) the frames are resized to before preprocessing.
        preprocess: preprocessing settings that differ from weld_core's defaults (height_clip_mm,
            relief_sigma_px, relief_denoise_px); they travel in the model file.
        batch_size: training batch size.
        num_workers: data-loader worker processes (0: in the training process).
        val_sessions: sessions of the validation split (null: the dataset's own split).
        test_sessions: sessions of the test split (null: the dataset's own split).
    """

    def __init__(
        self,
        dataset_dir: str,
        channels: str = 'r,g,b,luma_detail,height,relief,valid',
        input_size: tuple[int, int] = (240, 320),
        preprocess: dict[str, float] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        val_sessions: list[str] | None = None,
        test_sessions: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.store = FrameStore(dataset_dir)
        self.class_names: tuple[str, ...] = check_class_list(self.store.manifest['classes'])
        self.channels: tuple[str, ...] = expand_channels(channels)
        self.preprocessor = make_preprocessor(self.channels, input_size, preprocess)
        self.splits = self._assign_splits(val_sessions, test_sessions)
        counts = {split: len(frames) for split, frames in self.splits.items()}
        if not counts.get('train'):
            raise DatasetError(f'{dataset_dir}: the split leaves no training frames ({counts})')
        self.datasets: dict[str, InputDataset] = {}

    @property
    def digest(self) -> str:
        return str(self.store.manifest['digest'])

    @property
    def version(self) -> str:
        """The frozen dataset version these data are (training.dataset)."""
        return self.store.version

    def sessions(self, split: str) -> list[str]:
        return sorted({frame['session'] for frame in self.splits[split]})

    def _assign_splits(
        self, val_sessions: list[str] | None, test_sessions: list[str] | None
    ) -> dict[str, list[dict[str, Any]]]:
        frames = self.store.frames
        sessions = {frame['session'] for frame in frames}
        for name in (val_sessions or []) + (test_sessions or []):
            if name not in sessions:
                raise DatasetError(f'session {name!r} is not in the dataset (it has {sorted(sessions)})')
        splits: dict[str, list[dict[str, Any]]] = {'train': [], 'val': [], 'test': []}
        for frame in frames:
            split = frame['split']
            if val_sessions is not None or test_sessions is not None:
                split = 'train'
                if frame['session'] in (val_sessions or []):
                    split = 'val'
                elif frame['session'] in (test_sessions or []):
                    split = 'test'
            splits[split].append(frame)
        return splits

    def _cache_file(self, key: str) -> RowFile:
        """The preprocessed inputs of stored bag ``key``, made on first use."""
        bag = next(b for b in self.store.manifest['bags'] if b['key'] == key)
        settings = json.dumps([self.preprocessor.to_metadata(), bag['digest'], bag['array_sha256']])
        path = self.store.root / CACHE / key / f'{hashlib.sha256(settings.encode()).hexdigest()[:20]}.npy'
        if not path.is_file():
            rows = len(RowFile(self.store.root / ARRAYS / f'{key}_rgb.npy'))
            frames = [{'array': key, 'row': row} for row in range(rows)]
            inputs = (
                self.preprocessor(*self.store.pair(frame))
                # a progress bar on a terminal only (disable=None), not in logs and tests
                for frame in tqdm(frames, desc=f'preprocess {key}', disable=None, file=sys.stderr)
            )
            write_rows(path, (rows, len(self.channels), *self.preprocessor.input_size), np.float16, inputs)
        return RowFile(path)

    def inputs(self, split: str) -> CachedInputs:
        """(N, C, H, W) float16 inputs of ``split``, preprocessed once per bag and read from disk."""
        frames = self.splits[split]
        files = {key: self._cache_file(key) for key in sorted({frame['array'] for frame in frames})}
        return CachedInputs(files, frames, (len(self.channels), *self.preprocessor.input_size))

    def labels(self, split: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[f['label']] for f in self.splits[split]], np.int64)

    def setup(self, stage: str | None = None) -> None:
        for split in ('train', 'val', 'test'):
            if split not in self.datasets:
                self.datasets[split] = InputDataset(self.inputs(split), self.labels(split))

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets['train']
        size = int(self.hparams['batch_size'])
        return batch_loader(
            dataset, RandomSampler(dataset), size, len(dataset) > size, self.hparams['num_workers']
        )

    def val_dataloader(self) -> DataLoader:
        """The validation split, or the test split when there is none (curves only)."""
        dataset = self.datasets['val'] if len(self.datasets['val']) else self.datasets['test']
        size = max(64, int(self.hparams['batch_size']))
        return batch_loader(dataset, SequentialSampler(dataset), size, False, self.hparams['num_workers'])
