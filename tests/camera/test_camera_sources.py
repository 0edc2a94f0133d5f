"""The frame sources without ROS: relay pairing and normalisation, bag replay, simulator rendering."""

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin

from tests.camera.bags import LABELS, frame_arrays, write_bag, write_labeler_bag
from tests.core.yuv import blocky_rgb, nv12_from_rgb
from weld_camera.errors import SourceError
from weld_camera.sources import RelayPairer, ReplaySource, SimSource, depth_fields, rgb_fields
from weld_core.images import (
    array_to_image,
    compress_depth,
    compress_rgb,
    depth_m_from_msg,
    depth_m_to_image,
    image_to_array,
)

MS = 1_000_000


def _msg(fields, stamp_ns: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        **fields.as_kwargs(), header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=stamp_ns))
    )


def _as_array(fields) -> np.ndarray:
    return image_to_array(SimpleNamespace(**fields.as_kwargs()))


def test_rgb_and_depth_are_normalised_to_the_output_encodings() -> None:
    rgb, depth = frame_arrays(3)
    bgr_msg = _msg(array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), 'bgr8'))
    assert np.array_equal(_as_array(rgb_fields(bgr_msg)), rgb)
    jpeg_free = _msg(compress_rgb(rgb, 'png'))
    assert np.array_equal(_as_array(rgb_fields(jpeg_free)), rgb)
    assert np.array_equal(_as_array(rgb_fields(rgb[:, :, ::-1].copy())), rgb)  # an OpenCV BGR array

    mm_msg = _msg(depth_m_to_image(depth, '16UC1'))
    metres = _as_array(depth_fields(mm_msg, '32FC1'))
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres, depth, atol=0.0005)
    compressed = _msg(compress_depth(depth, '32FC1'))
    np.testing.assert_allclose(_as_array(depth_fields(compressed, '16UC1')), np.rint(depth * 1000), atol=1)


def test_matching_encodings_pass_through_without_conversion() -> None:
    rgb, depth = frame_arrays(1)
    fields = array_to_image(rgb, 'rgb8')
    assert rgb_fields(_msg(fields)) == fields
    depth_image = depth_m_to_image(depth, '32FC1')
    assert depth_fields(_msg(depth_image), '32FC1') == depth_image


def test_vendor_encodings_mono16_depth_and_nv12_colour() -> None:
    """D-Robotics' stereo node: mono16 millimetres (passed through as 16UC1 bytes) and nv12 colour."""
    _, depth = frame_arrays(2)
    mono16 = depth_m_to_image(depth, 'mono16')
    passed = depth_fields(_msg(mono16), '16UC1')
    assert passed.encoding == '16UC1' and passed.data == mono16.data
    np.testing.assert_allclose(_as_array(depth_fields(_msg(mono16), '32FC1')), depth, atol=0.0005)
    rgb = blocky_rgb(48, 64, seed=2)
    nv12 = SimpleNamespace(
        height=48, width=64, encoding='nv12', is_bigendian=0, step=64, data=nv12_from_rgb(rgb)
    )
    colour = rgb_fields(nv12)
    assert colour.encoding == 'rgb8' and (colour.width, colour.height) == (64, 48)
    assert int(np.abs(_as_array(colour).astype(int) - rgb.astype(int)).max()) <= 3


def test_relay_pairs_offset_streams_and_counts_unpairable_frames() -> None:
    relay = RelayPairer('32FC1', slop_ns=15 * MS)
    out = []
    expected = []
    for i in range(10):
        stamp = 1_000 * MS + i * 50 * MS
        rgb, depth = frame_arrays(i)
        out += relay.add_rgb(stamp, _msg(array_to_image(rgb, 'rgb8'), stamp))
        if i % 4 == 3:
            # this rgb gets no partner; a stray depth frame far from any rgb arrives instead
            out += relay.add_depth(stamp + 25 * MS, _msg(depth_m_to_image(depth, '16UC1')))
            continue
        out += relay.add_depth(stamp + 4 * MS, _msg(depth_m_to_image(depth, '16UC1')))
        expected.append(stamp)
    assert [frame.stamp_ns for frame in out] == expected
    assert relay.pairer.stats.paired == len(expected)
    assert relay.dropped >= 2 * 2  # two unpaired rgb and two stray depth frames expired (the last may wait)
    first = out[0]
    assert first.rgb.encoding == 'rgb8' and first.depth.encoding == '32FC1'
    np.testing.assert_allclose(_as_array(first.depth), frame_arrays(0)[1], atol=0.0005)


