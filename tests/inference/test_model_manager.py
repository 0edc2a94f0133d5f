"""ModelManager: which file runs, hot swap, rejection memory, withdrawal (real files, real sessions)."""

import os
import threading
import time
from pathlib import Path

from tests.inference.models import build_model, write_model
from weld_core.model_file import read_model_info
from weld_inference.model_manager import ModelManager


def set_mtime(path: Path, offset_s: float) -> None:
    stamp = time.time() + offset_s
    os.utime(path, (stamp, stamp))


def manager_for(folder: Path) -> tuple[ModelManager, list[str]]:
    events: list[str] = []
    return ModelManager(folder, on_event=lambda _level, message: events.append(message)), events


def test_empty_or_missing_folder_means_rules(tmp_path: Path) -> None:
    manager, _ = manager_for(tmp_path / 'absent')
    manager.poll_once()
    assert manager.current() == (None, f'models folder {tmp_path / "absent"} does not exist')
    (tmp_path / 'absent').mkdir()
    (tmp_path / 'absent' / 'notes.txt').write_text('not a model')
    manager.poll_once()
    runner, reason = manager.current()
    assert runner is None and reason.startswith('no model (*.onnx)')


def test_newest_valid_model_runs_and_touch_selects(tmp_path: Path) -> None:
    old = write_model(tmp_path / 'a.onnx', name='net', version='1', seed=1)
    new = write_model(tmp_path / 'b.onnx', name='net', version='2', seed=2)
    set_mtime(old, -10)
    (tmp_path / '.hidden.onnx').write_bytes(b'junk')
    (tmp_path / 'c.onnx.part').write_bytes(b'junk')
    manager, _ = manager_for(tmp_path)
    manager.poll_once()
    assert manager.current()[0].model_id == read_model_info(new).model_id
    set_mtime(old, 10)
    manager.poll_once()
    assert manager.current()[0].model_id == read_model_info(old).model_id
    assert manager.counts.rejections == 0 and manager.counts.loads == 2


def test_invalid_newer_file_is_rejected_once_and_the_running_model_stays(tmp_path: Path) -> None:
    good = write_model(tmp_path / 'good.onnx', name='net', version='1')
    manager, events = manager_for(tmp_path)
    manager.poll_once()
    good_id = manager.current()[0].model_id
    bad = tmp_path / 'newer.onnx'
    bad.write_bytes(build_model(graph_classes=4))
    set_mtime(bad, 10)
    manager.poll_once()
    manager.poll_once()
    assert manager.current()[0].model_id == good_id
    assert manager.counts.rejections == 1, 'an unchanged rejected file was validated again'
    assert 'newer.onnx' in manager.rejected() and 'classes' in manager.rejected()['newer.onnx']
    assert any('model rejected' in e and f'still running {good_id}' in e for e in events)

    # re-copied correctly: its fingerprint changes and it runs
    write_model(bad, name='net', version='2')
    set_mtime(bad, 20)
    manager.poll_once()
    v2_id = read_model_info(bad).model_id
    assert manager.current()[0].model_id == v2_id
    assert manager.rejected() == {}

    # the running file overwritten in place with junk: rejected; the newest valid file runs instead
    bad.write_bytes(b'junk')
    set_mtime(bad, 30)
    manager.poll_once()
    assert manager.current()[0].model_id == good_id
    assert 'cannot load' in manager.rejected()['newer.onnx']

    # with no other valid file, the loaded session stays while its (overwritten) file is there
    write_model(bad, name='net', version='2')
    set_mtime(bad, 40)
    manager.poll_once()
    assert manager.current()[0].model_id == v2_id
    good.unlink()
    bad.write_bytes(b'junk again')
    set_mtime(bad, 50)
    manager.poll_once()
    assert manager.current()[0].model_id == v2_id


def test_deleting_the_running_file_withdraws_it(tmp_path: Path) -> None:
    first = write_model(tmp_path / 'first.onnx', name='net', version='1', seed=1)
    second = write_model(tmp_path / 'second.onnx', name='net', version='2', seed=2)
    set_mtime(first, -5)
    manager, _ = manager_for(tmp_path)
    manager.poll_once()
    assert manager.current()[0].path == second
    second.unlink()
    manager.poll_once()
    assert manager.current()[0].path == first
    first.unlink()
    manager.poll_once()
    runner, reason = manager.current()
    assert runner is None and 'withdrawn: first.onnx was removed' in reason
    (tmp_path / 'junk.onnx').write_bytes(b'junk')
    manager.poll_once()
    runner, reason = manager.current()
    assert runner is None and 'no valid model' in reason and 'withdrawn' in reason
    assert manager.counts.withdrawals == 1


def test_swap_in_the_watcher_thread_never_leaves_a_reader_without_a_model(tmp_path: Path) -> None:
    write_model(tmp_path / 'v1.onnx', name='net', version='1', seed=1)
    manager, _ = manager_for(tmp_path)
    manager.start(poll_interval_s=0.02)
    seen: set[str] = set()
    gaps = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal gaps
        while not stop.is_set():
            runner, _ = manager.current()
            if runner is None:
                gaps += 1
            else:
                seen.add(runner.model_id)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(2, 6):
            path = write_model(tmp_path / f'v{version}.onnx', name='net', version=str(version), seed=version)
            set_mtime(path, version)
            deadline = time.monotonic() + 10
            while manager.current()[0].path != path and time.monotonic() < deadline:
                time.sleep(0.01)
            # on a loaded machine the reader may not be scheduled between two swaps: wait until it
            # has seen this model, so the check below is about gaps, not about thread scheduling
            current_id = manager.current()[0].model_id
            while current_id not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        reader.join()
        manager.stop()
    assert gaps == 0
    assert len(seen) == 5
