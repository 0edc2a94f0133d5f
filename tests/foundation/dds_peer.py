"""A peer node for the foundation DDS test, run in its own process.

Serves /weld_labeler/capture (answers with the label and count it was asked for) and publishes a
DefectResult on /weld/defects every 100 ms until Ctrl-C.
"""

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from weld_interfaces.msg import DefectResult
from weld_interfaces.srv import Capture


class Peer(Node):
    def __init__(self) -> None:
        super().__init__('foundation_peer')
        reliable = QoSProfile(
            depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE
        )
        self.publisher = self.create_publisher(DefectResult, '/weld/defects', reliable)
        self.service = self.create_service(Capture, '/weld_labeler/capture', self.on_capture)
        self.sent = 0
        self.timer = self.create_timer(0.1, self.publish_result)

    def publish_result(self) -> None:
        msg = DefectResult()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'weld_camera_optical_frame'
        msg.class_names = ['good', 'porosity', 'spatter', 'gap', 'undercut']
        msg.scores = [0.1, 0.6, 0.1, 0.1, 0.1]
        msg.label = 'porosity'
        msg.confidence = 0.6
        msg.source = 'rules'
        msg.fallback_reason = f'peer message {self.sent}'
        msg.latency_ms = 1.5
        self.publisher.publish(msg)
        self.sent += 1

    def on_capture(self, request: Capture.Request, response: Capture.Response) -> Capture.Response:
        response.success = True
        response.captured = max(1, request.count)
        response.message = f'{request.label} x{response.captured}: {request.note}'
        response.session_id = 'peer-session'
        return response


def main() -> None:
    rclpy.init()
    node = Peer()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