def test_relay_rejects_depth_not_registered_to_the_colour_image() -> None:
    relay = RelayPairer('32FC1', slop_ns=15 * MS)
    reasons: list[str] = []
    relay.on_reject = reasons.append
    rgb, _ = frame_arrays(0, 64, 48)
    relay.add_rgb(0, _msg(array_to_image(rgb, 'rgb8')))
    assert relay.add_depth(0, _msg(depth_m_to_image(np.ones((24, 32), np.float32), '32FC1'))) == []
    assert relay.stats.rejected == 1
    assert 'not registered' in reasons[0]


def _drain(source) -> list:
    stop = threading.Event()
    source.start()
    frames = []
    while (frame := source.get(stop)) is not None:
        frames.append(frame)
        if len(frames) > 100:
            break
    source.stop()
    return frames


@pytest.mark.parametrize(
    ('compressed', 'storage'), [(False, StoragePlugin.MCAP), (True, StoragePlugin.SQLITE3)]
)
def test_replay_of_a_rosbags_bag(tmp_path: Path, compressed: bool, storage: StoragePlugin) -> None:
    stamps = write_bag(
        tmp_path / 'bag', 6, 40 * MS, compressed=compressed, storage=storage, depth_offset_ns=2 * MS
    )
    source = ReplaySource(tmp_path / 'bag', '32FC1', rate_hz=None, loop=False, slop_ns=15 * MS)
    frames = _drain(source)
    source.close()
    assert [f.stamp_ns for f in frames] == stamps
    assert [f.due_ns for f in frames] == [i * 40 * MS for i in range(6)]
    assert [f.label for f in frames] == [LABELS[i % 5] for i in range(6)]
    assert frames[0].intrinsics is not None and frames[0].intrinsics.k[0] == 80.0
    for index, frame in enumerate(frames):
        rgb, depth = frame_arrays(index)
        assert np.array_equal(_as_array(frame.rgb), rgb)
        np.testing.assert_allclose(_as_array(frame.depth), depth, atol=0.0006)


def test_replay_loops_with_increasing_due_times(tmp_path: Path) -> None:
    write_bag(tmp_path / 'bag', 3, 50 * MS)
    source = ReplaySource(tmp_path / 'bag', '16UC1', rate_hz=None, loop=True, slop_ns=15 * MS)
    stop = threading.Event()
    source.start()
    frames = [source.get(stop) for _ in range(7)]
    source.close()
    due = [f.due_ns for f in frames]
    assert due == [0, 50 * MS, 100 * MS, 150 * MS, 200 * MS, 250 * MS, 300 * MS]
    assert source.loops >= 2


def test_replay_of_a_bag_from_the_labeler_recorder(tmp_path: Path) -> None:
    pytest.importorskip('weld_labeler.recorder', reason='weld_labeler recorder not installed')
    stamps = write_labeler_bag(tmp_path / 'session', 5, 100 * MS, 'compressed')
    source = ReplaySource(tmp_path / 'session', '32FC1', rate_hz=10.0, loop=False, slop_ns=15 * MS)
    frames = _drain(source)
    source.close()
    assert [f.stamp_ns for f in frames] == stamps
    assert [f.due_ns for f in frames] == [None] * 5  # a fixed rate: the pacer schedules
    assert [f.label for f in frames] == [LABELS[i] for i in range(5)]
    np.testing.assert_allclose(_as_array(frames[2].depth), frame_arrays(2)[1], atol=0.0005)


def test_replay_explains_a_bag_without_camera_topics(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Writer

    from weld_core.bag_types import DEFECT_LABEL, weld_typestore

    with Writer(tmp_path / 'labels_only', version=9) as writer:
        writer.add_connection('/weld/labels', DEFECT_LABEL, typestore=weld_typestore())
    with pytest.raises(SourceError, match=r'no colour topic .* its topics: /weld/labels'):
        ReplaySource(tmp_path / 'labels_only', '32FC1', rate_hz=None, loop=False, slop_ns=0)
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'metadata.yaml').write_text('not: a bag\n')
    with pytest.raises(SourceError, match='cannot read bag'):
        ReplaySource(tmp_path / 'broken', '32FC1', rate_hz=None, loop=False, slop_ns=0)


