"""An rgb + depth + camera_info publisher for labeler tests and the benchmark (its own process).

    python -m tests.labeler.frame_publisher --rate-hz 30 --width 640 --height 480 --duration-s 20

A few weld-simulator frames are rendered once and cycled, so publishing costs little and the
labeler's work (pairing, recording, JPEG/PNG compression) is measured on realistic images. Both
images of a pair share one stamp unless ``--depth-offset-ns`` shifts depth (approximate pairing).
Prints ``published N`` at the end.
"""

import argparse
import contextlib
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from weld_camera.sim import SimConfig, WeldSimulator
from weld_core.images import array_to_image, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--rate-hz', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--duration-s', type=float, default=0.0, help='0: until Ctrl-C')
    parser.add_argument('--depth-encoding', default='32FC1')
    parser.add_argument('--depth-offset-ns', type=int, default=0, help='stamp depth this much after rgb')
    parser.add_argument('--distinct-frames', type=int, default=6)
    parser.add_argument('--wait-for-subscribers-s', type=float, default=10.0)
    args = parser.parse_args()

    simulator = WeldSimulator(SimConfig(width=args.width, height=args.height, seed=11))
    frames = []
    for _ in range(args.distinct_frames):
        frame = simulator.next()
        frames.append(
            (
                Image(**array_to_image(frame.rgb, 'rgb8').as_kwargs()),
                Image(**depth_m_to_image(frame.depth_m, args.depth_encoding).as_kwargs()),
            )
        )

    rclpy.init()
    node = rclpy.create_node('test_frame_publisher')
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    rgb_pub = node.create_publisher(Image, '/weld/rgb/image_raw', qos)
    depth_pub = node.create_publisher(Image, '/weld/depth/image_raw', qos)
    rgb_info_pub = node.create_publisher(CameraInfo, '/weld/rgb/camera_info', qos)
    depth_info_pub = node.create_publisher(CameraInfo, '/weld/depth/camera_info', qos)
    info = CameraInfo(width=args.width, height=args.height, distortion_model='plumb_bob')
    info.k = [300.0, 0.0, args.width / 2, 0.0, 300.0, args.height / 2, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    published = 0
    try:
        deadline = time.monotonic() + args.wait_for_subscribers_s
        while (
            time.monotonic() < deadline
            and min(rgb_pub.get_subscription_count(), depth_pub.get_subscription_count()) < 1
        ):
            time.sleep(0.05)
        time.sleep(0.5)  # the subscriber's side of the match settles too
        period = 1.0 / args.rate_hz
        print('publishing', flush=True)
        start = time.monotonic()
        next_time = start
        while args.duration_s <= 0 or time.monotonic() - start < args.duration_s:
            rgb_msg, depth_msg = frames[published % len(frames)]
            stamp_ns = time.time_ns()
            for message, stamp in (
                (rgb_msg, stamp_ns),
                (depth_msg, stamp_ns + args.depth_offset_ns),
                (info, stamp_ns),
            ):
                message.header.stamp.sec, message.header.stamp.nanosec = ns_to_sec_nanosec(stamp)
                message.header.frame_id = 'weld_camera_optical_frame'
            rgb_pub.publish(rgb_msg)
            rgb_info_pub.publish(info)
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
