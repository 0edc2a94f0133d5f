"""weld_labeler over real DDS: the sim camera node, the labeler and this test in separate processes."""

import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from weld_core.bag_types import DEFECT_LABEL, weld_typestore
from weld_core.classes import DEFAULT_CLASSES
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.stamps import stamp_to_ns
from weld_interfaces.msg import DefectLabel
from weld_interfaces.srv import (
    Capture,
    ExportSession,
    ListSessions,
    SetContinuousLabel,
    StartSession,
    StopSession,
)
from weld_labeler.recovery import BagMessage, iter_unfinished_bag, needs_recovery

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERA = [
    '-m',
    'weld_camera.camera_node',
    '--ros-args',
    '-p',
    'width:=160',
    '-p',
    'height:=120',
    '-p',
    'rate_hz:=20.0',
]
RGB, DEPTH = '/weld/rgb/image_raw', '/weld/depth/image_raw'


def labeler_args(tmp_path: Path, *params: str, name: str = 'weld_labeler') -> list[str]:
    args = ['-m', 'weld_labeler.labeler_node', '--ros-args', '-r', f'__node:={name}']
    defaults = [
        f'recording_dir:={tmp_path / "sessions"}',
        f'export_dir:={tmp_path / "exports"}',
        'min_free_space_mb:=0.0',
        'capture_timeout_s:=10.0',
        *params,
    ]
    for param in defaults:
        args += ['-p', param]
    return args


def call(ros_node: Any, service_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
    client = ros_node.node.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=20.0), f'no service {name}'
    future = client.call_async(request)
    ros_node.wait_for(future.done, timeout_s, f'the answer of {name}')
    return future.result()


def call_idempotent(ros_node: Any, service_type: Any, name: str, request: Any, tries: int = 8) -> Any:
    """Call a service whose request may be sent again, re-sending it after 5 s without an answer.

    Fast DDS drops an answer when the server has not yet matched the client's reply reader 100 ms
    after the request arrived (a fresh client and a freshly started, busy server); a request that
    changes nothing can simply be sent again.
    """
    for _ in range(tries):
        client = ros_node.node.create_client(service_type, name)
        assert client.wait_for_service(timeout_sec=20.0), f'no service {name}'
        future = client.call_async(request)
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        ros_node.node.destroy_client(client)
        if future.done():
            return future.result()
    raise AssertionError(f'no answer on {name} to {tries} requests')


def call_restarted(ros_node: Any, process: Any, service_type: Any, name: str, request: Any) -> Any:
    """Call a restarted labeler's idempotent service: until DDS notices that the killed labeler is
    gone, its stale endpoint makes the service look ready and a request sent before the new server
    is matched is lost."""
    ros_node.wait_for(
        lambda: 'labelling /weld' in process.output, 20.0, f'the labeler start\n{process.output}'
    )
    return call_idempotent(ros_node, service_type, name, request)


