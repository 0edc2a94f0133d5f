"""One models folder as a deploy target, with one step of rollback (ROS-free; the board runs it too).

What the deploy tool does to a folder, in the order that keeps the running node safe:

- :func:`place` checks the model with :func:`weld_core.model_store.check_model` (every check the
  inference node makes) before anything changes, keeps a copy of the model that runs now, places
  the new file with :func:`~weld_core.model_store.install_model` (hidden copy, digest verified,
  sidecar, atomic rename) and makes it the newest file, so the node switches to it.
- :func:`rollback` puts the kept model back the same way and takes the deployed one out of the
  folder (kept in turn, so a second rollback undoes the first).
- :func:`receive` takes a model arriving on a stream (an ssh target's stdin) into a hidden file and
  refuses it unless its sha256 is the one the sender announced.

The record lives in the folder's hidden ``.weld-deploy/`` (the node ignores hidden entries):
``state.json`` names the current and the previous model, ``previous/`` holds the kept copy with its
sidecar (``staging/`` while a change is under way), ``incoming/`` models arriving over ssh.
"""

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from weld_core.files import write_atomically
from weld_core.model_file import ModelError, file_sha256
from weld_core.model_store import (
    MODEL_SUFFIX,
    check_model,
    check_model_name,
    install_model,
    select_model,
    sidecar_path,
)

RECORD_DIR = '.weld-deploy'
STATE_FILE = 'state.json'


class DeployError(ModelError):
    """A deploy or rollback that could not be done; the folder is as it was."""


@dataclass(frozen=True)
class ModelRef:
    """A model file in a models folder: its name, digest and the model_id the node reports for it."""

    name: str
    sha256: str
    model_id: str


@dataclass(frozen=True)
class Change:
    """What a deploy or rollback did to one folder: the model that runs now and the one before."""

    models_dir: Path
    current: ModelRef | None  # None: no model of ours runs (the rules answer, or an older file does)
    previous: ModelRef | None
    unchanged: bool = False  # the model was already the running one


def models_newest_first(models_dir: Path) -> list[Path]:
    """The folder's visible ``*.onnx`` files in the order the inference node tries them."""
    try:
        entries = [p for p in models_dir.iterdir() if not p.name.startswith('.') and p.suffix == MODEL_SUFFIX]
    except FileNotFoundError:
        return []
    dated = []
    for path in entries:
        with contextlib.suppress(OSError):
            if path.is_file():
                dated.append((path.stat().st_mtime_ns, path.name, path))
    return [path for _, _, path in sorted(dated, reverse=True)]


def running_model(models_dir: Path) -> ModelRef | None:
    """The model the node runs from this folder: the newest file that passes its checks."""
    for path in models_newest_first(models_dir):
        try:
            info = check_model(path).info
        except ModelError:
            continue
        return ModelRef(path.name, info.sha256, info.model_id)
    return None


def read_state(models_dir: Path) -> dict[str, ModelRef | None] | None:
    path = models_dir / RECORD_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return {key: ModelRef(**raw[key]) if raw.get(key) else None for key in ('current', 'previous')}
    except (ValueError, TypeError, KeyError) as exc:
        raise DeployError(f'{path}: unreadable deploy record ({exc}); remove it to start afresh') from exc


def _write_state(models_dir: Path, current: ModelRef | None, previous: ModelRef | None) -> None:
    record = models_dir / RECORD_DIR
    record.mkdir(parents=True, exist_ok=True)
    state = {
        'current': asdict(current) if current else None,
        'previous': asdict(previous) if previous else None,
    }
    write_atomically(record / STATE_FILE, json.dumps(state, indent=1).encode())


def _stage(model: Path, models_dir: Path) -> None:
    """Copy ``model`` into ``.weld-deploy/staging/`` (checked, atomic, with sidecar) first of all."""
    staging = models_dir / RECORD_DIR / 'staging'
    shutil.rmtree(staging, ignore_errors=True)
    install_model(model, staging)


