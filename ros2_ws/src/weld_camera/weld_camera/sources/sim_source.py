"""The simulator as a frame source: frames rendered ahead of publication and encoded once.

A VGA frame takes the simulator tens of milliseconds of CPU, more than a 30 Hz period allows on a
slow core. Two ways to render ahead, chosen by ``render_workers``:
- 0: one worker thread in this process (bounded queue). Cheap to start; rendering shares the GIL
  with publishing, so the achievable rate is what one core renders.
- N >= 1: N worker processes, worker k rendering frames k, k+N, ... (``WeldSimulator.render(index)``
  is deterministic per index, so the stream is the same frame for frame as with 0); frames are
  taken back in index order, so the sequence does not depend on N. Needs N free cores.
"""

import multiprocessing
import queue
import threading
import time
from collections.abc import Mapping
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from weld_camera.errors import SourceError
from weld_camera.frames import CameraFrame, Intrinsics
from weld_camera.sources.prefetch import Prefetcher
from weld_core.images import array_to_image, depth_m_to_image


def _simulator_module() -> Any:
    try:
        from weld_camera import sim
    except ImportError as exc:
        raise SourceError(f'the weld-scene simulator (weld_camera.sim) cannot be imported: {exc}') from exc
    return sim


def _make_simulator(width: int, height: int, seed: int, class_mix: Mapping[str, float] | None) -> Any:
    sim = _simulator_module()
    try:
        return sim.WeldSimulator(sim.SimConfig(width=width, height=height, seed=seed, class_mix=class_mix))
    except ValueError as exc:  # SimConfigError: the parameters were wrong
        raise SourceError(f'the simulator rejected its settings: {exc}') from exc


def encode_sim_frame(frame: Any, depth_encoding: str) -> CameraFrame:
    """A SimFrame -> CameraFrame: images encoded once, ground truth and intrinsics attached."""
    info = frame.camera_info
    height, width = frame.rgb.shape[:2]
    return CameraFrame(
        rgb=array_to_image(frame.rgb, 'rgb8'),
        depth=depth_m_to_image(frame.depth_m, depth_encoding),
        label=str(frame.label),
        note=f'sim frame {frame.index}, severity {float(frame.severity):.2f}',
        intrinsics=Intrinsics.pinhole(width, height, info.fx, info.fy, info.cx, info.cy),
    )


def _render_worker(
    settings: dict[str, Any],
    first_index: int,
    step: int,
    out: 'multiprocessing.Queue[Any]',
    stop: ProcessEvent,
) -> None:
    """Worker process: render frames first_index, first_index + step, ... into ``out`` until stopped."""
    try:
        simulator = _make_simulator(
            settings['width'], settings['height'], settings['seed'], settings['class_mix']
        )
        index = first_index
        while not stop.is_set():
            cpu_start = time.process_time()
            frame = encode_sim_frame(simulator.render(index), settings['depth_encoding'])
            cpu_s = time.process_time() - cpu_start
            while not stop.is_set():
                try:
                    out.put((index, frame, cpu_s), timeout=0.1)
                    break
                except queue.Full:
                    continue
            index += step
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent stops us
        return
    except Exception as exc:
        out.put((-1, f'{type(exc).__name__}: {exc}', 0.0))


class _ProcessPool:
    """N render processes; frames come back in index order."""

    def __init__(self, settings: dict[str, Any], workers: int, depth: int) -> None:
        self._settings = settings
        self._workers = workers
        self._depth = depth
        self._context = multiprocessing.get_context('spawn')  # never fork a process that holds DDS threads
        self._queues: list[Any] = []
        self._processes: list[Any] = []
        self._stop_event: Any = None
        self.next_index = 0
        self.produced = 0
        self.worker_cpu_s = 0.0

    def start(self) -> None:
        if self._processes:
            return
        self._stop_event = self._context.Event()
        self._queues = [self._context.Queue(maxsize=self._depth) for _ in range(self._workers)]
        for k in range(self._workers):
            process = self._context.Process(
                target=_render_worker,
                args=(self._settings, self.next_index + k, self._workers, self._queues[k], self._stop_event),
                name=f'weld_camera-render-{k}',
                daemon=True,
            )
            process.start()
            self._processes.append(process)

    def stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        for q in self._queues:  # drain so no worker stays blocked in put()
            while True:
                try:
                    q.get_nowait()
                except (queue.Empty, OSError, ValueError):
                    break
        for process in self._processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
        for q in self._queues:
            q.close()
            q.cancel_join_thread()
        self._processes, self._queues = [], []

    @property
    def queued(self) -> int:
        return sum(q.qsize() for q in self._queues)

    def get(self, stop: threading.Event) -> CameraFrame | None:
        if not self._processes:
            return None
        worker = self.next_index % self._workers
        while not stop.is_set():
            try:
                index, item, cpu_s = self._queues[worker].get(timeout=0.1)
            except queue.Empty:
                if not self._processes[worker].is_alive():
                    exit_code = self._processes[worker].exitcode
                    raise SourceError(f'render process {worker} died (exit code {exit_code})') from None
                continue
            if index < 0:
                raise SourceError(f'render process {worker} failed: {item}')
            if index != self.next_index:
                raise SourceError(f'render process {worker} sent frame {index}, expected {self.next_index}')
            self.next_index += 1
            self.produced += 1
            self.worker_cpu_s += cpu_s
            return item
        return None


class SimSource:
    """Frames of :class:`weld_camera.sim.WeldSimulator` with their ground-truth class, rendered ahead."""

    def __init__(
        self,
        width: int,
        height: int,
        seed: int,
        depth_encoding: str,
        class_mix: Mapping[str, float] | None = None,
        prefetch_frames: int = 3,
        render_workers: int = 0,
    ) -> None:
        if render_workers < 0:
            raise SourceError(f'render_workers must be >= 0, got {render_workers}')
        # built here even with worker processes: a bad setting fails at configure, not in a worker
        self._simulator = _make_simulator(width, height, seed, class_mix)
        self._depth_encoding = depth_encoding
        self._pool: _ProcessPool | None = None
        self._prefetch: Prefetcher | None = None
        if render_workers:
            settings = {
                'width': width,
                'height': height,
                'seed': seed,
                'class_mix': None if class_mix is None else dict(class_mix),
                'depth_encoding': depth_encoding,
            }
            self._pool = _ProcessPool(settings, render_workers, prefetch_frames)
        else:
            self._prefetch = Prefetcher(self._render, prefetch_frames, 'weld_camera-sim-render')

    def _render(self) -> CameraFrame:
        return encode_sim_frame(self._simulator.next(), self._depth_encoding)

    def start(self) -> None:
        if self._pool is not None:
            self._pool.start()
        elif self._prefetch is not None:
            self._prefetch.start()

    def get(self, stop: threading.Event) -> CameraFrame | None:
        if self._pool is not None:
            return self._pool.get(stop)
        if self._prefetch is not None:
            return self._prefetch.get(stop)
        return None

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
        if self._prefetch is not None:
            self._prefetch.stop()

    def close(self) -> None:
        self.stop()

    def counters(self) -> dict[str, float | int]:
        if self._pool is not None:
            return {
                'rendered': self._pool.produced,
                'render_cpu_s': round(self._pool.worker_cpu_s, 4),
                'render_queue': self._pool.queued,
                'render_processes': self._pool._workers,
            }
        if self._prefetch is None:
            return {}
        return {
            'rendered': self._prefetch.produced,
            'render_cpu_s': round(self._prefetch.worker_cpu_s, 4),
            'render_queue': self._prefetch.queued,
            'render_processes': 0,
        }
