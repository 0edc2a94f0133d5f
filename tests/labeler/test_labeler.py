"""The labeler core without ROS: captures, sessions, continuous mode, storage guard, recovery, export."""

import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from rosbags.rosbag2 import Reader

from tests.labeler.frames import camera_info_cdr, depth_cdr, rgb_cdr, stamp_of
from weld_core.bag_types import DEFECT_LABEL, weld_typestore
from weld_labeler.errors import SessionError, StorageFullError
from weld_labeler.labeler import CaptureOutcome, Labeler, LabelerConfig, LabelEvent
from weld_labeler.session import RECOVERED, STOPPED, SessionInfo, SessionStore


def make_labeler(tmp_path: Path, **overrides: object) -> tuple[Labeler, list[LabelEvent]]:
    settings = {
        'recording_dir': tmp_path / 'sessions',
        'export_dir': tmp_path / 'exports',
        'capture_timeout_s': 1.0,
        'min_free_space_mb': 0.0,
        **overrides,
    }
    events: list[LabelEvent] = []
    labeler = Labeler(LabelerConfig(**settings), publish=events.append)  # type: ignore[arg-type]
    labeler.start()
    return labeler, events


class Feeder:
    """Feeds frame pairs from a thread until stopped, like a 100 Hz camera."""

    def __init__(self, labeler: Labeler, depth: bool = True) -> None:
        self.labeler, self.depth, self.sent = labeler, depth, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.labeler.on_rgb_info(camera_info_cdr(stamp_of(0)))
        self.labeler.on_depth_info(camera_info_cdr(stamp_of(0)))
        while not self._stop.is_set():
            self.labeler.on_rgb(rgb_cdr(self.sent))
            if self.depth:
                self.labeler.on_depth(depth_cdr(self.sent))
            self.sent += 1
            time.sleep(0.01)

    def __enter__(self) -> 'Feeder':
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def capture(labeler: Labeler, label: str, count: int, note: str = '') -> CaptureOutcome:
    return labeler.capture(label, count, note)


def bag_labels(path: Path) -> tuple[list[int], list[tuple[int, str]]]:
    store = weld_typestore()
    rgb, labels = [], []
    with Reader(path) as reader:
        for connection, timestamp, data in reader.messages():
            if connection.msgtype == DEFECT_LABEL:
                message = store.deserialize_cdr(data, DEFECT_LABEL)
                labels.append(
                    (message.header.stamp.sec * 10**9 + message.header.stamp.nanosec, message.label)
                )
            elif connection.topic == '/weld/rgb/image_raw':
                rgb.append(timestamp)
    return rgb, labels


def test_captures_label_exactly_the_next_pairs_and_record_them(tmp_path: Path) -> None:
    labeler, events = make_labeler(tmp_path)
    session = labeler.start_session(SessionInfo(session_id='', name='plate 7', material='S235'))
    with Feeder(labeler):
        outcomes = [capture(labeler, label, 2, f'n-{label}') for label in ('good', 'porosity', 'gap')]
    assert [o.captured for o in outcomes] == [2, 2, 2] and all(o.success for o in outcomes)
    assert outcomes[0].session_id == session.session_id
    stopped = labeler.stop_session()
    assert stopped.pairs_recorded == 6 and stopped.label_counts == {'good': 2, 'porosity': 2, 'gap': 2}
    rgb, labels = bag_labels(labeler.store.bag_path(session.session_id))
    assert [stamp for stamp, _ in labels] == rgb
    assert [label for _, label in labels] == ['good'] * 2 + ['porosity'] * 2 + ['gap'] * 2
    assert [(e.stamp_ns, e.label) for e in events] == labels
    assert {e.note for e in events} == {'n-good', 'n-porosity', 'n-gap'}
    info = yaml.safe_load((labeler.store.bag_path(session.session_id) / 'session.yaml').read_text())
    assert info['state'] == STOPPED and info['material'] == 'S235' and info['name'] == 'plate 7'
    metadata = yaml.safe_load((labeler.store.bag_path(session.session_id) / 'metadata.yaml').read_text())
    assert metadata['rosbag2_bagfile_information']['custom_data']['weldvision.material'] == 'S235'


