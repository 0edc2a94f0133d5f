"""convert: every bag form of the contract, plain and labeler bags, bad input reported, splits by session."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.training.bagmaker import make_frames, write_bag
from training.convert import convert
from training.data import FrameStore
from training.errors import BagError, DatasetError
from training.splits import split_sessions

LABELS = ['good', 'porosity', 'spatter', 'gap', 'undercut', 'good']


@pytest.mark.parametrize(
    ('rgb_form', 'depth_form', 'storage'),
    [
        ('raw', 'raw32', 'mcap'),
        ('bgr', 'raw16', 'sqlite3'),
        ('jpeg', 'compressed32', 'mcap'),
        ('png', 'compressed16', 'sqlite3'),
    ],
)
def test_every_form_converts_to_the_same_arrays(
    tmp_path: Path, rgb_form: str, depth_form: str, storage: str
) -> None:
    frames = make_frames(LABELS)
    write_bag(
        tmp_path / 'bag', frames, session_id='s1', rgb_form=rgb_form, depth_form=depth_form, storage=storage
    )
    report = convert([tmp_path / 'bag'], tmp_path / 'ds', progress=False, workers=1)
    assert report.frames == len(LABELS)
    assert report.per_class == {'good': 2, 'porosity': 1, 'spatter': 1, 'gap': 1, 'undercut': 1}
    assert report.skipped == [] and report.failed_bags == []
    store = FrameStore(tmp_path / 'ds')
    by_stamp = {f.stamp_ns: f for f in frames}
    for entry in store.frames:
        rgb, depth = store.pair(entry)
        source = by_stamp[entry['stamp_ns']]
        assert entry['label'] == source.label and entry['session'] == 's1'
        # JPEG of a noisy image: a few grey levels off on average; every lossless form is exact
        rgb_error = np.abs(rgb.astype(int) - source.rgb.astype(int)).mean()
        assert rgb_error <= (6.0 if rgb_form == 'jpeg' else 0.0)
        # 16UC1 keeps whole millimetres, 32FC1 compressedDepth about 4 um at 0.1 m
        depth_tolerance = {'raw32': 0.0, 'compressed32': 1e-5, 'raw16': 5e-4, 'compressed16': 5e-4}[
            depth_form
        ]
        assert np.all((depth == 0) == (source.depth_m == 0))
        assert np.abs(depth - source.depth_m).max() <= depth_tolerance + 1e-9


def test_plain_record_bag_with_unlabelled_frames_and_skewed_stamps(tmp_path: Path) -> None:
    labels: list[str | None] = ['good', None, 'gap', None, 'undercut']
    frames = make_frames(labels)
    write_bag(tmp_path / 'rec', frames, session_id='', prefix='/camera', depth_skew_ns=4_000_000, zstd=True)
    report = convert([tmp_path / 'rec'], tmp_path / 'ds', progress=False, workers=1)
    assert report.frames == 3
    assert report.unlabelled == 2
    manifest = json.loads((tmp_path / 'ds' / 'manifest.json').read_text())
    # no session id in the labels: the bag's name stands in
    assert {f['session'] for f in manifest['frames']} == {'rec'}
    assert manifest['split']['mode'] == 'single-session-time-blocks'


def test_tar_gz_session_and_several_bags_in_parallel(tmp_path: Path) -> None:
    for index in range(3):
        write_bag(tmp_path / f'b{index}', make_frames(LABELS, seed=index), session_id=f's{index}')
    archive = tmp_path / 's0.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(tmp_path / 'b0', arcname='b0')
    report = convert([archive, tmp_path / 'b1', tmp_path / 'b2'], tmp_path / 'ds', progress=False, workers=2)
    assert report.frames == 3 * len(LABELS)
    assert set(report.per_session) == {'s0', 's1', 's2'}
    again = convert([archive, tmp_path / 'b1', tmp_path / 'b2'], tmp_path / 'ds2', progress=False, workers=1)
    assert again.digest == report.digest


def test_corrupt_bag_converts_partially_with_a_report(tmp_path: Path) -> None:
    frames = make_frames(['good', 'gap'] * 10)
    bag = write_bag(tmp_path / 'bad', frames, session_id='s1', rgb_form='raw', depth_form='raw32')
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) * 2 // 3])  # recording cut off: no summary, half the chunks
    write_bag(tmp_path / 'good', make_frames(['porosity'] * 4, seed=3), session_id='s2')
    report = convert([bag, tmp_path / 'good'], tmp_path / 'ds', progress=False, workers=1)
    assert report.per_session['s2']['porosity'] == 4
    assert report.failed_bags or report.skipped, 'the damage must be reported'
    assert 0 <= report.per_session.get('s1', {}).get('good', 0) < 10


def test_undecodable_frame_is_skipped_with_a_reason(tmp_path: Path) -> None:
    frames = make_frames(['good', 'gap', 'undercut'])
    bag = write_bag(tmp_path / 'b', frames, session_id='s1', rgb_form='jpeg')
    # damage one JPEG in place: same length, so the container stays valid
    mcap = next(bag.glob('*.mcap'))
    data = bytearray(mcap.read_bytes())
    start = data.find(b'\xff\xd8\xff')
    data[start : start + 400] = bytes(400)
    mcap.write_bytes(bytes(data))
    report = convert([bag], tmp_path / 'ds', progress=False, workers=1)
    assert report.frames == 2
    assert len(report.skipped) == 1 and 'undecodable' in report.skipped[0]['reason']


def test_missing_or_empty_sources_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match='does not exist'):
        convert([tmp_path / 'nope'], tmp_path / 'ds', progress=False)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='no rosbag2 directory'):
        convert([tmp_path / 'empty'], tmp_path / 'ds', progress=False)
    write_bag(tmp_path / 'unlabelled', make_frames([None, None]))
    with pytest.raises(DatasetError, match='no labelled frame pairs'):
        convert([tmp_path / 'unlabelled'], tmp_path / 'ds', progress=False, workers=1)


def test_session_split_is_grouped_reproducible_and_stratified() -> None:
    from collections import Counter

    classes = ('good', 'porosity', 'spatter', 'gap', 'undercut')
    rng = np.random.default_rng(0)
    counts = {
        f's{i}': Counter(dict(zip(classes, rng.integers(5, 30, 5).tolist(), strict=True))) for i in range(8)
    }
    first = split_sessions(counts, classes, 0.15, 0.25, seed=1)
    assert first == split_sessions(counts, classes, 0.15, 0.25, seed=1)
    assert sorted(Counter(first.values()).items()) == [('test', 2), ('train', 5), ('val', 1)]
    two = split_sessions({k: counts[k] for k in ('s0', 's1')}, classes, 0.15, 0.25, seed=0)
    assert sorted(two.values()) == ['train', 'val']


def test_command_line_reports_counts_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.convert import main

    write_bag(tmp_path / 'b', make_frames(['good', None, 'gap']), session_id='s1')
    assert main([str(tmp_path / 'b'), '-o', str(tmp_path / 'ds'), '--quiet', '--workers', '1']) == 0
    out = capsys.readouterr().out
    assert '2 labelled frame pairs' in out and 'unlabelled 1' in out and 'session s1: good 1' in out
    assert main([str(tmp_path / 'missing'), '-o', str(tmp_path / 'ds2'), '--quiet']) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_camera_intrinsics_are_kept_per_bag_in_the_arrays_pixels(tmp_path: Path) -> None:
    write_bag(tmp_path / 'cam', make_frames(LABELS), session_id='s1', fx=250.0)
    write_bag(tmp_path / 'nocam', make_frames(LABELS, seed=1), session_id='s2', fx=None)
    convert([tmp_path / 'cam', tmp_path / 'nocam'], tmp_path / 'ds', progress=False, workers=1)
    store = FrameStore(tmp_path / 'ds')
    by_session = {f['session']: store.intrinsics(f) for f in store.frames}
    # 64x48 frames, principal point at the image centre (32, 24)
    assert by_session == {'s1': {'fx': 250.0, 'fy': 250.0, 'cx': 32.0, 'cy': 24.0}, 's2': None}
    # resized to half: focal lengths halve, pixel centres map as (x + 0.5) / 2 - 0.5
    convert([tmp_path / 'cam'], tmp_path / 'half', progress=False, workers=1, size=(24, 32))
    half = FrameStore(tmp_path / 'half')
    assert half.intrinsics(half.frames[0]) == {'fx': 125.0, 'fy': 125.0, 'cx': 15.75, 'cy': 11.75}
