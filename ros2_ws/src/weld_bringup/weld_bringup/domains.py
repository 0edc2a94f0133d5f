"""A ROS_DOMAIN_ID that no other weldvision run on this machine holds, for as long as it is needed.

The same lock folder and range as the test fixtures (tests/conftest.py), so a demo run and a test
run on one machine never hear each other's nodes.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

DOMAIN_LOCK_DIR = Path('/tmp/weldvision-ros-domains')
DOMAIN_RANGE = range(101, 200)


@contextlib.contextmanager
def exclusive_domain(preferred: int | None = None) -> Iterator[int]:
    """Hold a domain id of DOMAIN_RANGE (``preferred`` first when it is free); released on exit."""
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = (os.getpid() * 7) % len(DOMAIN_RANGE)
    candidates = [DOMAIN_RANGE[(start + offset) % len(DOMAIN_RANGE)] for offset in range(len(DOMAIN_RANGE))]
    if preferred is not None:
        candidates.insert(0, preferred)
    for domain_id in candidates:
        handle = open(DOMAIN_LOCK_DIR / f'{domain_id}.lock', 'w')  # noqa: SIM115 - held while in use
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield domain_id
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError(f'every ROS domain id in {DOMAIN_RANGE} is held by another weldvision run')
