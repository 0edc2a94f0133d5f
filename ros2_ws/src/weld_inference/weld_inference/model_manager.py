"""Which model the node runs: the newest valid ``*.onnx`` in the models folder, watched by polling.

Rules (documented for operators in the node's parameter descriptions and README):
- Candidates are the ``*.onnx`` files directly in the folder (hidden files ignored, so a copy can be
  written as ``.name.onnx`` or ``name.onnx.part`` and renamed into place). The newest by
  modification time that passes validation (:meth:`ModelRunner.load`) is run; ``touch`` a file to
  select it.
- A new or changed file is loaded beside the running model (in the watcher thread, not in the
  inference path) and the switch is one reference swap, so no pair waits for a load and none is lost.
- A file that fails validation is rejected with a diagnostic and remembered by (mtime, size,
  sidecar) so it is not retried every poll; the running model stays. Fixing or re-copying it
  changes its fingerprint and it is tried again.
- The folder is the truth: when the running model's file is deleted (or renamed away), the model is
  withdrawn; the node switches to the newest valid remaining model, else the rules answer with
  ``fallback_reason`` saying so. A model is never kept running from a file the operator removed.
  Overwriting the running model's file in place with an invalid one is a rejected new model: the
  newest other valid file runs, else the loaded session stays until its file is deleted or fixed.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from weld_core.model_store import MODEL_SUFFIX, sidecar_path
from weld_inference.errors import ModelRejectedError
from weld_inference.model_runner import ModelRunner

# (mtime_ns, size, sidecar mtime_ns or -1): a file whose fingerprint is unchanged is not re-validated
Fingerprint = tuple[int, int, int]
EventSink = Callable[[int, str], None]


@dataclass(frozen=True)
class ManagerCounts:
    loads: int
    rejections: int
    withdrawals: int
    polls: int


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    try:
        sidecar_mtime = sidecar_path(path).stat().st_mtime_ns
    except OSError:
        sidecar_mtime = -1
    return stat.st_mtime_ns, stat.st_size, sidecar_mtime


def _log_to_python(level: int, message: str) -> None:
    logging.getLogger('weld_inference.models').log(level, message)


class ModelManager:
    """Holds the running model and swaps it when the folder changes; thread-safe."""

    def __init__(
        self,
        models_dir: str | Path,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        on_event: EventSink = _log_to_python,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self.intra_op_threads = int(intra_op_threads)
        self.inter_op_threads = int(inter_op_threads)
        self._on_event = on_event
        self._lock = threading.Lock()
        self._active: ModelRunner | None = None
        self._active_fingerprint: Fingerprint | None = None
        self._unavailable_reason = f'no model loaded yet from {self.models_dir}'
        self._withdrawn_note = ''  # kept in the reason until a model runs again, so operators see why
        self._rejected: dict[Path, tuple[Fingerprint, str]] = {}
        self._loads = 0
        self._rejections = 0
        self._withdrawals = 0
        self._polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the inference path reads ---------------------------------------------------------
    def current(self) -> tuple[ModelRunner | None, str]:
        """(running model, '') or (None, why there is none)."""
        with self._lock:
            return self._active, ('' if self._active is not None else self._unavailable_reason)

    @property
    def counts(self) -> ManagerCounts:
        with self._lock:
            return ManagerCounts(self._loads, self._rejections, self._withdrawals, self._polls)

    def rejected(self) -> dict[str, str]:
        """Files currently refused -> why (for /diagnostics)."""
        with self._lock:
            return {path.name: message for path, (_, message) in self._rejected.items()}

    # --- watching --------------------------------------------------------------------------------
    def start(self, poll_interval_s: float) -> None:
        """Poll once now (so the first pair already sees the model), then every ``poll_interval_s``."""
        self.poll_once()
        if poll_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(float(poll_interval_s),), name='weld-model-watch', daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll_once()
            except Exception as exc:  # the watcher must outlive any surprise in one poll
                self._on_event(logging.ERROR, f'model folder poll failed: {type(exc).__name__}: {exc}')

    def _candidates(self) -> list[tuple[Path, Fingerprint]] | None:
        try:
            entries = list(self.models_dir.iterdir())
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._on_event(logging.WARNING, f'cannot list the models folder {self.models_dir}: {exc}')
            return None
        found: list[tuple[Path, Fingerprint]] = []
        for path in entries:
            if path.name.startswith('.') or path.suffix != MODEL_SUFFIX:
                continue
            fingerprint = _fingerprint(path)
            if fingerprint is not None and path.is_file():
                found.append((path, fingerprint))
        found.sort(key=lambda item: (item[1][0], item[0].name), reverse=True)
        return found

    def poll_once(self) -> None:
        """Look at the folder and load / swap / reject / withdraw as the rules above say."""
        candidates = self._candidates()
        with self._lock:
            self._polls += 1
            active = self._active
            active_fingerprint = self._active_fingerprint
        present = {path for path, _ in candidates or []}
        with self._lock:
            for path in [p for p in self._rejected if p not in present]:
                del self._rejected[path]
        if candidates is None:
            self._withdraw_or_idle(f'models folder {self.models_dir} does not exist')
            return
        for path, fingerprint in candidates:
            if active is not None and path == active.path and fingerprint == active_fingerprint:
                return
            with self._lock:
                memo = self._rejected.get(path)
            if memo is not None and memo[0] == fingerprint:
                continue
            try:
                runner = ModelRunner.load(path, self.intra_op_threads, self.inter_op_threads)
            except ModelRejectedError as exc:
                self._reject(path, fingerprint, str(exc))
                continue
            # the file may have changed while it loaded; the next poll sees the new fingerprint
            self._switch(runner, fingerprint, active)
            return
        if active is not None and active.path in present:
            return  # only invalid newer files, or the running file overwritten by an invalid one
        if active is not None:
            self._withdraw_or_idle(f'model {active.model_id} withdrawn: {active.path.name} was removed')
        elif candidates:
            self._withdraw_or_idle(f'no valid model in {self.models_dir} ({len(candidates)} rejected)')
        else:
            self._withdraw_or_idle(f'no model (*.onnx) in {self.models_dir}')

    def _switch(self, runner: ModelRunner, fingerprint: Fingerprint, previous: ModelRunner | None) -> None:
        with self._lock:
            self._active = runner
            self._active_fingerprint = fingerprint
            self._rejected.pop(runner.path, None)
            self._withdrawn_note = ''
            self._loads += 1
        was = f' (was {previous.model_id})' if previous is not None else ''
        self._on_event(
            logging.INFO,
            f'running model {runner.model_id} from {runner.path.name}{was}, '
            f'loaded in {runner.load_ms:.0f} ms',
        )

    def _reject(self, path: Path, fingerprint: Fingerprint, message: str) -> None:
        with self._lock:
            self._rejected[path] = (fingerprint, message)
            self._rejections += 1
            keeping = f'; still running {self._active.model_id}' if self._active is not None else ''
        self._on_event(logging.ERROR, f'model rejected: {message}{keeping}')

    def _withdraw_or_idle(self, reason: str) -> None:
        with self._lock:
            if self._active is not None:
                self._withdrawals += 1
                self._withdrawn_note = reason
            elif self._withdrawn_note:
                reason = f'{reason}; {self._withdrawn_note}'
            changed = self._active is not None or self._unavailable_reason != reason
            self._active = None
            self._active_fingerprint = None
            self._unavailable_reason = reason
        if changed:
            self._on_event(logging.WARNING, f'{reason}; the rules answer until a valid model is there')
