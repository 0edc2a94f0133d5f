"""Model files in a models folder: the checksum sidecar, the full check and atomic placement.

One home for what the inference node, the deploy tool, the console's upload and the training
release do with a model file:

- :func:`check_model` is everything the inference node checks before it runs a file: the
  ``<model>.onnx.sha256`` sidecar when there is one, ONNX Runtime can load it, its metadata is
  complete and agrees with the graph (:func:`weld_core.model_file.read_model_info`), and one
  self-test call on a neutral input gives one probability per class. A file that passes here is
  one the node will run.
- :func:`write_sidecar` writes the sidecar in ``sha256sum`` format.
- :func:`install_model` checks a file, copies it into a models folder as a hidden file, verifies
  the copy, writes the sidecar and renames the copy into place, so the node (which ignores hidden
  files) never sees half a file and a full disk leaves the folder as it was.
- :func:`select_model` makes a file the newest in its folder: the node runs the newest valid file.
"""

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from weld_core.errors import WeldError
from weld_core.files import write_atomically
from weld_core.model_file import ModelError, ModelInfo, file_sha256, open_session, read_model_info

MODEL_SUFFIX = '.onnx'
SIDECAR_SUFFIX = '.sha256'
# Exported models end in a float32 softmax; allow its rounding, refuse anything that is not a distribution.
PROBABILITY_TOLERANCE = 1e-3
# what a model file placed by these tools may be called: no folders, not hidden, no shell metacharacters
_SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,150}')


class ModelOutputError(WeldError, ValueError):
    """A model call returned something that is not one probability per class (shape, NaN, inf, range)."""


@dataclass(frozen=True)
class CheckedModel:
    """A file that passed :func:`check_model`, with the ONNX Runtime session that checked it."""

    info: ModelInfo
    session: Any
    mtime_ns: int


@dataclass(frozen=True)
class InstalledModel:
    path: Path
    sidecar: Path
    info: ModelInfo
    replaced: bool  # a file of that name was there before and is now overwritten


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: Path) -> str | None:
    """The hex digest in ``<model>.onnx.sha256`` (``sha256sum`` format accepted), None without one."""
    sidecar = sidecar_path(model_path)
    if not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding='ascii', errors='replace').strip()
    except OSError as exc:
        raise ModelError(f'{sidecar}: cannot read the checksum file ({exc})') from exc
    digest = text.split()[0].lower() if text else ''
    if len(digest) != 64 or any(c not in '0123456789abcdef' for c in digest):
        raise ModelError(
            f'{sidecar}: not a sha256 digest (write it with `sha256sum {model_path.name} > {sidecar.name}`)'
        )
    return digest


def write_sidecar(model_path: Path, digest: str | None = None) -> Path:
    """Write ``<model>.onnx.sha256`` (``sha256sum`` format) atomically; the digest computed if not given."""
    model_path = Path(model_path)
    digest = digest or file_sha256(model_path)
    sidecar = sidecar_path(model_path)
    write_atomically(sidecar, f'{digest}  {model_path.name}\n'.encode('ascii'))
    return sidecar


def check_probabilities(raw: Any, n_classes: int) -> np.ndarray:
    """A model output -> (n_classes,) float64 probabilities; ModelOutputError when it is not one."""
    scores = np.asarray(raw)
    if scores.shape not in ((1, n_classes), (n_classes,)):
        raise ModelOutputError(f'output shape {list(scores.shape)}, expected [1, {n_classes}]')
    if not np.issubdtype(scores.dtype, np.floating):
        raise ModelOutputError(f'output dtype {scores.dtype}, expected float probabilities')
    scores = scores.reshape(n_classes).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        bad = 'NaN' if np.isnan(scores).any() else 'inf'
        raise ModelOutputError(f'output contains {bad}')
    if scores.min() < -PROBABILITY_TOLERANCE or abs(scores.sum() - 1.0) > PROBABILITY_TOLERANCE:
        raise ModelOutputError(
            f'output is not a probability distribution (min {scores.min():.3g}, sum {scores.sum():.4g})'
        )
    return np.clip(scores, 0.0, 1.0)


