"""Storage guard: recording stops before the disk fills or a session outgrows its limit."""

import shutil
from dataclasses import dataclass
from pathlib import Path

from weld_labeler.errors import StorageFullError

MB = 1024 * 1024


@dataclass(frozen=True)
class StorageGuard:
    """Checks a write of ``next_bytes`` against the free-space floor and the session size limit.

    ``min_free_space_mb`` keeps room for the board's other work; ``max_session_size_mb`` (0 = no
    limit) bounds one session. Both are checked before a frame pair is written, so a refused pair
    leaves the bag as it was.
    """

    folder: Path
    min_free_space_mb: float = 500.0
    max_session_size_mb: float = 0.0

    def __post_init__(self) -> None:
        if self.min_free_space_mb < 0:
            raise ValueError(f'min_free_space_mb must be >= 0, got {self.min_free_space_mb}')
        if self.max_session_size_mb < 0:
            raise ValueError(f'max_session_size_mb must be >= 0, got {self.max_session_size_mb}')

    def free_bytes(self) -> int:
        folder = self.folder
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def free_mb(self) -> float:
        return self.free_bytes() / MB

    def check_start(self) -> None:
        """Refuse to open a session when the free-space floor is already reached."""
        free = self.free_bytes()
        if free < self.min_free_space_mb * MB:
            raise StorageFullError(
                f'only {free / MB:.0f} MB free on {self.folder}, min_free_space_mb is '
                f'{self.min_free_space_mb:.0f}: free space or export and delete old sessions'
            )

    def check_write(self, session_bytes: int, next_bytes: int) -> None:
        """Raise StorageFullError when writing ``next_bytes`` more would break a limit."""
        if self.max_session_size_mb > 0 and session_bytes + next_bytes > self.max_session_size_mb * MB:
            raise StorageFullError(
                f'session size limit reached: {session_bytes / MB:.1f} MB recorded, the next pair '
                f'({next_bytes / MB:.2f} MB) would pass max_session_size_mb '
                f'{self.max_session_size_mb:g}; start a new session to go on'
            )
        free = self.free_bytes()
        if free - next_bytes < self.min_free_space_mb * MB:
            raise StorageFullError(
                f'disk nearly full: {free / MB:.0f} MB free on {self.folder}, min_free_space_mb is '
                f'{self.min_free_space_mb:g}; export and delete old sessions, then start a new one'
            )
