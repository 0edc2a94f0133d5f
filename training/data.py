"""The converted dataset as tensors: every frame preprocessed once by the shared Preprocessor.

The preprocessed inputs are cached next to the dataset (keyed by the dataset digest, the frames
and the preprocessing settings), so a second run on the same data skips even the plane fits.
Splits come from the manifest (grouped by session); ``val_sessions`` / ``test_sessions`` override
them.
"""

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from training.convert import ARRAYS, MANIFEST
from training.errors import DatasetError
from weld_core.classes import check_class_list
from weld_core.preprocess import DEFAULT_NORMALIZATION, Preprocessor, expand_channels

# Preprocessor settings a config may change (``data.preprocess``); they travel in the ONNX metadata
PREPROCESS_SETTINGS = ('height_clip_mm', 'relief_sigma_px', 'relief_denoise_px', 'tophat_px')


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


def load_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise DatasetError(f'{dataset_dir}: no {MANIFEST}; make the dataset with `weld-train convert`')
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(f'{path}: not valid JSON ({exc}); convert again') from exc
    if not manifest.get('frames'):
        raise DatasetError(f'{path}: the dataset has no frames')
    return manifest


class FrameStore:
    """Lazy access to the converted arrays of a dataset (memory-mapped .npy files)."""

    def __init__(self, dataset_dir: str | Path) -> None:
        self.root = Path(dataset_dir)
        self.manifest = load_manifest(self.root)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._intrinsics: dict[str, dict[str, float] | None] | None = None

    @property
    def frames(self) -> list[dict[str, Any]]:
        return self.manifest['frames']

    def pair(self, frame: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        key = frame['array']
        if key not in self._arrays:
            base = self.root / ARRAYS
            try:
                rgb = np.load(base / f'{key}_rgb.npy', mmap_mode='r')
                depth = np.load(base / f'{key}_depth.npy', mmap_mode='r')
            except (OSError, ValueError) as exc:
                raise DatasetError(f'{base}: arrays of {key} unreadable ({exc}); convert again') from exc
            self._arrays[key] = (rgb, depth)
        rgb, depth = self._arrays[key]
        row = int(frame['row'])
        return np.asarray(rgb[row]), np.asarray(depth[row])

    def intrinsics(self, frame: dict[str, Any]) -> dict[str, float] | None:
        """fx, fy, cx, cy (pixels of the stored arrays) of the bag ``frame`` came from; None if unknown."""
        if self._intrinsics is None:
            self._intrinsics = {
                bag['key']: bag.get('intrinsics') for bag in self.manifest.get('bags', []) if 'key' in bag
            }
        return self._intrinsics.get(frame['array'])


def preprocess_frames(
    store: FrameStore, frames: Sequence[dict[str, Any]], preprocessor: Preprocessor
) -> np.ndarray:
    """(N, C, H, W) float16 inputs of ``frames`` (float16 halves the memory; inputs are O(1))."""
    out = np.empty((len(frames), len(preprocessor.channels), *preprocessor.input_size), np.float16)
    # a progress bar on a terminal only (disable=None), not in logs and tests
    for index, frame in enumerate(tqdm(frames, desc='preprocess', disable=None, file=sys.stderr)):
        out[index] = preprocessor(*store.pair(frame))
    return out


class WeldDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a dataset folder made by ``training.convert``.

    Args:
        dataset_dir: the dataset folder (a command's DATASET argument).
        channels: preprocessed input channels, comma-separated (``rgb`` stands for r,g,b); see
            weld_core.preprocess for the list.
        input_size: (height, width) the frames are resized to before preprocessing.
        preprocess: preprocessing settings that differ from weld_core's defaults (height_clip_mm,
            relief_sigma_px, relief_denoise_px, tophat_px); they travel in the model file.
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
        self.tensors: dict[str, TensorDataset] = {}

    @property
    def digest(self) -> str:
        return str(self.store.manifest['digest'])

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

    def _cache_path(self, split: str) -> Path:
        key = json.dumps(
            [
                self.digest,
                split,
                self.preprocessor.to_metadata(),
                [(f['array'], f['row']) for f in self.splits[split]],
            ],
            sort_keys=True,
        )
        name = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.store.root / 'cache' / f'{split}-{name}.npy'

    def inputs(self, split: str) -> np.ndarray:
        """(N, C, H, W) float16 inputs of ``split``, preprocessed once and cached beside the dataset."""
        if split in self.tensors:  # set up already: the arrays the loaders use, not a second read
            return self.tensors[split].tensors[0].numpy()
        frames = self.splits[split]
        if not frames:
            return np.empty((0, len(self.channels), *self.preprocessor.input_size), np.float16)
        path = self._cache_path(split)
        if path.is_file():
            return np.load(path)
        array = preprocess_frames(self.store, frames, self.preprocessor)
        path.parent.mkdir(exist_ok=True)
        # a temporary file of this call's own: two fits starting on one dataset both write the
        # cache, and each must rename only its own file
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f'{path.stem}.', suffix='.tmp.npy')
        try:
            with os.fdopen(handle, 'wb') as stream:
                np.save(stream, array)
            Path(temp).replace(path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)  # a full disk leaves no half-written file behind
            raise
        return array

    def labels(self, split: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[f['label']] for f in self.splits[split]], np.int64)

    def setup(self, stage: str | None = None) -> None:
        for split in ('train', 'val', 'test'):
            if split not in self.tensors:
                self.tensors[split] = TensorDataset(
                    torch.from_numpy(self.inputs(split)), torch.from_numpy(self.labels(split))
                )

    def train_dataloader(self) -> DataLoader:
        dataset = self.tensors['train']
        return DataLoader(
            dataset,
            batch_size=self.hparams['batch_size'],
            shuffle=True,
            num_workers=self.hparams['num_workers'],
            drop_last=len(dataset) > self.hparams['batch_size'],
        )

    def val_dataloader(self) -> DataLoader:
        """The validation split, or the test split when there is none (curves only)."""
        return DataLoader(
            self.tensors['val'] if len(self.tensors['val']) else self.tensors['test'],
            batch_size=max(64, self.hparams['batch_size']),
            num_workers=self.hparams['num_workers'],
        )
