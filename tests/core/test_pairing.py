"""Frame pairing by stamp: exact first, nearest within the slop, unpairable frames dropped and counted."""

import pytest

from weld_core.pairing import FramePairer

MS = 1_000_000


def test_exact_stamps_pair_in_either_arrival_order() -> None:
    pairer: FramePairer[str] = FramePairer(slop_ns=15 * MS)
    assert pairer.add_rgb(100 * MS, 'rgb0') == []
    (pair,) = pairer.add_depth(100 * MS, 'depth0')
    assert (pair.stamp_ns, pair.rgb, pair.depth, pair.skew_ns) == (100 * MS, 'rgb0', 'depth0', 0)
    assert pairer.add_depth(133 * MS, 'depth1') == []
    (pair,) = pairer.add_rgb(133 * MS, 'rgb1')
    assert (pair.rgb, pair.depth) == ('rgb1', 'depth1')
    assert pairer.stats.paired == pairer.stats.paired_exact == 2
    assert pairer.pending == (0, 0)


def test_exact_match_wins_over_a_nearer_arrival_order() -> None:
    pairer: FramePairer[str] = FramePairer(slop_ns=15 * MS)
    pairer.add_depth(90 * MS, 'early')
    pairer.add_depth(100 * MS, 'exact')
    (pair,) = pairer.add_rgb(100 * MS, 'rgb')
    assert pair.depth == 'exact'


def test_approximate_pairing_within_slop_reports_skew() -> None:
    pairer: FramePairer[str] = FramePairer(slop_ns=15 * MS)
    pairer.add_rgb(1000 * MS, 'rgb')
    (pair,) = pairer.add_depth(1012 * MS, 'depth')
    assert pair.stamp_ns == 1000 * MS
    assert pair.skew_ns == 12 * MS
    assert pairer.stats.paired_exact == 0


def test_frames_outside_slop_do_not_pair_and_are_dropped_once_hopeless() -> None:
    pairer: FramePairer[str] = FramePairer(slop_ns=15 * MS)
    pairer.add_rgb(1000 * MS, 'lonely rgb')
    assert pairer.add_depth(1020 * MS, 'depth') == []
    # the rgb stream has moved on: the depth at 1020 can still pair, the rgb at 1000 cannot
    (pair,) = pairer.add_rgb(1033 * MS, 'rgb')
    assert pair.depth == 'depth'
    assert pairer.stats.dropped_rgb == 1
    assert pairer.pending == (0, 0)


def test_one_stream_alone_is_bounded_by_max_pending() -> None:
    pairer: FramePairer[int] = FramePairer(slop_ns=15 * MS, max_pending=5)
    for index in range(12):
        assert pairer.add_rgb(index * 33 * MS, index) == []
    assert pairer.pending == (5, 0)
    assert pairer.stats.dropped_rgb == 7


@pytest.mark.parametrize(('slop_ns', 'max_pending'), [(-1, 5), (0, 0)])
def test_invalid_settings_are_refused(slop_ns: int, max_pending: int) -> None:
    with pytest.raises(ValueError):
        FramePairer(slop_ns=slop_ns, max_pending=max_pending)
