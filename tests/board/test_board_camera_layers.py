"""The board's camera layers (weld_bringup/config/board_*.yaml) relay the vendors' real topics.

Each test records a bag in the layout and encodings the vendor's driver publishes (topic names from
the driver's documentation, see the yaml files), brings the camera up the way the board does
(weld-scan nodes:=camera params_file:=<layer>, the same graph declaration as scan.launch.py), plays
the bag onto the vendor's topics at its recorded timing, and checks what comes out on the contract
topics: every pair, rgb8 colour and 16UC1 millimetre depth of the driver's size, the driver's
intrinsics, and no simulator ground truth.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosbags.rosbag2 import Reader, Writer
from sensor_msgs.msg import CameraInfo, Image

from tests.camera.bags import START_NS, camera_info, image_msg
from tests.camera.probe import CameraProbe, depth_array, rgb_array
from tests.core.yuv import blocky_rgb, nv12_from_rgb
from weld_bringup import graph
from weld_core.bag_types import CAMERA_INFO, IMAGE, weld_typestore
from weld_core.images import ImageFields, array_to_image

pytestmark = [pytest.mark.ros, pytest.mark.slow]
MS = 1_000_000


@dataclass(frozen=True)
class Driver:
    """A vendor driver's output: its topics, size, encodings and colour/depth stamp offset."""

    layer: str
    rgb_topic: str
    depth_topic: str
    info_topic: str
    width: int
    height: int
    colour_encoding: str
    depth_encoding: str
    depth_offset_ns: int
    rate_hz: float = 15.0
    frames: int = 20


STEREONET = Driver(
    'board_stereonet.yaml',
    '/StereoNetNode/rectify_left_image',
    '/StereoNetNode/stereonet_depth',
    '/StereoNetNode/stereonet_depth/camera_info',
    640,
    352,
    'nv12',
    'mono16',
    0,
)
STEREONET_BGR = Driver(**{**STEREONET.__dict__, 'colour_encoding': 'bgr8'})
REALSENSE = Driver(
    'board_realsense.yaml',
    '/camera/camera/color/image_raw',
    '/camera/camera/aligned_depth_to_color/image_raw',
    '/camera/camera/color/camera_info',
    640,
    480,
    'rgb8',
    '16UC1',
    3 * MS,
)


def colour_fields(driver: Driver, rgb: np.ndarray) -> ImageFields:
    if driver.colour_encoding == 'nv12':
        height, width = rgb.shape[:2]
        return ImageFields(height, width, 'nv12', 0, width, nv12_from_rgb(rgb))
    if driver.colour_encoding == 'bgr8':
        return array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8')
    return array_to_image(rgb, 'rgb8')


