"""The review queue: which answers are queued, the bounded on-disk queue, labelled frames in a bag."""

from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from tests.console.graph import converted_labels
from tests.labeler.frames import BASE_NS, PERIOD_NS, camera_info_cdr, depth_cdr, rgb_cdr
from weld_console.errors import NotFoundError
from weld_console.frames import FrameBuffer, RawPair
from weld_console.review import (
    DISAGREE,
    UNSURE,
    ReviewItem,
    ReviewQueue,
    ReviewRecorder,
    ReviewSelector,
    top2_margin,
)
from weld_core.bag_types import DEFECT_LABEL, weld_typestore
from weld_core.classes import DEFAULT_CLASSES
from weld_core.errors import LabelError

CLASSES = list(DEFAULT_CLASSES)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _answer(
    selector: ReviewSelector, index: int, scores: list[float], label: str = 'good'
) -> ReviewItem | None:
    return selector.on_result(
        BASE_NS + index * PERIOD_NS, 'cam', 'model', label, CLASSES, scores, 'net-1-abc'
    )


def test_margin_is_best_minus_second() -> None:
    assert top2_margin([0.1, 0.5, 0.3, 0.05, 0.05]) == pytest.approx(0.2)
    assert top2_margin([1.0]) == 1.0


def test_unsure_answers_are_queued_at_most_once_per_interval() -> None:
    clock = Clock()
    selector = ReviewSelector(margin=0.2, min_interval_s=1.0, clock=clock)
    assert _answer(selector, 0, [0.9, 0.05, 0.05, 0, 0]) is None  # sure
    item = _answer(selector, 1, [0.45, 0.40, 0.15, 0, 0])
    assert item is not None and item.reasons == [UNSURE] and item.margin == pytest.approx(0.05)
    assert _answer(selector, 2, [0.45, 0.40, 0.15, 0, 0]) is None  # a near-copy 33 ms later
    clock.now += 1.5
    assert _answer(selector, 3, [0.45, 0.40, 0.15, 0, 0]) is not None
    rules = selector.on_result(BASE_NS, 'cam', 'rules', 'gap', CLASSES, [0.2] * 5, '')
    assert rules is None  # the rules' own answers are not the model's doubts
    assert (selector.stats.model_answers, selector.stats.unsure, selector.stats.taken) == (4, 3, 2)


def test_disagreement_is_found_whichever_message_comes_first() -> None:
    clock = Clock()
    selector = ReviewSelector(margin=0.1, min_interval_s=1.0, clock=clock)
    # the result first (the inference node publishes it before the rules' measurements)
    assert _answer(selector, 0, [0.9, 0.1, 0, 0, 0], label='good') is None
    item = selector.on_rules(BASE_NS, 'porosity')
    assert item is not None and item.reasons == [DISAGREE] and item.rules_label == 'porosity'
    assert 'model says good, rules say porosity' in item.describe()
    # the rules first
    clock.now += 2.0
    assert selector.on_rules(BASE_NS + PERIOD_NS, 'spatter') is None
    item = _answer(selector, 1, [0.9, 0.1, 0, 0, 0], label='good')
    assert item is not None and item.reasons == [DISAGREE]
    # agreement is not queued; a disagreement about a frame already taken as unsure adds the reason
    clock.now += 2.0
    assert selector.on_rules(BASE_NS + 2 * PERIOD_NS, 'good') is None
    assert _answer(selector, 2, [0.9, 0.1, 0, 0, 0]) is None
    clock.now += 2.0
    unsure = _answer(selector, 3, [0.5, 0.45, 0.05, 0, 0])
    assert unsure is not None and unsure.reasons == [UNSURE]
    both = selector.on_rules(BASE_NS + 3 * PERIOD_NS, 'gap')
    assert both is unsure and set(both.reasons) == {UNSURE, DISAGREE}
    assert selector.stats.rules_compared == 4 and selector.stats.disagreements == 3


def _pair(index: int) -> RawPair:
    buffer = FrameBuffer(slop_ns=1_000_000, capacity=4)
    buffer.add_rgb(rgb_cdr(index))
    (pair,) = buffer.add_depth(depth_cdr(index))
    return pair


