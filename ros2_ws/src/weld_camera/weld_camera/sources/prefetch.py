"""Produce frames ahead of time in a worker thread, into a bounded queue (ROS-free).

Rendering a VGA simulator frame or decoding a compressed bag frame takes longer than publishing
it; doing it ahead in a worker keeps the publishing thread on its schedule. The queue is bounded,
so the worker never runs more than ``depth`` frames ahead and memory stays flat.
"""

import queue
import threading
import time
from collections.abc import Callable

from weld_camera.errors import SourceError
from weld_camera.frames import CameraFrame

_END = object()


class Prefetcher:
    """Calls ``produce`` in a worker thread; ``produce`` returns a frame, or None when it has no more."""

    def __init__(self, produce: Callable[[], CameraFrame | None], depth: int, name: str) -> None:
        if depth < 1:
            raise ValueError(f'prefetch depth must be >= 1, got {depth}')
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._name = name
        self.produced = 0
        self.worker_cpu_s = 0.0  # CPU time of the worker thread: what producing frames costs

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker and forget queued frames; start() begins again where production left off."""
        self._stop.set()
        while True:  # a worker blocked on a full queue needs room to see the stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def get(self, stop: threading.Event) -> CameraFrame | None:
        """The next frame; None at the end of the frames or once ``stop`` is set."""
        while not stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    return self._finished()
                continue
            if item is _END:
                return self._finished()
            if isinstance(item, CameraFrame):
                return item
        return None

    def _finished(self) -> None:
        if self._error is not None:
            raise SourceError(f'{self._name} failed: {self._error}') from self._error
        return None

    def _run(self) -> None:
        started_cpu = time.thread_time()
        try:
            while not self._stop.is_set():
                frame = self._produce()
                self.worker_cpu_s = time.thread_time() - started_cpu
                item: object = _END if frame is None else frame
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if frame is None:
                    return
                self.produced += 1
        except Exception as exc:  # the consumer raises it as a SourceError once the queue is drained
            self._error = exc
