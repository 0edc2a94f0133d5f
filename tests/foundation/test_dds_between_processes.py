"""Two real rclpy nodes in separate processes exchange a DefectResult and a Capture call over loopback DDS."""

import time
from pathlib import Path

import pytest
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from tests.conftest import fastdds_shm_files, held_shm_files, inet_sockets, off_loopback
from weld_interfaces.msg import DefectResult
from weld_interfaces.srv import Capture

PEER = str(Path(__file__).with_name('dds_peer.py'))


@pytest.mark.ros
def test_defect_result_and_capture_service_cross_processes(ros_node, spawn_node) -> None:
    shm_before = fastdds_shm_files()
    peer = spawn_node([PEER], name='peer')
    received: list[DefectResult] = []
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    ros_node.node.create_subscription(DefectResult, '/weld/defects', received.append, qos)

    ros_node.wait_for(lambda: len(received) >= 3, 20.0, f'DefectResult from the peer process\n{peer.output}')
    first = received[0]
    assert first.label == 'porosity'
    assert list(first.class_names) == ['good', 'porosity', 'spatter', 'gap', 'undercut']
    assert first.scores[1] == pytest.approx(0.6)
    assert first.source == 'rules'
    assert first.fallback_reason.startswith('peer message')

    client = ros_node.node.create_client(Capture, '/weld_labeler/capture')
    assert client.wait_for_service(timeout_sec=10.0), peer.output
    future = client.call_async(Capture.Request(label='spatter', count=3, note='seam 7'))
    ros_node.wait_for(future.done, 10.0, 'the Capture answer')
    answer = future.result()
    assert answer.success
    assert answer.captured == 3
    assert answer.message == 'spatter x3: seam 7'
    assert answer.session_id == 'peer-session'

    # every socket the peer opened is bound to loopback: nothing can reach a real interface
    sockets = inet_sockets(peer.process.pid)
    assert sockets, 'the peer opened no sockets at all: is it really using DDS?'
    assert not off_loopback(sockets), 'sockets on a real interface'

    assert peer.stop() == 0, peer.output
    time.sleep(0.5)
    leftover = fastdds_shm_files() - shm_before
    assert not leftover - held_shm_files(), f'stale Fast DDS shared memory: {sorted(leftover)}'
