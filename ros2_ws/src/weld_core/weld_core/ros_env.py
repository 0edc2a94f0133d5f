"""Environment for ROS 2 processes on a machine where DDS must stay on loopback.

The pip-installed ROS 2 libraries ignore ROS_LOCALHOST_ONLY; what keeps discovery and data on
127.0.0.1 is a Fast DDS profile (launch/dds/fastdds_loopback.xml) applied with
ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT. The project venv applies it to every process through
a .pth file (scripts/setup); runners and tests call :func:`loopback_env` to be explicit and to
give each run its own domain id.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
PROFILE_RELATIVE_PATH = Path('launch') / 'dds' / 'fastdds_loopback.xml'
DOMAIN_LOCK_DIR = Path('/tmp/weldvision-ros-domains')
# 101..199: clear of the default domain 0 and of the ids people pick by hand
DOMAIN_RANGE = range(101, 200)


def find_loopback_profile(start: Path | None = None) -> Path:
    """The loopback profile: $FASTDDS_DEFAULT_PROFILES_FILE, else launch/dds/ above ``start``."""
    configured = os.environ.get(PROFILE_ENV)
    if configured and Path(configured).is_file():
        return Path(configured)
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / PROFILE_RELATIVE_PATH
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f'no Fast DDS loopback profile: set {PROFILE_ENV} or run from the weldvision checkout '
        f'({PROFILE_RELATIVE_PATH})'
    )


def loopback_env(domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) confined to loopback DDS on ``domain_id``."""
    if not 0 <= int(domain_id) <= 232:
        raise ValueError(f'ROS_DOMAIN_ID must be 0..232, got {domain_id}')
    env = dict(os.environ if base is None else base)
    env[PROFILE_ENV] = str(find_loopback_profile())
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SYSTEM_DEFAULT'
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    env['ROS_DOMAIN_ID'] = str(int(domain_id))
    env.pop('ROS_LOCALHOST_ONLY', None)
    env.pop('ROS_STATIC_PEERS', None)
    return env


@contextlib.contextmanager
def exclusive_domain(preferred: int | None = None) -> Iterator[int]:
    """A ROS_DOMAIN_ID no other weldvision run on this machine holds (a file lock per id), held until exit.

    Tests and the demo share the lock folder, so concurrent runs never hear each other's nodes.
    ``preferred`` is tried first.
    """
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = (os.getpid() * 7) % len(DOMAIN_RANGE)
    candidates = [DOMAIN_RANGE[(start + offset) % len(DOMAIN_RANGE)] for offset in range(len(DOMAIN_RANGE))]
    if preferred is not None:
        candidates.insert(0, int(preferred))
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