def check_model(path: str | Path, intra_op_threads: int = 1, inter_op_threads: int = 1) -> CheckedModel:
    """Every check the inference node makes before it runs ``path``; ModelError naming the problem."""
    path = Path(path)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelError(f'{path}: cannot read the model file ({exc})') from exc
    expected = read_sidecar(path)
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise ModelError(
                f'{path}: sha256 {actual[:12]}... does not match {sidecar_path(path).name} '
                f'({expected[:12]}...): the copy is incomplete or corrupt; copy the model again'
            )
    session = open_session(path, intra_op_threads, inter_op_threads)
    info = read_model_info(path, session=session)
    if expected is not None and info.sha256 != expected:
        raise ModelError(f'{path}: the file changed while it was being checked; it is retried')
    height, width = info.preprocessor.input_size
    neutral = np.zeros((1, len(info.preprocessor.channels), height, width), np.float32)
    try:
        output = session.run(None, {info.input_name: neutral})[0]
        check_probabilities(output, len(info.class_names))
    except ModelOutputError as exc:
        raise ModelError(f'{path}: self-test call failed: {exc}') from exc
    except Exception as exc:  # onnxruntime raises its own, non-exported exception classes
        raise ModelError(
            f'{path}: self-test call failed: {type(exc).__name__}: {str(exc).strip()[:300]}'
        ) from exc
    return CheckedModel(info=info, session=session, mtime_ns=mtime_ns)


def check_model_name(name: str) -> str:
    """``name`` if it is a plain, visible ``*.onnx`` file name; ModelError otherwise."""
    if not name.endswith(MODEL_SUFFIX) or not _SAFE_NAME.fullmatch(name) or '..' in name:
        raise ModelError(
            f'{name!r} is not a model file name the models folder takes: letters, digits, ".", "_" and "-" '
            f'only, not starting with ".", ending in {MODEL_SUFFIX}'
        )
    return name


def install_model(source: str | Path, models_dir: str | Path, name: str | None = None) -> InstalledModel:
    """Check ``source`` and place it in ``models_dir`` as ``name`` (default: its own name), atomically.

    Nothing in the folder changes when the file fails :func:`check_model` or the copy fails (a full
    disk, say): the copy is written as a hidden file, fsynced and its digest compared with the
    source's before it is renamed into place. The sidecar goes in before a new file appears, so the
    node checks the file's digest the first time it sees it; a file that replaces one of the same
    name loses the old sidecar first, so the node never sees a file beside another file's digest.
    """
    source, models_dir = Path(source), Path(models_dir)
    name = check_model_name(name or source.name)
    checked = check_model(source)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f'cannot create the models folder {models_dir} ({exc})') from exc
    target = models_dir / name
    partial = models_dir / f'.{name}.part'
    try:
        with source.open('rb') as reader, partial.open('wb') as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        copied = file_sha256(partial)
        if copied != checked.info.sha256:
            raise ModelError(
                f'{partial}: the copy differs from {source} (sha256 {copied[:12]}... vs '
                f'{checked.info.sha256[:12]}...); nothing was placed'
            )
        replaced = target.exists()
        sidecar = sidecar_path(target)
        if replaced:
            sidecar.unlink(missing_ok=True)
            partial.replace(target)
            write_sidecar(target, copied)
        else:
            write_sidecar(target, copied)
            partial.replace(target)
        _fsync_folder(models_dir)
    except OSError as exc:
        raise ModelError(
            f'cannot place {source.name} in {models_dir} ({exc}); the folder is unchanged'
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    return InstalledModel(
        path=target, sidecar=sidecar, info=replace(checked.info, path=target), replaced=replaced
    )


def select_model(path: str | Path) -> Path:
    """Make ``path`` the newest ``*.onnx`` in its folder, so the inference node switches to it."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'{path}: no such model file')
    newest = time.time_ns()
    for other in path.parent.glob(f'*{MODEL_SUFFIX}'):
        with contextlib.suppress(OSError):
            newest = max(newest, other.stat().st_mtime_ns + 1_000_000)
    os.utime(path, ns=(newest, newest))
    return path


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
