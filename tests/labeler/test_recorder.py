"""BagRecorder and recovery without ROS: bags read back with rosbags, crash leftovers rebuilt."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from tests.labeler.frames import (
    FRAME_ID,
    camera_info_cdr,
    depth_array,
    depth_cdr,
    rgb_array,
    rgb_cdr,
    stamp_of,
)
from weld_core.bag_types import DEFECT_LABEL, weld_typestore
from weld_core.errors import ImageFormatError
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_labeler.errors import RecorderError
from weld_labeler.recorder import BagRecorder, PairLabel
from weld_labeler.recovery import ScanReport, iter_unfinished_bag, needs_recovery, recover_bag


def write_pairs(recorder: BagRecorder, count: int, labelled: set[int]) -> None:
    for index in range(count):
        stamp = stamp_of(index)
        label = (
            PairLabel('porosity' if index % 2 else 'gap', 'sess', f'note {index}')
            if index in labelled
            else None
        )
        prepared = recorder.prepare_pair(
            rgb_cdr(index),
            depth_cdr(index),
            stamp,
            FRAME_ID,
            camera_info_cdr(stamp),
            camera_info_cdr(stamp),
            label,
        )
        recorder.write(prepared)


def assert_valid_rosbag2_metadata(bag: Path, storage: str, messages: int) -> None:
    """The metadata.yaml keys `ros2 bag info` (Humble and later) reads, consistent with the data file."""
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == storage
    (data_file,) = info['relative_file_paths']
    assert (bag / data_file).is_file() and data_file.endswith('.mcap' if storage == 'mcap' else '.db3')
    assert (
        info['message_count']
        == messages
        == sum(t['message_count'] for t in info['topics_with_message_count'])
    )
    for topic in info['topics_with_message_count']:
        assert isinstance(topic['topic_metadata']['offered_qos_profiles'], str)  # Humble parses a string
        assert topic['topic_metadata']['serialization_format'] == 'cdr'
    assert info['duration']['nanoseconds'] >= 0 and info['starting_time']['nanoseconds_since_epoch'] > 0


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    store = weld_typestore()
    found: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for connection, timestamp, data in reader.messages():
            found.setdefault(connection.topic, []).append(
                (timestamp, store.deserialize_cdr(data, connection.msgtype))
            )
    return found


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_raw_round_trip_holds_pairs_infos_and_labels(tmp_path: Path, storage: str) -> None:
    recorder = BagRecorder(tmp_path / 'bag', storage=storage)
    recorder.open()
    write_pairs(recorder, 6, labelled={1, 2, 4})
    recorder.close({'weldvision.name': 'plate 7'})

    metadata = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert_valid_rosbag2_metadata(tmp_path / 'bag', storage, messages=6 * 4 + 3)
    assert metadata['custom_data'] == {'weldvision.name': 'plate 7'}
    found = read_bag(tmp_path / 'bag')
    assert len(found['/weld/rgb/image_raw']) == len(found['/weld/depth/image_raw']) == 6
    assert len(found['/weld/rgb/camera_info']) == len(found['/weld/depth/camera_info']) == 6
    rgb_stamps = [timestamp for timestamp, _ in found['/weld/rgb/image_raw']]
    assert rgb_stamps == [stamp_of(index) for index in range(6)]
    labels = found['/weld/labels']
    assert [(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec) for _, m in labels] == [
        stamp_of(i) for i in (1, 2, 4)
    ]
    assert [m.label for _, m in labels] == ['porosity', 'gap', 'gap']
    assert [m.note for _, m in labels] == ['note 1', 'note 2', 'note 4']
    assert all(m.header.frame_id == FRAME_ID and m.session_id == 'sess' for _, m in labels)
    first_rgb = found['/weld/rgb/image_raw'][2][1]
    np.testing.assert_array_equal(rgb_from_msg(first_rgb), rgb_array(2))
    np.testing.assert_array_equal(depth_m_from_msg(found['/weld/depth/image_raw'][2][1]), depth_array(2))
    assert recorder.label_counts == {'gap': 2, 'porosity': 1}


@pytest.mark.parametrize('depth_encoding', ['32FC1', '16UC1'])
def test_compressed_format_writes_jpeg_and_compressed_depth(tmp_path: Path, depth_encoding: str) -> None:
    recorder = BagRecorder(tmp_path / 'bag', record_format='compressed')
    recorder.open()
    stamp = stamp_of(3)
    prepared = recorder.prepare_pair(
        rgb_cdr(3), depth_cdr(3, encoding=depth_encoding), stamp, FRAME_ID, label=PairLabel('undercut', 's')
    )
    recorder.write(prepared)
    recorder.close()
    found = read_bag(tmp_path / 'bag')
    assert '/weld/rgb/image_raw' not in found
    ((rgb_stamp, rgb_msg),) = found['/weld/rgb/image_raw/compressed']
    ((_, depth_msg),) = found['/weld/depth/image_raw/compressedDepth']
    assert rgb_stamp == stamp and rgb_msg.format == 'rgb8; jpeg compressed bgr8'
    assert depth_msg.format == f'{depth_encoding}; compressedDepth png'
    assert np.abs(rgb_from_msg(rgb_msg).astype(int) - rgb_array(3).astype(int)).mean() < 3
    np.testing.assert_allclose(depth_m_from_msg(depth_msg), depth_array(3), atol=1e-3)
    assert rgb_msg.header.stamp.sec * 10**9 + rgb_msg.header.stamp.nanosec == stamp


def test_bad_frame_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    recorder = BagRecorder(tmp_path / 'bag', record_format='compressed')
    recorder.open()
    with pytest.raises(ImageFormatError):
        recorder.prepare_pair(b'\x00\x01\x00\x00' + b'\x00' * 40, depth_cdr(0), stamp_of(0), FRAME_ID)
    assert recorder.pairs_written == 0
    recorder.close()
    with Reader(tmp_path / 'bag') as reader:
        assert reader.message_count == 0


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecorderError, match='storage'):
        BagRecorder(tmp_path / 'a', storage='rosbag1')
    with pytest.raises(RecorderError, match='record_format'):
        BagRecorder(tmp_path / 'a', record_format='png')
    (tmp_path / 'exists').mkdir()
    with pytest.raises(RecorderError, match='cannot create bag'):
        BagRecorder(tmp_path / 'exists').open()


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from tests.labeler.test_recorder import write_pairs
from weld_labeler.recorder import BagRecorder
recorder = BagRecorder(Path(sys.argv[1]), storage=sys.argv[2])
recorder.open()
write_pairs(recorder, 5, labelled={0, 3})
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_pairs_written_before_sigkill_are_readable_and_recovered(
    tmp_path: Path, storage: str, repo_root: Path
) -> None:
    bag = tmp_path / 'bag'
    result = subprocess.run(
        [sys.executable, '-c', KILLED_WRITER, str(bag), storage], cwd=repo_root, check=False
    )
    assert result.returncode == -signal.SIGKILL
    assert needs_recovery(bag)
    (bag / 'session.yaml').write_text('session_id: x\n')

    report = ScanReport()
    items = list(iter_unfinished_bag(bag, report))
    assert report.topics == {
        '/weld/rgb/image_raw': 5,
        '/weld/depth/image_raw': 5,
        '/weld/rgb/camera_info': 5,
        '/weld/depth/camera_info': 5,
        '/weld/labels': 2,
    }
    assert len(items) == 5 + 22

    recovered = recover_bag(bag, {'weldvision.state': 'recovered'})
    assert recovered.messages == 22
    assert not needs_recovery(bag)
    assert_valid_rosbag2_metadata(bag, storage, messages=22)
    assert (bag / 'session.yaml').read_text() == 'session_id: x\n'
    assert not (tmp_path / '.recovering' / 'bag').exists()
    found = read_bag(bag)
    assert [t for t, _ in found['/weld/rgb/image_raw']] == [stamp_of(i) for i in range(5)]
    assert [m.label for _, m in found['/weld/labels']] == ['gap', 'porosity']
    np.testing.assert_array_equal(rgb_from_msg(found['/weld/rgb/image_raw'][4][1]), rgb_array(4))


def test_truncated_mcap_is_read_up_to_its_last_complete_pair(tmp_path: Path) -> None:
    bag = tmp_path / 'bag'
    recorder = BagRecorder(bag)
    recorder.open()
    write_pairs(recorder, 3, labelled={2})
    data_file = bag / 'bag.mcap'
    size_after_three = data_file.stat().st_size
    write_pairs(recorder, 4, labelled=set())  # stamps repeat; only the count matters here
    full = data_file.read_bytes()
    os.truncate(data_file, size_after_three + (len(full) - size_after_three) // 8)  # mid-way into pair 4

    report = ScanReport()
    messages = [item for item in iter_unfinished_bag(bag, report) if hasattr(item, 'data')]
    assert report.topics['/weld/rgb/image_raw'] == 3
    assert report.topics['/weld/labels'] == 1
    assert report.readable_bytes == size_after_three
    assert len(messages) == 13
    recover_bag(bag)
    with Reader(bag) as reader:
        assert reader.message_count == 13


def test_label_serialisation_matches_the_typestore(tmp_path: Path) -> None:
    recorder = BagRecorder(tmp_path / 'bag')
    data = recorder.serialize_label(PairLabel('good', 's1', 'n'), stamp_of(9), 'cam')
    message = weld_typestore().deserialize_cdr(data, DEFECT_LABEL)
    assert (message.label, message.session_id, message.note, message.header.frame_id) == (
        'good',
        's1',
        'n',
        'cam',
    )
    assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == stamp_of(9)


def test_depth_png_level_trades_size_for_time_not_values(tmp_path: Path) -> None:
    sizes = {}
    for level in (0, 1):
        recorder = BagRecorder(tmp_path / f'bag{level}', record_format='compressed', depth_png_level=level)
        recorder.open()
        prepared = recorder.prepare_pair(rgb_cdr(1), depth_cdr(1), stamp_of(1), FRAME_ID)
        recorder.write(prepared)
        recorder.close()
        ((_, depth_msg),) = read_bag(tmp_path / f'bag{level}')['/weld/depth/image_raw/compressedDepth']
        np.testing.assert_allclose(depth_m_from_msg(depth_msg), depth_array(1), atol=1e-3)
        sizes[level] = len(depth_msg.data)
    assert sizes[1] < sizes[0]
    with pytest.raises(RecorderError, match='depth_png_level'):
        BagRecorder(tmp_path / 'x', depth_png_level=10)
