"""Test side of the node tests: publishes frame pairs, collects DefectResults and /diagnostics."""

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from weld_core.images import array_to_image, compress_depth, compress_rgb, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec, stamp_to_ns
from weld_interfaces.msg import DefectResult

RELIABLE = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
STATUS_NAME = 'weld_inference: inference'


def image_msg(fields: Any, stamp_ns: int, frame_id: str = 'weld_camera_optical_frame') -> Any:
    msg = (CompressedImage if hasattr(fields, 'format') else Image)(**fields.as_kwargs())
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nanosec(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


class InferenceHarness:
    def __init__(self, spinning: Any, rgb: np.ndarray, depth_m: np.ndarray, compressed: bool = False) -> None:
        self.spinning = spinning
        self.compressed = compressed
        node = spinning.node
        if compressed:
            self.rgb_pub = node.create_publisher(CompressedImage, '/weld/rgb/image_raw/compressed', RELIABLE)
            self.depth_pub = node.create_publisher(
                CompressedImage, '/weld/depth/image_raw/compressedDepth', RELIABLE
            )
        else:
            self.rgb_pub = node.create_publisher(Image, '/weld/rgb/image_raw', RELIABLE)
            self.depth_pub = node.create_publisher(Image, '/weld/depth/image_raw', RELIABLE)
        self._lock = threading.Lock()
        self.results: dict[int, list[DefectResult]] = defaultdict(list)
        self.diagnostics: dict[str, str] = {}
        self.diagnostic_message = ''
        if compressed:
            self.rgb_fields = compress_rgb(rgb, 'png')
            self.depth_fields = compress_depth(depth_m, '32FC1')
        else:
            self.rgb_fields = array_to_image(rgb, 'rgb8')
            self.depth_fields = depth_m_to_image(depth_m, '32FC1')
        node.create_subscription(
            DefectResult,
            '/weld/defects',
            self._on_result,
            QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE),
        )
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, RELIABLE)

    def _on_result(self, msg: DefectResult) -> None:
        with self._lock:
            self.results[stamp_to_ns(msg.header.stamp)].append(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == STATUS_NAME:
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostic_message = status.message

    def diag(self, key: str, default: str = '') -> str:
        with self._lock:
            return self.diagnostics.get(key, default)

    def wait_ready(self, process: Any, timeout_s: float = 30.0) -> None:
        def connected() -> bool:
            return (
                self.rgb_pub.get_subscription_count() >= 1
                and self.depth_pub.get_subscription_count() >= 1
                and bool(self.diag('answered'))
            )

        self.spinning.wait_for(connected, timeout_s, f'the inference node to come up\n{process.output}')

    def wait_diag(
        self, condition: Callable[[dict[str, str]], bool], what: str, process: Any, timeout_s: float = 20.0
    ) -> None:
        def holds() -> bool:
            with self._lock:
                latest = dict(self.diagnostics)
            return condition(latest)

        self.spinning.wait_for(
            holds, timeout_s, f'{what} (last diagnostics {self.diagnostics})\n{process.output}'
        )

    def send(self, stamp_ns: int, rgb: Any = None, depth: Any = None) -> None:
        self.rgb_pub.publish(image_msg(rgb if rgb is not None else self.rgb_fields, stamp_ns))
        self.depth_pub.publish(image_msg(depth if depth is not None else self.depth_fields, stamp_ns))

    def answered(self, stamps: Iterable[int]) -> bool:
        with self._lock:
            return all(self.results.get(stamp) for stamp in stamps)

    def send_lockstep(self, stamps: list[int], process: Any, timeout_s: float = 15.0) -> list[DefectResult]:
        """Send each pair after the previous one was answered: nothing can be skipped."""
        for stamp in stamps:
            self.send(stamp)
            self.spinning.wait_for(
                lambda s=stamp: self.answered([s]), timeout_s, f'a result for {stamp}\n{process.output}'
            )
        return self.exactly_one_each(stamps)

    def send_flow(
        self, stamps: list[int], rate_hz: float, during: dict[int, Callable[[], None]] | None = None
    ) -> None:
        """Send pairs at ``rate_hz``; ``during[i]`` runs right after pair i was sent."""
        period = 1.0 / rate_hz
        start = time.monotonic()
        for index, stamp in enumerate(stamps):
            self.send(stamp)
            if during and index in during:
                during[index]()
            delay = start + (index + 1) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def exactly_one_each(self, stamps: list[int]) -> list[DefectResult]:
        with self._lock:
            counts = {stamp: len(self.results.get(stamp, [])) for stamp in stamps}
            bad = {stamp: count for stamp, count in counts.items() if count != 1}
            if bad:
                raise AssertionError(f'pairs without exactly one result (stamp: count): {bad}')
            return [self.results[stamp][0] for stamp in stamps]

    def counts(self, stamps: Iterable[int]) -> list[int]:
        with self._lock:
            return [len(self.results.get(stamp, [])) for stamp in stamps]

    def result_count(self) -> int:
        with self._lock:
            return sum(len(found) for found in self.results.values())


def stamps_from(start_s: int, count: int, period_ms: int = 100) -> list[int]:
    return [start_s * 1_000_000_000 + index * period_ms * 1_000_000 for index in range(count)]