def _item(index: int, margin: float, reasons: list[str]) -> ReviewItem:
    scores = [0.5, 0.5 - margin, margin, 0.0, 0.0]
    return ReviewItem(
        BASE_NS + index * PERIOD_NS,
        'weld_camera_optical',
        'good',
        'net-1-abc',
        CLASSES,
        scores,
        margin,
        'gap',
        reasons,
    )


def _add(queue: ReviewQueue, index: int, margin: float, reasons: list[str] | None = None) -> bool:
    info = camera_info_cdr(BASE_NS)
    return queue.add(
        _item(index, margin, reasons or [UNSURE]), _pair(index), b'jpeg-rgb', b'jpeg-depth', info, info
    )


def test_frame_buffer_pairs_raw_frames_and_keeps_the_newest() -> None:
    buffer = FrameBuffer(slop_ns=1_000_000, capacity=3)
    for index in range(5):
        assert buffer.add_rgb(rgb_cdr(index)) == []
        (pair,) = buffer.add_depth(depth_cdr(index))
        assert pair.stamp_ns == BASE_NS + index * PERIOD_NS and pair.frame_id == 'weld_camera_optical'
    assert buffer.get(BASE_NS) is None and buffer.get(BASE_NS + 4 * PERIOD_NS) is not None
    assert buffer.latest().stamp_ns == BASE_NS + 4 * PERIOD_NS
    assert buffer.add_rgb(b'\x00\x01garbage') == [] and buffer.rejected == 1


def test_queue_survives_a_restart_and_keeps_the_most_informative(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / 'review', max_items=3)
    assert queue.load() == [] and not (tmp_path / 'review').exists()  # nothing made before it is needed
    assert _add(queue, 0, 0.15)
    assert _add(queue, 1, 0.05)
    assert _add(queue, 2, 0.10, [DISAGREE])
    assert not _add(queue, 3, 0.18)  # full, and less informative than everything queued
    assert _add(queue, 4, 0.01)  # more informative: the 0.15 frame goes
    order = [item.margin for item in queue.items()]
    assert order == [0.10, 0.01, 0.05]  # disagreement first, then the smallest margins
    # a half-written item (killed mid-write) is removed at the next start
    (tmp_path / 'review' / 'items' / '123').mkdir()
    again = ReviewQueue(tmp_path / 'review', max_items=3)
    notes = again.load()
    assert len(notes) == 1 and '123' in notes[0]
    assert [item.item_id for item in again.items()] == [item.item_id for item in queue.items()]
    first = again.items()[0]
    assert again.path(first.item_id, 'rgb.jpg').read_bytes() == b'jpeg-rgb'
    again.remove(first.item_id)
    with pytest.raises(NotFoundError):
        again.get(first.item_id)
    assert len(ReviewQueue(tmp_path / 'review', max_items=3).load() or []) == 0
    assert len(again) == 2


def test_labelled_review_frames_make_a_session_bag_that_training_convert_reads(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / 'review', max_items=10)
    for index in range(3):
        assert _add(queue, index, 0.05 + 0.01 * index)
    recorder = ReviewRecorder(tmp_path / 'review' / 'sessions', CLASSES, min_free_space_mb=0.0)
    assert recorder.start() == []
    ids = [item.item_id for item in queue.items()]
    with pytest.raises(LabelError, match='unknown label'):
        recorder.record(queue, ids[0], 'crack')
    assert len(queue) == 3  # nothing written, nothing unqueued
    recorder.record(queue, ids[0], 'porosity')
    session = recorder.record(queue, ids[1], 'spatter')
    assert len(queue) == 1 and session.labels_recorded == 2
    with pytest.raises(NotFoundError):
        recorder.record(queue, ids[0], 'good')  # already labelled
    closed = recorder.finish()
    assert closed.state == 'stopped' and closed.label_counts == {'porosity': 1, 'spatter': 1}

    bag = recorder.store.bag_path(closed.session_id)
    store = weld_typestore()
    with Reader(bag) as reader:
        labels = [
            store.deserialize_cdr(data, DEFECT_LABEL)
            for connection, _, data in reader.messages()
            if connection.msgtype == DEFECT_LABEL
        ]
    assert sorted(label.label for label in labels) == ['porosity', 'spatter']
    assert all(label.note.startswith('review: unsure') for label in labels)

    archive = recorder.export(closed.session_id, tmp_path / 'exports')
    assert converted_labels(archive, tmp_path / 'dataset') == ['porosity', 'spatter']
