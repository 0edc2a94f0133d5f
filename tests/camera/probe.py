"""A subscriber to everything the camera node publishes, for node tests (runs in the test's ros_node)."""

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.stamps import stamp_to_ns
from weld_interfaces.msg import DefectLabel


@dataclass
class Received:
    stamp_ns: int
    received_ns: int
    frame_id: str
    msg: Any


@dataclass
class CameraProbe:
    """Collects the camera topics; ``keep_images`` keeps whole Image messages (else only headers)."""

    node: Node
    keep_images: bool = True
    rgb: list[Received] = field(default_factory=list)
    depth: list[Received] = field(default_factory=list)
    rgb_info: list[Received] = field(default_factory=list)
    depth_info: list[Received] = field(default_factory=list)
    ground_truth: list[Received] = field(default_factory=list)
    diagnostics: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        # images as the contract's consumers take them: sensor-data QoS
        self.node.create_subscription(
            Image, '/weld/rgb/image_raw', self._keep(self.rgb), qos_profile_sensor_data
        )
        self.node.create_subscription(
            Image, '/weld/depth/image_raw', self._keep(self.depth), qos_profile_sensor_data
        )
        self.node.create_subscription(
            CameraInfo, '/weld/rgb/camera_info', self._keep(self.rgb_info), reliable
        )
        self.node.create_subscription(
            CameraInfo, '/weld/depth/camera_info', self._keep(self.depth_info), reliable
        )
        self.node.create_subscription(
            DefectLabel, '/weld/sim/ground_truth', self._keep(self.ground_truth), reliable
        )
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, reliable)

    def _keep(self, into: list[Received]):
        def callback(msg: Any) -> None:
            kept = msg if self.keep_images or not isinstance(msg, Image) else None
            with self._lock:
                into.append(
                    Received(stamp_to_ns(msg.header.stamp), time.time_ns(), msg.header.frame_id, kept)
                )

        return callback

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith('weld_camera'):
                with self._lock:
                    self.diagnostics.append(
                        {kv.key: kv.value for kv in status.values} | {'_message': status.message}
                    )

    def stamps(self, stream: list[Received]) -> list[int]:
        with self._lock:
            return [r.stamp_ns for r in stream]

    def counter(self, key: str) -> int | None:
        with self._lock:
            for values in reversed(self.diagnostics):
                if key in values:
                    return int(float(values[key]))
        return None


def rgb_array(received: Received):
    return rgb_from_msg(received.msg)


def depth_array(received: Received):
    return depth_m_from_msg(received.msg)