@pytest.mark.parametrize('workers', [0, 2])
def test_sim_source_gives_the_simulator_frames_in_order(workers: int) -> None:
    from weld_camera.sim import SimConfig, WeldSimulator

    source = SimSource(96, 64, seed=7, depth_encoding='16UC1', prefetch_frames=2, render_workers=workers)
    stop = threading.Event()
    source.start()
    frames = [source.get(stop) for _ in range(4)]
    counters = source.counters()
    source.close()
    reference = WeldSimulator(SimConfig(width=96, height=64, seed=7))
    for index, frame in enumerate(frames):
        expected = reference.render(index)
        assert frame.label == expected.label
        assert np.array_equal(_as_array(frame.rgb), expected.rgb)
        np.testing.assert_allclose(_as_array(frame.depth), np.rint(expected.depth_m * 1000), atol=0)
        assert frame.intrinsics.k[0] == pytest.approx(expected.camera_info.fx)
    assert counters['rendered'] >= 4
    assert counters['render_cpu_s'] > 0


def test_sim_source_rejects_settings_the_simulator_cannot_render() -> None:
    with pytest.raises(SourceError, match='simulator rejected'):
        SimSource(96, 64, seed=0, depth_encoding='32FC1', class_mix={'good': 0.0})


def test_depth_round_trip_reference() -> None:
    _, depth = frame_arrays(2)
    np.testing.assert_allclose(depth_m_from_msg(_msg(depth_m_to_image(depth, '16UC1'))), depth, atol=0.0005)


def _write_video(path: Path, frames: int) -> list[np.ndarray]:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 30.0, (64, 48))
    colours = []
    for index in range(frames):
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[...] = (40 + 20 * index, 100, 220 - 20 * index)
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        colours.append(rgb)
    writer.release()
    return colours


@pytest.mark.parametrize('with_depth', [False, True])
def test_device_source_pairs_captured_colour_with_depth(tmp_path: Path, with_depth: bool) -> None:
    from weld_camera.sources import DeviceSource

    colours = _write_video(tmp_path / 'camera.avi', 6)
    emitted, errors = [], []
    stamps = iter(range(1_000 * MS, 2_000 * MS, 33 * MS))
    relay = RelayPairer('16UC1', slop_ns=15 * MS)
    source = DeviceSource(
        str(tmp_path / 'camera.avi'),
        64,
        48,
        30.0,
        relay,
        with_depth=with_depth,
        emit=emitted.append,
        on_error=errors.append,
        clock_ns=lambda: next(stamps),
    )
    if with_depth:
        for index in range(6):  # the depth driver's frames, 2 ms after each colour grab
            source.add_depth(
                1_000 * MS + index * 33 * MS + 2 * MS,
                _msg(depth_m_to_image(frame_arrays(index, 64, 48)[1], '32FC1')),
            )
    source.start()
    deadline = threading.Event()
    for _ in range(100):
        if len(emitted) >= 6 or errors:
            break
        deadline.wait(0.05)
    source.close()
    assert len(emitted) == 6, errors
    assert [f.stamp_ns for f in emitted] == [1_000 * MS + i * 33 * MS for i in range(6)]
    for frame, colour in zip(emitted, colours, strict=True):
        assert np.abs(_as_array(frame.rgb).astype(int) - colour).mean() < 6  # MJPG is lossy
        depth_mm = _as_array(frame.depth)
        assert frame.depth.encoding == '16UC1'
        assert (depth_mm.max() > 0) == with_depth  # no depth sensor: 0 everywhere (no data)


def test_device_source_reports_a_missing_camera() -> None:
    from weld_camera.sources import DeviceSource

    with pytest.raises(SourceError, match='no colour camera at device index 63'):
        DeviceSource(63, 64, 48, 30.0, RelayPairer('32FC1', 0), with_depth=False, emit=print, on_error=print)
