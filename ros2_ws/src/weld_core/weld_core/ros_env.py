"""Environment for ROS 2 processes on a machine where DDS must stay on loopback.

The pip-installed ROS 2 libraries ignore ROS_LOCALHOST_ONLY; what keeps discovery and data on
127.0.0.1 is a Fast DDS profile (launch/dds/fastdds_loopback.xml) applied with
ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT. The project venv applies it to every process through
a .pth file (scripts/setup); runners and tests call :func:`loopback_env` to be explicit and to
give each run its own domain id.
"""

import os
from pathlib import Path

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
PROFILE_RELATIVE_PATH = Path('launch') / 'dds' / 'fastdds_loopback.xml'


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
