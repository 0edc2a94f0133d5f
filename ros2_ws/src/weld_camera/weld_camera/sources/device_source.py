"""A local colour camera (OpenCV VideoCapture, V4L2 on Linux) paired with depth from a driver topic.

The capture thread stamps each colour frame with the wall clock (the ROS system clock) right after
the grab, then pairs it with the depth frames the node feeds in by stamp (RelayPairer). Without a
depth topic every colour frame goes out with an all-zero depth image (REP 118: 0 = no data).
"""

import threading
import time
from collections.abc import Callable

import cv2

from weld_camera.errors import SourceError
from weld_camera.frames import CameraFrame
from weld_camera.sources.relay import RelayPairer, empty_depth_fields, rgb_fields


class DeviceSource:
    def __init__(
        self,
        device: int | str,
        width: int,
        height: int,
        rate_hz: float,
        pairer: RelayPairer,
        with_depth: bool,
        emit: Callable[[CameraFrame], None],
        on_error: Callable[[BaseException], None],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        # an index opens /dev/videoN; a path or URL (a video file, a stream) opens through OpenCV too
        self._capture = cv2.VideoCapture(device)
        if not self._capture.isOpened():
            self._capture.release()
            where = f'device index {device} (/dev/video{device})' if isinstance(device, int) else repr(device)
            raise SourceError(
                f'no colour camera at {where}: check the cable and permissions, or pick another device_index'
            )
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._capture.set(cv2.CAP_PROP_FPS, rate_hz)
        self.device = device
        self.pairer = pairer
        self._with_depth = with_depth
        self._emit = emit
        self._on_error = on_error
        self._clock_ns = clock_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the capture thread and depth callbacks share the pairer
        self.grabbed = 0
        self.failed_grabs = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name='weld_camera-device', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            self.pairer.pairer.clear()

    def close(self) -> None:
        self.stop()
        self._capture.release()

    def add_depth(self, stamp_ns: int, msg: object) -> None:
        with self._lock:
            frames = self.pairer.add_depth(stamp_ns, msg)
        for frame in frames:
            self._emit(frame)

    def _run(self) -> None:
        consecutive_failures = 0
        while not self._stop.is_set():
            ok, bgr = self._capture.read()
            stamp_ns = self._clock_ns()
            if not ok or bgr is None:
                self.failed_grabs += 1
                consecutive_failures += 1
                if consecutive_failures >= 50:
                    self._on_error(SourceError(f'camera {self.device} stopped delivering frames'))
                    return
                self._stop.wait(0.02)
                continue
            consecutive_failures = 0
            self.grabbed += 1
            try:
                if self._with_depth:
                    with self._lock:
                        frames = self.pairer.add_rgb(stamp_ns, bgr)
                else:
                    rgb = rgb_fields(bgr)
                    depth = empty_depth_fields(rgb.width, rgb.height, self.pairer.depth_encoding)
                    frames = [
                        CameraFrame(
                            rgb=rgb, depth=depth, stamp_ns=stamp_ns, intrinsics=self.pairer.intrinsics
                        )
                    ]
                for frame in frames:
                    self._emit(frame)
            except Exception as exc:  # reported by the node; capture stops rather than spin on errors
                self._on_error(exc)
                return

    def counters(self) -> dict[str, float | int | str]:
        return {'grabbed': self.grabbed, 'failed_grabs': self.failed_grabs, **self.pairer.counters()}
