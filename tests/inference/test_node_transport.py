"""The node as deployed: default parameters file, sensor-data (BEST_EFFORT) subscriptions to the
compressed topics, camera_info for the rules, rule measurements for every pair, and the rate limit
with latest-frame-wins (skipped pairs counted, every other pair answered once).
"""

import threading
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo

from tests.conftest import fastdds_shm_files, held_shm_files
from tests.inference.frames import weld_frame
from tests.inference.harness import InferenceHarness, stamps_from
from tests.inference.models import write_model
from weld_core.classes import DEFAULT_CLASSES
from weld_core.model_file import read_model_info
from weld_core.stamps import stamp_to_ns

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CONFIG = Path(__file__).resolve().parents[2] / 'ros2_ws/src/weld_inference/config/weld_inference.yaml'


def test_compressed_best_effort_with_measurements_and_rate_limit(
    ros_node, spawn_node, tmp_path: Path
) -> None:
    models = tmp_path / 'models'
    models.mkdir()
    model_id = read_model_info(write_model(models / 'm.onnx', name='net', version='5')).model_id
    rgb, depth = weld_frame(seed=4)
    harness = InferenceHarness(ros_node, rgb, depth, compressed=True)
    measurements: dict[int, dict[str, str]] = {}
    lock = threading.Lock()

    rules_labels: dict[int, str] = {}

    def on_measurements(msg: DiagnosticArray) -> None:
        with lock:
            measurements[stamp_to_ns(msg.header.stamp)] = {kv.key: kv.value for kv in msg.status[0].values}
            rules_labels[stamp_to_ns(msg.header.stamp)] = msg.status[0].message

    reliable = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
    ros_node.node.create_subscription(DiagnosticArray, '/weld/rule_measurements', on_measurements, reliable)
    info_pub = ros_node.node.create_publisher(CameraInfo, '/weld/rgb/camera_info', reliable)
    args = ['-m', 'weld_inference.inference_node', '--ros-args', '--params-file', str(CONFIG)]
    for override in (
        f'models_dir:={models}',
        'image_transport:=compressed',
        'rules_on_every_pair:=true',
        'diagnostics_period_s:=0.2',
        'max_rate_hz:=4.0',
    ):
        args += ['-p', override]
    shm_before = fastdds_shm_files()
    node = spawn_node(args, name='inference')
    harness.wait_ready(node)
    # intrinsics of a 640x480 sensor with fx = 800 px: the node scales them to these 320x240 images
    # (fx 400 px), so the rules see 0.25 mm per pixel where their default (300 px) would give 0.33
    info = CameraInfo(height=480, width=640, k=[800.0, 0.0, 319.5, 0.0, 800.0, 239.5, 0.0, 0.0, 1.0])
    stamps = stamps_from(400, 3, period_ms=300)
    for stamp in stamps:
        info_pub.publish(info)
        [result] = harness.send_lockstep([stamp], node)
        assert (result.source, result.model_id) == ('model', model_id)
    ros_node.wait_for(
        lambda: all(s in measurements for s in stamps), 10.0, 'the rules measurements of each pair'
    )
    with lock:
        last = measurements[stamps[-1]]
        # the status message is the rules' own label (the model answered these pairs)
        assert all(rules_labels[stamp] in DEFAULT_CLASSES for stamp in stamps)
    plate_mm = float(last['plate_distance_mm'])
    assert float(last['mm_per_px']) == pytest.approx(plate_mm / 400.0, rel=0.02)
    assert float(last['bead_width_mm']) == pytest.approx(6.0 * 300.0 / 400.0, abs=1.2)

    # a burst at 50 Hz into a 4 Hz limit: most pairs are skipped, none is answered twice or lost
    burst = stamps_from(410, 25, period_ms=20)
    harness.send_flow(burst, 50.0)

    def settled(d: dict[str, str]) -> bool:
        return int(d.get('skipped', '0')) + sum(harness.counts(burst)) == len(burst)

    harness.wait_diag(settled, 'every burst pair answered or counted as skipped', node)
    counts = harness.counts(burst)
    assert max(counts) == 1 and 2 <= sum(counts) <= 10, counts
    assert counts[-1] == 1, 'latest-frame-wins: the newest pair must be answered'
    assert node.stop() == 0, node.output
    time.sleep(0.5)
    leftover = fastdds_shm_files() - shm_before - held_shm_files()
    assert not leftover, f'Ctrl-C left Fast DDS shared memory behind: {sorted(leftover)}'
