"""Relay of another driver's streams and replay of bags, with the node in its own process over DDS."""

import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin
from sensor_msgs.msg import CameraInfo, Image

from tests.camera.bags import FRAME_ID, LABELS, frame_arrays, write_bag, write_labeler_bag
from tests.camera.probe import CameraProbe, depth_array, rgb_array
from weld_core.images import array_to_image, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec

NODE = ['-m', 'weld_camera.camera_node', '--ros-args']
MS = 1_000_000

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _image(fields, stamp_ns: int, frame_id: str = 'driver_color_optical_frame') -> Image:
    msg = Image(**fields.as_kwargs())
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    msg.header.frame_id = frame_id
    return msg


def test_relay_pairs_unsynchronised_streams_and_counts_unpairable_frames(ros_node, spawn_node) -> None:
    node = ros_node.node
    probe = CameraProbe(node)
    qos = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
    color_pub = node.create_publisher(Image, '/driver/color/image_raw', qos)
    depth_pub = node.create_publisher(Image, '/driver/depth/image_raw', qos)
    info_pub = node.create_publisher(CameraInfo, '/driver/color/camera_info', qos)
    relay_params = {
        'source': 'relay',
        'relay_rgb_topic': '/driver/color/image_raw',
        'relay_depth_topic': '/driver/depth/image_raw',
        'relay_rgb_info_topic': '/driver/color/camera_info',
        'relay_slop_ms': '15.0',
        'relay_reliable': 'true',
        'depth_encoding': '32FC1',
    }
    camera = spawn_node(
        [*NODE, *(a for k, v in relay_params.items() for a in ('-p', f'{k}:={v}'))], name='relay'
    )
    ros_node.wait_for(
        lambda: (
            color_pub.get_subscription_count()
            and depth_pub.get_subscription_count()
            and info_pub.get_subscription_count()
        ),
        30.0,
        f'the relay subscriptions\n{camera.output}',
    )
    ros_node.wait_for(lambda: len(probe.diagnostics) > 0, 10.0, 'relay diagnostics')

    info = CameraInfo(
        width=64, height=48, k=[80.0, 0, 32, 0, 80.0, 24, 0, 0, 1], distortion_model='plumb_bob'
    )
    info_pub.publish(info)
    time.sleep(0.2)
    base = time.time_ns()
    paired_stamps, unpaired = [], 0
    for i in range(24):
        stamp = base + i * 60 * MS
        rgb, depth = frame_arrays(i)
        # a driver publishing BGR colour and millimetre depth, depth stamped 3-6 ms after colour
        color_pub.publish(_image(array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8'), stamp))
        if i % 6 == 5:
            depth_pub.publish(_image(depth_m_to_image(depth, '16UC1'), stamp + 30 * MS))  # outside the slop
            unpaired += 2
        else:
            depth_pub.publish(_image(depth_m_to_image(depth, '16UC1'), stamp + (3 + i % 4) * MS))
            paired_stamps.append(stamp)
        time.sleep(0.03)
    ros_node.wait_for(lambda: len(probe.rgb) >= len(paired_stamps), 20.0, f'relayed pairs\n{camera.output}')
    time.sleep(0.5)

    assert probe.stamps(probe.rgb) == paired_stamps, 'the relay published other pairs than the pairable ones'
    assert probe.stamps(probe.depth) == paired_stamps, 'depth must carry the rgb stamp of its pair'
    assert probe.stamps(probe.rgb_info) == paired_stamps
    for index, received in zip([i for i in range(24) if i % 6 != 5], probe.rgb, strict=True):
        rgb, depth = frame_arrays(index)
        assert received.msg.encoding == 'rgb8'
        assert np.array_equal(rgb_array(received), rgb), 'bgr8 was not turned into rgb8'
    depth_msg = probe.depth[0].msg
    assert depth_msg.encoding == '32FC1'
    np.testing.assert_allclose(depth_array(probe.depth[0]), frame_arrays(0)[1], atol=0.0005)
    assert probe.rgb_info[0].msg.k[0] == 80.0

    # the last unpaired frames may still wait for a partner: every earlier one is counted. Both
    # counts come from the periodic diagnostics, so the wait covers both (one message can predate
    # the last pair)
    ros_node.wait_for(
        lambda: (
            (probe.counter('dropped_unpaired') or 0) >= unpaired - 2
            and (probe.counter('paired') or 0) >= len(paired_stamps)
        ),
        5.0,
        'the dropped and paired counts',
    )
    assert probe.counter('paired') == len(paired_stamps)
    assert 'unpairable frames dropped' in camera.output
    assert camera.stop() == 0, camera.output


def _replay(ros_node, spawn_node, bag: Path, *params: str):
    probe = CameraProbe(ros_node.node)
    camera = spawn_node([*NODE, '-p', 'source:=replay', '-p', f'bag_path:={bag}', *params], name='replay')
    return probe, camera


@pytest.mark.parametrize(
    ('compressed', 'storage'), [(False, StoragePlugin.MCAP), (True, StoragePlugin.SQLITE3)]
)
def test_replay_plays_a_rosbags_bag_at_its_recorded_rate(
    ros_node, spawn_node, tmp_path: Path, compressed, storage
):
    stamps = write_bag(
        tmp_path / 'bag', 12, 100 * MS, compressed=compressed, storage=storage, depth_offset_ns=2 * MS
    )
    # the camera starts before the probe is matched: loop, and look at one whole pass
    probe, camera = _replay(
        ros_node,
        spawn_node,
        tmp_path / 'bag',
        '-p',
        'replay_restamp:=false',
        '-p',
        'loop:=true',
        '-p',
        'depth_encoding:=16UC1',
    )
    ros_node.wait_for(lambda: len(probe.rgb) >= 30, 30.0, f'replayed frames\n{camera.output}')
    received = probe.stamps(probe.rgb)
    start = next(i for i in range(1, len(received)) if received[i] == stamps[0])
    one_pass = probe.rgb[start : start + len(stamps)]
    assert [r.stamp_ns for r in one_pass] == stamps, 'recorded stamps kept, in order'
    gaps_ms = np.diff([r.received_ns for r in one_pass]) / 1e6
    assert 60 < float(np.median(gaps_ms)) < 140, f'recorded 100 ms spacing, got {gaps_ms}'
    truth = {r.stamp_ns: r.msg.label for r in probe.ground_truth}
    assert [truth.get(s) for s in stamps] == [LABELS[i % 5] for i in range(12)]
    depth = next(r for r in probe.depth if r.stamp_ns == stamps[4])
    assert depth.msg.encoding == '16UC1' and depth.frame_id == 'weld_camera_optical_frame'
    np.testing.assert_allclose(depth_array(depth), frame_arrays(4)[1], atol=0.0006)
    assert np.array_equal(rgb_array(one_pass[4]), frame_arrays(4)[0])
    assert camera.stop() == 0, camera.output
    assert FRAME_ID not in {r.frame_id for r in probe.rgb}  # the node's frame_id parameter wins


def test_replay_of_a_labeler_bag_at_a_fixed_rate_restamped(ros_node, spawn_node, tmp_path: Path) -> None:
    pytest.importorskip('weld_labeler.recorder', reason='weld_labeler recorder not installed')
    write_labeler_bag(tmp_path / 'session', 6, 500 * MS, 'compressed')
    probe, camera = _replay(
        ros_node, spawn_node, tmp_path / 'session', '-p', 'replay_rate:=20', '-p', 'loop:=true'
    )
    ros_node.wait_for(lambda: len(probe.rgb) >= 40, 30.0, f'replayed frames\n{camera.output}')
    received = probe.rgb[10:40]
    gaps_ms = np.diff([r.received_ns for r in received]) / 1e6
    assert 35 < float(np.median(gaps_ms)) < 65, f'20 Hz wanted, gaps {gaps_ms}'
    lag_ms = [(r.received_ns - r.stamp_ns) / 1e6 for r in received]
    assert max(abs(v) for v in lag_ms) < 1000, 'restamped pairs carry the current time'
    assert {r.msg.label for r in probe.ground_truth} <= set(LABELS)
    assert camera.stop() == 0, camera.output