def cli(ros_env: dict[str, str], repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """weld-label under this interpreter (the board profile's Python in the board profile)."""
    return subprocess.run(
        [sys.executable, '-m', 'weld_labeler.cli', *args],
        cwd=repo_root,
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_bag(path: Path) -> tuple[dict[str, list[int]], list[DefectLabel]]:
    store = weld_typestore()
    stamps: dict[str, list[int]] = {}
    labels = []
    with Reader(path) as reader:
        for connection, timestamp, data in reader.messages():
            stamps.setdefault(connection.topic, []).append(timestamp)
            if connection.msgtype == DEFECT_LABEL:
                labels.append(store.deserialize_cdr(data, DEFECT_LABEL))
            elif connection.topic.endswith('/compressed'):
                assert rgb_from_msg(store.deserialize_cdr(data, connection.msgtype)).shape == (120, 160, 3)
            elif connection.topic.endswith('/compressedDepth'):
                assert depth_m_from_msg(store.deserialize_cdr(data, connection.msgtype)).max() > 0.05
    return stamps, labels


def _heard_labels(ros_node: Any, depth: int) -> list[DefectLabel]:
    """The label events on /weld/labels, collected as they arrive (reliable, ``depth`` queued)."""
    published: list[DefectLabel] = []
    ros_node.node.create_subscription(
        DefectLabel,
        '/weld/labels',
        published.append,
        QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE),
    )
    return published


def test_sim_camera_captures_of_every_class_are_recorded_and_exported(
    ros_node: Any, spawn_node: Any, ros_env: dict[str, str], repo_root: Path, tmp_path: Path
) -> None:
    spawn_node(CAMERA, name='camera')
    labeler = spawn_node(labeler_args(tmp_path, 'record_format:=compressed'), name='labeler')
    published = _heard_labels(ros_node, depth=50)
    ros_node.wait_for(lambda: ros_node.node.count_publishers('/weld/labels') > 0, 20.0, 'the labeler')

    started = cli(ros_env, repo_root, 'session', 'start', '--name', 'e2e plate', '--material', 'S235 6 mm')
    assert started.returncode == 0, started.stderr + labeler.output
    session_id = started.stdout.split()[2]
    first = cli(ros_env, repo_root, 'porosity', '--count', '2', '--note', 'seam 1')
    assert first.returncode == 0 and 'captured 2 porosity pair(s)' in first.stdout, (
        first.stderr + labeler.output
    )
    requested = {'porosity': 2}
    for index, label in enumerate(label for label in DEFAULT_CLASSES if label != 'porosity'):
        answer = call(
            ros_node, Capture, '/weld_labeler/capture', Capture.Request(label=label, count=index + 1)
        )
        assert answer.success and answer.captured == index + 1 and answer.session_id == session_id, (
            answer.message
        )
        requested[label] = index + 1

    listed = call(ros_node, ListSessions, '/weld_labeler/list_sessions', ListSessions.Request())
    assert listed.active_session_id == session_id and list(listed.pairs_recorded) == [sum(requested.values())]
    stopped = call(ros_node, StopSession, '/weld_labeler/stop_session', StopSession.Request())
    assert stopped.success and stopped.pairs_recorded == sum(requested.values()) == 12
    exported = cli(ros_env, repo_root, 'session', 'export', '--output-dir', str(tmp_path / 'desk'))
    assert exported.returncode == 0, exported.stderr
    archive = Path(exported.stdout.strip())
    assert archive == tmp_path / 'desk' / f'{session_id}.tar.gz'

    stamps, labels = read_bag(Path(stopped.bag_path))
    rgb = stamps[RGB + '/compressed']
    assert len(rgb) == len(stamps[DEPTH + '/compressedDepth']) == 12
    assert RGB not in stamps and len(stamps['/weld/rgb/camera_info']) == 12
    assert [stamp_to_ns(label.header.stamp) for label in labels] == rgb
    expected = [label for label, count in requested.items() for _ in range(count)]
    assert [label.label for label in labels] == expected
    assert labels[0].note == 'seam 1' and {label.session_id for label in labels} == {session_id}
    ros_node.wait_for(lambda: len(published) == 12, 10.0, 'every DefectLabel on /weld/labels')
    assert [(stamp_to_ns(m.header.stamp), m.label) for m in published] == list(
        zip(rgb, expected, strict=True)
    )
    assert published[0].header.frame_id == 'weld_camera_optical_frame'

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / 'unpacked', filter='data')
    assert read_bag(tmp_path / 'unpacked' / session_id)[0] == stamps
    session = yaml.safe_load((tmp_path / 'unpacked' / session_id / 'session.yaml').read_text())
    assert (
        session['name'] == 'e2e plate'
        and session['material'] == 'S235 6 mm'
        and session['state'] == 'stopped'
    )
    assert labeler.stop() == 0, labeler.output


