"""Header fields read straight from CDR bytes, so raw subscriptions need no deserialisation.

Every message the labeler pairs starts with std_msgs/Header: after the 4-byte encapsulation
header come ``int32 sec``, ``uint32 nanosec`` and the ``frame_id`` string (uint32 length with the
terminating NUL, then the characters).
"""

import struct

from weld_labeler.errors import RecorderError

_CDR_LE = (0x00, 0x01)  # encapsulation kinds CDR_BE, CDR_LE (second byte)
_TIME_LE = struct.Struct('<iII')
_TIME_BE = struct.Struct('>iII')


def header_of(data: bytes | memoryview) -> tuple[int, str]:
    """(stamp in ns, frame_id) of a CDR-serialised message that starts with a Header."""
    view = memoryview(data)
    if len(view) < 16 or view[0] != 0 or view[1] not in _CDR_LE:
        raise RecorderError(f'not a CDR message with a header ({len(view)} bytes)')
    layout = _TIME_LE if view[1] == 0x01 else _TIME_BE
    sec, nanosec, length = layout.unpack_from(view, 4)
    if nanosec >= 1_000_000_000 or 16 + length > len(view):
        raise RecorderError('corrupt CDR header (nanosec or frame_id length out of range)')
    frame_id = bytes(view[16 : 16 + max(length - 1, 0)]).decode('utf-8', errors='replace')
    return sec * 1_000_000_000 + nanosec, frame_id
