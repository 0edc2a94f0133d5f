"""The models folder as the operator sees it: what runs, what else is there, what was rejected and
why; switching to another file and placing an uploaded one.

Everything that checks or places a model file is ``weld_core.model_store`` (the inference node's own
checks): an upload is validated with :func:`check_model` before it is placed with
:func:`install_model` (hidden copy, digest compared, sidecar written, atomic rename), a switch makes
the chosen file the newest with :func:`select_model`. Which model runs and which files the node
rejected come from the inference node's /diagnostics, the one place that knows.
"""

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weld_console.errors import ConflictError, ConsoleError, NotFoundError
from weld_core.model_file import ModelError, read_model_info
from weld_core.model_store import (
    MODEL_SUFFIX,
    check_model,
    check_model_name,
    install_model,
    select_model,
    sidecar_path,
)

UPLOAD_FOLDER = '.uploads'  # hidden: the inference node never looks at it


@dataclass(frozen=True)
class InferenceView:
    """What the inference node's /diagnostics say about its models."""

    model_id: str = ''
    model_file: str = ''
    rejected: tuple[tuple[str, str], ...] = ()  # (file name, reason)
    message: str = ''


class ModelsPanel:
    """Lists and changes the models folder; metadata of each file read once per (mtime, size)."""

    def __init__(self, models_dir: Path | str, max_upload_bytes: int) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self.max_upload_bytes = int(max_upload_bytes)
        self._metadata: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def listing(self, inference: InferenceView) -> dict[str, Any]:
        """The running model and every ``*.onnx`` file, newest first, with metadata or why it was refused."""
        rejected = dict(inference.rejected)
        running_name = Path(inference.model_file).name if inference.model_file else ''
        files = []
        try:
            paths = [
                p
                for p in self.models_dir.iterdir()
                if p.suffix == MODEL_SUFFIX and not p.name.startswith('.')
            ]
        except FileNotFoundError:
            paths = []
        except OSError as exc:
            raise ConsoleError(f'cannot list the models folder {self.models_dir}: {exc}') from exc
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            entry: dict[str, Any] = {
                'name': path.name,
                'size_bytes': info.st_size,
                'modified_ns': info.st_mtime_ns,
                'sidecar': sidecar_path(path).is_file(),
                'running': path.name == running_name,
                'rejected': rejected.get(path.name, ''),
            }
            if not entry['rejected']:
                entry.update(self._describe(path, (info.st_mtime_ns, info.st_size)))
            files.append(entry)
        files.sort(key=lambda entry: (-entry['modified_ns'], entry['name']))
        return {
            'models_dir': str(self.models_dir),
            'running': {'model_id': inference.model_id, 'file': running_name, 'status': inference.message},
            'files': files,
            'max_upload_bytes': self.max_upload_bytes,
        }

    def _describe(self, path: Path, fingerprint: tuple[int, int]) -> dict[str, Any]:
        with self._lock:
            cached = self._metadata.get(path.name)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        try:
            info = read_model_info(path)
            described: dict[str, Any] = {
                'model_id': info.model_id,
                'class_names': list(info.class_names),
                'validation_metrics': info.validation_metrics,
                'created_at': info.metadata.get('created_at', ''),
                'training_data': info.metadata.get('training_data', ''),
                'input': f'{",".join(info.preprocessor.channels)} at '
                f'{info.preprocessor.input_size[0]}x{info.preprocessor.input_size[1]}',
            }
        except ModelError as exc:
            described = {'problem': str(exc)}
        except Exception as exc:  # ONNX Runtime's own exception classes; the listing must still answer
            described = {'problem': f'{type(exc).__name__}: {exc}'}
        with self._lock:
            self._metadata[path.name] = (fingerprint, json.loads(json.dumps(described, default=str)))
        return described

    @contextlib.contextmanager
    def upload_file(self) -> Iterator[Path]:
        """A temporary file for an upload, in a hidden folder of the models folder; removed afterwards."""
        folder = self.models_dir / UPLOAD_FOLDER
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConsoleError(f'cannot create {folder} for the upload: {exc}') from exc
        handle, name = tempfile.mkstemp(prefix='upload-', suffix='.part', dir=folder)
        path = Path(name)
        os.close(handle)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def install(self, staged: Path, name: str) -> dict[str, Any]:
        """Validate an uploaded file and place it as ``name`` (refused when that name is taken)."""
        name = _checked_name(name)
        if (self.models_dir / name).exists():
            raise ConflictError(
                f'a model named {name} is already in {self.models_dir}: rename the file before uploading'
            )
        try:
            installed = install_model(staged, self.models_dir, name)
        except ModelError as exc:
            # the checks ran on the uploaded copy: name the file as the operator knows it
            raise ConsoleError(str(exc).replace(str(staged), name)) from exc
        return {
            'name': installed.path.name,
            'model_id': installed.info.model_id,
            'class_names': list(installed.info.class_names),
            'sha256': installed.info.sha256,
        }

    def select(self, name: str) -> dict[str, Any]:
        """Make ``name`` the newest file so the node runs it; refused when it fails the node's checks."""
        path = self.models_dir / _checked_name(name)
        if not path.is_file():
            raise NotFoundError(f'no model file {name} in {self.models_dir}')
        try:
            checked = check_model(path)
        except ModelError as exc:
            raise ConsoleError(str(exc)) from exc
        select_model(path)
        return {'name': path.name, 'model_id': checked.info.model_id}


def _checked_name(name: str) -> str:
    try:
        return check_model_name(name)
    except ModelError as exc:
        raise ConsoleError(str(exc)) from exc