def test_bad_requests_are_refused_without_side_effects(
    ros_node: Any, spawn_node: Any, ros_env: dict[str, str], repo_root: Path, tmp_path: Path
) -> None:
    labeler = spawn_node(
        labeler_args(tmp_path, 'capture_timeout_s:=1.0', 'max_capture_count:=5'), name='labeler'
    )
    strict = spawn_node(
        labeler_args(tmp_path / 'strict', 'auto_start_session:=false', name='strict_labeler'), name='strict'
    )

    def capture(label: str, count: int = 1) -> Capture.Response:
        return call_idempotent(
            ros_node, Capture, '/weld_labeler/capture', Capture.Request(label=label, count=count)
        )

    for label, count, expected in (
        ('bogus', 1, "unknown label 'bogus': give one of good, porosity, spatter, gap, undercut"),
        ('', 1, 'empty label: give one of good, porosity, spatter, gap, undercut'),
        ('good', 6, 'count 6 is beyond max_capture_count 5'),
        (
            'good',
            2,
            'nothing captured: no camera data on /weld/rgb/image_raw and /weld/depth/image_raw for 1 s',
        ),
    ):
        answer = capture(label, count)
        assert not answer.success and answer.captured == 0 and answer.message.startswith(expected), (
            answer.message
        )
    continuous = call_idempotent(
        ros_node,
        SetContinuousLabel,
        '/weld_labeler/set_continuous_label',
        SetContinuousLabel.Request(label='x'),
    )
    assert not continuous.success and 'unknown label' in continuous.message
    stop = call_idempotent(ros_node, StopSession, '/weld_labeler/stop_session', StopSession.Request())
    assert not stop.success and stop.message == 'no session is recording'
    export = call_idempotent(ros_node, ExportSession, '/weld_labeler/export_session', ExportSession.Request())
    assert not export.success and 'no stopped session' in export.message
    listed = call_idempotent(ros_node, ListSessions, '/weld_labeler/list_sessions', ListSessions.Request())
    assert list(listed.session_ids) == [] and listed.active_session_id == ''
    assert not any((tmp_path / 'sessions').iterdir()), 'a refused capture left a session behind'

    refused = cli(ros_env, repo_root, '--labeler', '/strict_labeler', 'gap', '-n', '2')
    assert refused.returncode == 1 and 'no session is recording: start one' in refused.stdout + refused.stderr
    unreachable = cli(ros_env, repo_root, '--labeler', '/nobody', '--wait-s', '1', 'session', 'list')
    assert unreachable.returncode == 2 and 'no labeler service /nobody/list_sessions' in unreachable.stderr
    assert labeler.alive() and strict.alive()
    assert labeler.stop() == 0 and strict.stop() == 0, labeler.output + strict.output


def test_cli_gives_up_on_an_answer_that_does_not_come(
    ros_node: Any, ros_env: dict[str, str], repo_root: Path
) -> None:
    def slow(request: ListSessions.Request, response: ListSessions.Response) -> ListSessions.Response:
        time.sleep(4.0)
        return response

    ros_node.node.create_service(ListSessions, '/slow_labeler/list_sessions', slow)
    started = time.monotonic()
    late = cli(ros_env, repo_root, '--labeler', '/slow_labeler', '--answer-s', '1', 'session', 'list')
    assert late.returncode == 2, late.stdout + late.stderr
    assert '/slow_labeler/list_sessions gave no answer within 1 s (--answer-s)' in late.stderr
    assert time.monotonic() - started < 30.0