def test_capture_without_camera_data_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    labeler, events = make_labeler(tmp_path)
    outcome = capture(labeler, 'porosity', 3)
    assert not outcome.success and outcome.captured == 0
    assert (
        outcome.message
        == 'nothing captured: no camera data on /weld/rgb/image_raw and /weld/depth/image_raw for 1 s'
    )
    assert labeler.session is None and events == []
    assert list((tmp_path / 'sessions').iterdir()) == []


def test_capture_with_only_rgb_names_the_silent_depth_topic(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    labeler.start_session(SessionInfo(session_id=''))
    with Feeder(labeler, depth=False):
        outcome = capture(labeler, 'gap', 1)
    assert not outcome.success
    assert (
        'no camera data on /weld/depth/image_raw for 1 s (/weld/rgb/image_raw is arriving)' in outcome.message
    )
    assert labeler.stop_session().pairs_recorded == 0


def test_capture_auto_starts_a_session_or_refuses_when_told_not_to(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    with Feeder(labeler):
        outcome = capture(labeler, 'good', 1)
    assert outcome.success and 'auto-started' in outcome.message and outcome.session_id.endswith('_auto')
    strict, _ = make_labeler(tmp_path / 'strict', auto_start_session=False)
    refused = capture(strict, 'good', 1)
    assert not refused.success and refused.message.startswith('no session is recording: start one')
    assert strict.session is None


@pytest.mark.parametrize(
    ('label', 'count', 'match'),
    [('bogus', 1, 'unknown label'), ('', 1, 'empty label'), ('good', 101, 'max_capture_count')],
)
def test_bad_captures_are_refused_without_side_effects(
    tmp_path: Path, label: str, count: int, match: str
) -> None:
    labeler, _ = make_labeler(tmp_path)
    outcome = capture(labeler, label, count)
    assert not outcome.success and match in outcome.message and outcome.captured == 0
    assert labeler.session is None and list((tmp_path / 'sessions').iterdir()) == []


def test_session_size_limit_stops_recording_cleanly(tmp_path: Path) -> None:
    pair_bytes = len(rgb_cdr(0)) + len(depth_cdr(0)) + 2 * len(camera_info_cdr(0)) + 100
    labeler, _ = make_labeler(tmp_path, max_session_size_mb=2.5 * pair_bytes / (1024 * 1024))
    session = labeler.start_session(SessionInfo(session_id='', name='quota'))
    with Feeder(labeler):
        outcome = capture(labeler, 'spatter', 5)
        refused = capture(labeler, 'spatter', 1)
    assert outcome.success and outcome.captured == 2
    assert 'captured 2 of 5' in outcome.message and 'session size limit reached' in outcome.message
    assert refused.success and 'auto-started' in refused.message  # a new session, as the message says
    assert labeler.session is not None and labeler.session.session_id != session.session_id
    info = labeler.store.read_info(session.session_id)
    assert info.state == STOPPED and 'session size limit' in info.stop_reason and info.pairs_recorded == 2
    rgb, labels = bag_labels(labeler.store.bag_path(session.session_id))
    assert len(rgb) == 2 and [s for s, _ in labels] == rgb


def test_free_space_floor_refuses_to_start(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path, min_free_space_mb=1e9)
    with pytest.raises(StorageFullError, match='min_free_space_mb'):
        labeler.start_session(SessionInfo(session_id=''))
    outcome = capture(labeler, 'good', 1)
    assert not outcome.success and 'min_free_space_mb' in outcome.message


def test_continuous_mode_and_record_all_pairs(tmp_path: Path) -> None:
    labeler, events = make_labeler(tmp_path, record_all_pairs=True)
    session = labeler.start_session(SessionInfo(session_id=''))
    with Feeder(labeler) as feeder:
        time.sleep(0.15)
        assert labeler.set_continuous('undercut', 'seam 9').startswith('labelling every pair undercut')
        time.sleep(0.15)
        labeler.set_continuous('', '')
        time.sleep(0.1)
    stopped = labeler.stop_session()
    rgb, labels = bag_labels(labeler.store.bag_path(session.session_id))
    assert stopped.pairs_recorded == len(rgb) >= feeder.sent - 2
    assert 5 <= len(labels) < len(rgb) and {label for _, label in labels} == {'undercut'}
    assert set(s for s, _ in labels) <= set(rgb)
    assert all(e.note == 'seam 9' for e in events)


def test_concurrent_captures_get_disjoint_pairs(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    labeler.start_session(SessionInfo(session_id=''))
    with Feeder(labeler), ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(capture, labeler, label, 3) for label in ('good', 'gap', 'porosity')]
        outcomes = [future.result() for future in futures]
    assert all(o.captured == 3 for o in outcomes)
    session = labeler.stop_session()
    rgb, labels = bag_labels(labeler.store.bag_path(session.session_id))
    assert len(rgb) == 9 and len(set(s for s, _ in labels)) == 9


def test_session_control_errors(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    with pytest.raises(SessionError, match='no session is recording'):
        labeler.stop_session()
    with pytest.raises(SessionError, match='no stopped session'):
        labeler.export('', '')
    first = labeler.start_session(SessionInfo(session_id='', name='a'))
    with pytest.raises(SessionError, match='is recording: stop it first'):
        labeler.start_session(SessionInfo(session_id='', name='b'))
    with pytest.raises(SessionError, match='still recording'):
        labeler.export(first.session_id, '')
    with pytest.raises(SessionError, match='no session'):
        labeler.export('20000101-000000_nothing', '')


def test_export_unpacks_to_the_same_bag(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    session = labeler.start_session(SessionInfo(session_id='', name='exp'))
    with Feeder(labeler):
        capture(labeler, 'gap', 3)
    labeler.stop_session()
    archive = labeler.export('', '')
    assert archive == tmp_path / 'exports' / f'{session.session_id}.tar.gz'
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / 'unpacked', filter='data')
    assert bag_labels(tmp_path / 'unpacked' / session.session_id) == bag_labels(
        labeler.store.bag_path(session.session_id)
    )
    assert [info.session_id for info in labeler.sessions()] == [session.session_id]


def test_unfinished_session_is_recovered_at_start(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    session = labeler.start_session(SessionInfo(session_id='', name='crash', operator_name='ana'))
    with Feeder(labeler):
        capture(labeler, 'porosity', 4)
    # what a killed process leaves: the bag without summary and metadata.yaml, session.yaml 'recording'
    labeler._recorder = None
    labeler.session = None
    bag = labeler.store.bag_path(session.session_id)
    assert not (bag / 'metadata.yaml').exists()

    restarted, _ = make_labeler(tmp_path)
    info = SessionStore(tmp_path / 'sessions').read_info(session.session_id)
    assert info.state == RECOVERED and info.pairs_recorded == 4 and info.label_counts == {'porosity': 4}
    assert info.operator_name == 'ana'
    rgb, labels = bag_labels(bag)
    assert len(rgb) == 4 and [s for s, _ in labels] == rgb
    assert restarted.export(session.session_id, str(tmp_path / 'out')).exists()


def test_a_bag_killed_before_its_session_file_is_still_recovered(tmp_path: Path) -> None:
    labeler, _ = make_labeler(tmp_path)
    session = labeler.start_session(SessionInfo(session_id='', name='early'))
    with Feeder(labeler):
        capture(labeler, 'good', 2)
    labeler._recorder = None
    labeler.session = None
    bag = labeler.store.bag_path(session.session_id)
    (bag / 'session.yaml').unlink()

    make_labeler(tmp_path)
    info = SessionStore(tmp_path / 'sessions').read_info(session.session_id)
    assert info.state == RECOVERED and info.pairs_recorded == 2 and info.label_counts == {'good': 2}
    assert len(bag_labels(bag)[0]) == 2
