"""StorageGuard: the limits that stop a recording before the disk or the session overflows."""

from pathlib import Path

import pytest

from weld_labeler.errors import StorageFullError
from weld_labeler.storage_guard import MB, StorageGuard


def test_session_size_limit(tmp_path: Path) -> None:
    guard = StorageGuard(tmp_path, min_free_space_mb=0, max_session_size_mb=2)
    guard.check_write(session_bytes=1 * MB, next_bytes=MB)
    with pytest.raises(StorageFullError, match='max_session_size_mb 2'):
        guard.check_write(session_bytes=1 * MB, next_bytes=MB + 1)


def test_unlimited_session_size_by_default(tmp_path: Path) -> None:
    StorageGuard(tmp_path, min_free_space_mb=0).check_write(10**12, MB)


def test_free_space_floor(tmp_path: Path) -> None:
    free_mb = StorageGuard(tmp_path).free_mb()
    guard = StorageGuard(tmp_path, min_free_space_mb=free_mb + 1000)
    with pytest.raises(StorageFullError, match='disk nearly full'):
        guard.check_write(0, 1)
    with pytest.raises(StorageFullError, match='min_free_space_mb'):
        guard.check_start()
    StorageGuard(tmp_path, min_free_space_mb=1).check_start()


def test_a_folder_not_yet_created_is_measured_on_its_parent(tmp_path: Path) -> None:
    assert StorageGuard(tmp_path / 'not' / 'yet').free_bytes() > 0


def test_negative_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='min_free_space_mb'):
        StorageGuard(tmp_path, min_free_space_mb=-1)
    with pytest.raises(ValueError, match='max_session_size_mb'):
        StorageGuard(tmp_path, max_session_size_mb=-1)