def depth_mm(index: int, driver: Driver) -> np.ndarray:
    """A tilted plate 150-250 mm away with a groove and dropouts, changing with the frame."""
    rows = np.linspace(150, 250, driver.height, dtype=np.float32)[:, None]
    depth = np.repeat(rows, driver.width, axis=1) + index
    depth[:, driver.width // 2 : driver.width // 2 + 6] += 2.0
    depth[:8, :8] = 0  # no data
    return depth.astype(np.uint16)


def record(driver: Driver, path: Path) -> list[int]:
    """A bag of the driver's topics (what `ros2 bag record` of the driver would hold); colour stamps."""
    store = weld_typestore()
    interval = round(1e9 / driver.rate_hz)
    stamps = [START_NS + i * interval for i in range(driver.frames)]
    with Writer(path, version=9) as writer:
        rgb_conn = writer.add_connection(driver.rgb_topic, IMAGE, typestore=store)
        depth_conn = writer.add_connection(driver.depth_topic, IMAGE, typestore=store)
        info_conn = writer.add_connection(driver.info_topic, CAMERA_INFO, typestore=store)
        for index, stamp in enumerate(stamps):
            rgb = blocky_rgb(driver.height, driver.width, seed=index)
            depth = depth_mm(index, driver)
            depth_stamp = stamp + driver.depth_offset_ns
            depth_fields = ImageFields(
                driver.height, driver.width, driver.depth_encoding, 0, driver.width * 2, depth.tobytes()
            )
            messages = [
                (info_conn, stamp, camera_info(store, stamp, driver.width, driver.height, fx=430.0)),
                (rgb_conn, stamp, image_msg(store, stamp, colour_fields(driver, rgb))),
                (depth_conn, depth_stamp, image_msg(store, depth_stamp, depth_fields)),
            ]
            for connection, log_time, msg in messages:
                writer.write(connection, log_time, store.serialize_cdr(msg, connection.msgtype))
    return stamps


def play(bag: Path, publishers: dict[str, Any]) -> None:
    """Publish the bag's messages as recorded (serialized bytes, no decoding) at their recorded timing."""
    with Reader(bag) as reader:
        start_wall, start_log = time.monotonic(), None
        for connection, log_time, rawdata in reader.messages():
            start_log = log_time if start_log is None else start_log
            delay = (log_time - start_log) / 1e9 - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            publishers[connection.topic].publish(bytes(rawdata))


@pytest.mark.parametrize(
    'driver', [STEREONET, STEREONET_BGR, REALSENSE], ids=['stereonet', 'stereonet-bgr8', 'realsense']
)
def test_board_layer_relays_the_vendor_stream(ros_node, spawn_node, tmp_path: Path, driver: Driver) -> None:
    layer = graph.config_dir() / driver.layer
    assert layer.is_file(), f'{layer} is not installed in the ament index (run scripts/setup)'
    stamps = record(driver, tmp_path / 'vendor_bag')
    node = ros_node.node
    probe = CameraProbe(node)
    qos = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE)  # the vendors' default QoS
    publishers = {
        driver.rgb_topic: node.create_publisher(Image, driver.rgb_topic, qos),
        driver.depth_topic: node.create_publisher(Image, driver.depth_topic, qos),
        driver.info_topic: node.create_publisher(CameraInfo, driver.info_topic, qos),
    }
    runner = spawn_node(['-m', 'weld_bringup', 'nodes:=camera', f'params_file:={layer}'], name='runner')
    ros_node.wait_for(
        lambda: all(publisher.get_subscription_count() for publisher in publishers.values()),
        30.0,
        f'the relay subscribing to the vendor topics\n{runner.output}',
    )
    ros_node.wait_for(lambda: len(probe.diagnostics) > 0, 10.0, 'camera diagnostics')
    play(tmp_path / 'vendor_bag', publishers)
    ros_node.wait_for(lambda: len(probe.depth) >= len(stamps), 15.0, f'relayed pairs\n{runner.output}')
    time.sleep(0.3)

    assert probe.stamps(probe.rgb) == stamps, 'every pair, with the colour stamp'
    assert probe.stamps(probe.depth) == stamps
    for index in (0, len(stamps) - 1):
        colour, depth = probe.rgb[index].msg, probe.depth[index].msg
        assert (colour.encoding, colour.width, colour.height) == ('rgb8', driver.width, driver.height)
        assert (depth.encoding, depth.width, depth.height) == ('16UC1', driver.width, driver.height)
        expected = blocky_rgb(driver.height, driver.width, seed=index).astype(int)
        assert int(np.abs(rgb_array(probe.rgb[index]).astype(int) - expected).max()) <= 3
        np.testing.assert_array_equal(
            np.rint(depth_array(probe.depth[index]) * 1000), depth_mm(index, driver)
        )
    assert probe.rgb_info and probe.rgb_info[-1].msg.k[0] == 430.0, 'the driver intrinsics travel on'
    assert probe.ground_truth == [] and node.count_publishers('/weld/sim/ground_truth') == 0
    assert probe.counter('rejected') == 0
    assert runner.stop() == 0, runner.output