def test_sigkill_mid_session_keeps_recorded_pairs_and_next_start_recovers_them(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    spawn_node(CAMERA, name='camera')
    first = spawn_node(labeler_args(tmp_path), name='killed')
    started = call(ros_node, StartSession, '/weld_labeler/start_session', StartSession.Request(name='killed'))
    assert started.success, first.output
    for label, count in (('porosity', 3), ('gap', 2)):
        answer = call(ros_node, Capture, '/weld_labeler/capture', Capture.Request(label=label, count=count))
        assert answer.captured == count, answer.message + first.output
    first.process.kill()
    first.process.wait(timeout=10)
    bag = Path(started.bag_path)
    assert needs_recovery(bag), 'the killed labeler had no chance to write metadata.yaml'

    store = weld_typestore()
    messages = [item for item in iter_unfinished_bag(bag) if isinstance(item, BagMessage)]
    rgb = [m.timestamp_ns for m in messages if m.topic == RGB]
    labels = [
        store.deserialize_cdr(bytes(m.data), DEFECT_LABEL) for m in messages if m.topic == '/weld/labels'
    ]
    assert len(rgb) == len([m for m in messages if m.topic == DEPTH]) == 5
    assert [stamp_to_ns(label.header.stamp) for label in labels] == rgb
    assert [label.label for label in labels] == ['porosity'] * 3 + ['gap'] * 2

    second = spawn_node(labeler_args(tmp_path), name='restarted')
    listed = call_restarted(
        ros_node, second, ListSessions, '/weld_labeler/list_sessions', ListSessions.Request()
    )
    assert list(listed.session_ids) == [started.session_id] and list(listed.pairs_recorded) == [5]
    assert f'recovery: {started.session_id}: recovered 5 pairs, 5 labels' in second.output
    stamps, recovered_labels = read_bag(bag)
    assert stamps[RGB] == rgb and [label.label for label in recovered_labels] == [
        label.label for label in labels
    ]
    assert yaml.safe_load((bag / 'session.yaml').read_text())['state'] == 'recovered'
    assert second.stop() == 0, second.output


def test_tiny_quota_stops_recording_cleanly_with_an_error_answer(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    spawn_node(CAMERA, name='camera')
    # a raw 160x120 pair is ~134 KB (rgb8 57.6 KB + 32FC1 76.8 KB): 0.3 MB holds two pairs, not three
    labeler = spawn_node(
        labeler_args(tmp_path, 'max_session_size_mb:=0.3', 'diagnostics_period_s:=0.2'), name='labeler'
    )
    diagnostics: list[DiagnosticArray] = []
    ros_node.node.create_subscription(
        DiagnosticArray, '/diagnostics', diagnostics.append, QoSProfile(depth=50)
    )
    started = call(ros_node, StartSession, '/weld_labeler/start_session', StartSession.Request(name='quota'))
    answer = call(ros_node, Capture, '/weld_labeler/capture', Capture.Request(label='spatter', count=5))
    assert answer.success and answer.captured == 2, answer.message
    assert 'captured 2 of 5' in answer.message and 'session size limit reached' in answer.message
    listed = call(ros_node, ListSessions, '/weld_labeler/list_sessions', ListSessions.Request())
    assert listed.active_session_id == '' and list(listed.pairs_recorded) == [2]
    stop = call(ros_node, StopSession, '/weld_labeler/stop_session', StopSession.Request())
    assert not stop.success and 'session size limit reached' in stop.message

    bag = Path(started.bag_path)
    stamps, labels = read_bag(bag)
    assert (
        len(stamps[RGB]) == len(stamps[DEPTH]) == 2
        and [stamp_to_ns(m.header.stamp) for m in labels] == stamps[RGB]
    )
    session = yaml.safe_load((bag / 'session.yaml').read_text())
    assert session['state'] == 'stopped' and 'session size limit' in session['stop_reason']

    def stopped_by_guard() -> bool:
        return any(s.level == DiagnosticStatus.ERROR for array in diagnostics for s in array.status)

    ros_node.wait_for(stopped_by_guard, 10.0, 'an ERROR diagnostic after the quota stop')
    status = next(s for array in diagnostics for s in array.status if s.level == DiagnosticStatus.ERROR)
    values = {kv.key: kv.value for kv in status.values}
    assert 'session size limit' in status.message and values['active_session'] == ''
    assert int(values['pairs_recorded']) == 2 and int(values['pairs_paired']) > 2
    assert {'frames_dropped_unpaired', 'free_space_mb', 'session_bytes_recorded'} <= set(values)
    assert labeler.stop() == 0, labeler.output


def test_continuous_mode_with_all_pairs_recorded(ros_node: Any, spawn_node: Any, tmp_path: Path) -> None:
    spawn_node(CAMERA, name='camera')
    labeler = spawn_node(labeler_args(tmp_path, 'record_all_pairs:=true', 'storage:=sqlite3'), name='labeler')
    published = _heard_labels(ros_node, depth=100)
    started = call(ros_node, StartSession, '/weld_labeler/start_session', StartSession.Request(name='scan'))
    assert started.success, started.message + labeler.output
    lister = ros_node.node.create_client(ListSessions, '/weld_labeler/list_sessions')

    def recorded() -> int:
        future = lister.call_async(ListSessions.Request())
        ros_node.wait_for(future.done, 10.0, 'the answer of list_sessions')
        listed = future.result()
        return dict(zip(listed.session_ids, listed.pairs_recorded, strict=True)).get(started.session_id, 0)

    # counted, not timed: a loaded machine delivers fewer than the camera's 20 Hz per second
    ros_node.wait_for(lambda: recorded() >= 20, 30.0, '20 unlabelled pairs recorded')
    setting = SetContinuousLabel.Request(label='undercut', note='seam 4')
    assert call(ros_node, SetContinuousLabel, '/weld_labeler/set_continuous_label', setting).success
    ros_node.wait_for(lambda: len(published) >= 12, 30.0, '12 continuous labels published')
    cleared = call(
        ros_node, SetContinuousLabel, '/weld_labeler/set_continuous_label', SetContinuousLabel.Request()
    )
    assert cleared.success and 'cleared' in cleared.message
    after_clear = recorded()
    ros_node.wait_for(lambda: recorded() >= after_clear + 10, 30.0, '10 more unlabelled pairs recorded')
    stopped = call(ros_node, StopSession, '/weld_labeler/stop_session', StopSession.Request())
    assert stopped.success, stopped.message + labeler.output
    stamps, labels = read_bag(Path(stopped.bag_path))
    assert next(Path(stopped.bag_path).glob('*.db3'))
    assert stopped.pairs_recorded == len(stamps[RGB]) >= 42
    assert 10 <= len(labels) < len(stamps[RGB]) and {m.label for m in labels} == {'undercut'}
    assert set(stamp_to_ns(m.header.stamp) for m in labels) <= set(stamps[RGB])
    assert started.success and labeler.stop() == 0, labeler.output


def test_pairs_within_the_slop_over_reliable_qos_are_labelled_with_the_rgb_stamp(
    ros_node: Any, spawn_node: Any, tmp_path: Path
) -> None:
    """Another driver: depth stamped 4 ms after rgb, 16UC1; the labeler subscribes RELIABLE."""
    publisher = [
        '-m', 'tests.labeler.frame_publisher', '--rate-hz', '20', '--width', '64', '--height', '48',
        '--depth-offset-ns', '4000000', '--depth-encoding', '16UC1', '--distinct-frames', '2',
    ]  # fmt: skip
    spawn_node(publisher, name='publisher')
    labeler = spawn_node(
        labeler_args(tmp_path, 'image_qos_reliability:=reliable', 'pair_slop_ms:=6.0'), name='labeler'
    )
    answer = call(ros_node, Capture, '/weld_labeler/capture', Capture.Request(label='gap', count=3, note='n'))
    assert answer.success and answer.captured == 3, answer.message + labeler.output
    # Ctrl-C with the auto-started session still open: the labeler closes the bag on its way out
    assert labeler.stop() == 0, labeler.output
    bag = tmp_path / 'sessions' / answer.session_id
    assert not needs_recovery(bag)
    session = yaml.safe_load((bag / 'session.yaml').read_text())
    assert (session['state'], session['stop_reason'], session['name']) == (
        'stopped',
        'labeler shut down',
        'auto',
    )
    store = weld_typestore()
    with Reader(bag) as reader:
        found = {c.topic: [] for c in reader.connections}
        for connection, timestamp, data in reader.messages():
            found[connection.topic].append((timestamp, store.deserialize_cdr(data, connection.msgtype)))
    rgb = [stamp_to_ns(m.header.stamp) for _, m in found[RGB]]
    depth = [stamp_to_ns(m.header.stamp) for _, m in found[DEPTH]]
    assert [d - r for r, d in zip(rgb, depth, strict=True)] == [4_000_000] * 3
    assert [stamp_to_ns(m.header.stamp) for _, m in found['/weld/labels']] == rgb
    assert found[DEPTH][0][1].encoding == '16UC1'