def _commit_staged(models_dir: Path) -> None:
    """The staged copy becomes the kept previous model (or there is none, if nothing was staged)."""
    record = models_dir / RECORD_DIR
    shutil.rmtree(record / 'previous', ignore_errors=True)
    if (record / 'staging').is_dir():
        (record / 'staging').replace(record / 'previous')


def _remove(path: Path) -> None:
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def place(model: Path, models_dir: Path, name: str | None = None) -> Change:
    """Deploy ``model`` into ``models_dir`` as ``name``; the model running before is kept for rollback."""
    model, models_dir = Path(model), Path(models_dir)
    name = check_model_name(name or model.name)
    info = check_model(model).info  # refused here, nothing in the folder has changed
    new = ModelRef(name, info.sha256, info.model_id)
    before = running_model(models_dir)
    if before == new:
        select_model(models_dir / name)
        state = read_state(models_dir) or {}
        return Change(models_dir, new, state.get('previous'), unchanged=True)
    shutil.rmtree(models_dir / RECORD_DIR / 'staging', ignore_errors=True)
    if before is not None:
        _stage(models_dir / before.name, models_dir)
    install_model(model, models_dir, name)
    select_model(models_dir / name)
    _commit_staged(models_dir)
    _write_state(models_dir, new, before)
    return Change(models_dir, new, before)


def rollback(models_dir: Path) -> Change:
    """Run the previous model again and take the deployed one out (kept, so rollback swaps the two)."""
    models_dir = Path(models_dir)
    state = read_state(models_dir)
    if state is None or (state['current'] is None and state['previous'] is None):
        raise DeployError(f'{models_dir}: no deploy recorded here, nothing to roll back')
    current, previous = state['current'], state['previous']
    record = models_dir / RECORD_DIR
    shutil.rmtree(record / 'staging', ignore_errors=True)
    deployed = models_dir / current.name if current else None
    if deployed is not None and deployed.is_file() and file_sha256(deployed) == current.sha256:
        _stage(deployed, models_dir)  # kept before anything in the folder changes
    elif current is not None:
        raise DeployError(
            f'{models_dir}: {current.name} is no longer the deployed file (removed or replaced by hand); '
            'nothing rolled back'
        )
    if previous is not None:
        kept = record / 'previous' / previous.name
        if not kept.is_file():
            raise DeployError(f'{kept}: the kept previous model is missing; nothing rolled back')
        install_model(kept, models_dir, previous.name)
        select_model(models_dir / previous.name)
    if deployed is not None and (previous is None or previous.name != deployed.name):
        _remove(deployed)
    _commit_staged(models_dir)
    _write_state(models_dir, previous, current)
    return Change(models_dir, previous, current)


def receive(stream: IO[bytes], models_dir: Path, name: str, expected_sha256: str) -> Path:
    """A model read from ``stream`` into ``.weld-deploy/incoming/``, refused unless its sha256 matches."""
    name = check_model_name(name)
    incoming = Path(models_dir) / RECORD_DIR / 'incoming'
    try:
        incoming.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployError(f'cannot create {incoming} ({exc})') from exc
    partial, target = incoming / f'.{name}.part', incoming / name
    digest = hashlib.sha256()
    try:
        with partial.open('wb') as writer:
            for block in iter(lambda: stream.read(1 << 20), b''):
                digest.update(block)
                writer.write(block)
            writer.flush()
            os.fsync(writer.fileno())
        if digest.hexdigest() != expected_sha256.lower():
            raise DeployError(
                f'{name} arrived with sha256 {digest.hexdigest()[:12]}..., not the {expected_sha256[:12]}... '
                'that was sent: the transfer was cut or corrupted; nothing was placed'
            )
        partial.replace(target)
    except OSError as exc:
        raise DeployError(f'cannot receive {name} into {incoming} ({exc}); nothing was placed') from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def change_as_dict(change: Change) -> dict[str, Any]:
    return {
        'models_dir': str(change.models_dir),
        'current': asdict(change.current) if change.current else None,
        'previous': asdict(change.previous) if change.previous else None,
        'unchanged': change.unchanged,
    }
