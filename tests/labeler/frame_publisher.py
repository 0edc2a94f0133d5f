"""A small rgb + depth + camera_info publisher for labeler tests and the benchmark (own process).

    python -m tests.labeler.frame_publisher --rate-hz 30 --width 640 --height 480 --duration-s 20

Each frame pair shares one stamp (as weld_camera does); the rgb image carries the frame index in
its first pixels so a test can tell pairs apart. Prints ``published N`` when done.
"""

import argparse
import contextlib
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from weld_core.images import array_to_image, depth_m_to_image


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--rate-hz', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--duration-s', type=float, default=0.0, help='0: until Ctrl-C')
    parser.add_argument('--depth-encoding', default='32FC1')
    parser.add_argument('--depth-offset-ns', type=int, default=0, help='stamp depth this much after rgb')
    parser.add_argument('--no-depth', action='store_true')
    parser.add_argument('--start-delay-s', type=float, default=0.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node('test_frame_publisher')
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    rgb_pub = node.create_publisher(Image, '/weld/rgb/image_raw', qos)
    depth_pub = node.create_publisher(Image, '/weld/depth/image_raw', qos)
    rgb_info_pub = node.create_publisher(CameraInfo, '/weld/rgb/camera_info', qos)
    depth_info_pub = node.create_publisher(CameraInfo, '/weld/depth/camera_info', qos)
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
    rows = np.linspace(0.08, 0.12, args.height, dtype=np.float32)[:, None]
    depth_m = np.broadcast_to(rows, (args.height, args.width)).copy()
    depth_fields = depth_m_to_image(depth_m, args.depth_encoding)
    info = CameraInfo(width=args.width, height=args.height, distortion_model='plumb_bob')
    info.k = [300.0, 0.0, args.width / 2, 0.0, 300.0, args.height / 2, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    published = 0
    try:
        time.sleep(args.start_delay_s)
        period = 1.0 / args.rate_hz
        start = time.monotonic()
        next_time = start
        while args.duration_s <= 0 or time.monotonic() - start < args.duration_s:
            stamp_ns = time.time_ns()
            rgb = base.copy()
            rgb[0, :8, :] = np.frombuffer(int(published).to_bytes(24, 'little'), np.uint8).reshape(8, 3)
            rgb_msg = Image(**array_to_image(rgb, 'rgb8').as_kwargs())
            rgb_msg.header.stamp.sec, rgb_msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            rgb_msg.header.frame_id = 'weld_camera_optical'
            depth_msg = Image(**depth_fields.as_kwargs())
            depth_stamp = stamp_ns + args.depth_offset_ns
            depth_msg.header.stamp.sec, depth_msg.header.stamp.nanosec = divmod(depth_stamp, 1_000_000_000)
            depth_msg.header.frame_id = 'weld_camera_optical'
            info.header = rgb_msg.header
            rgb_pub.publish(rgb_msg)
            rgb_info_pub.publish(info)
            if not args.no_depth:
                depth_pub.publish(depth_msg)
                depth_info_pub.publish(info)
            published += 1
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(f'published {published}', flush=True)
        node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
