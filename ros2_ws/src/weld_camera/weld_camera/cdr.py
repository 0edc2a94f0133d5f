"""sensor_msgs/Image as CDR bytes, written once where a frame is produced, stamped when published.

Building an rclpy Image and serialising it costs about 1 ms per VGA image in the publishing
thread. Producers (the render worker, the bag reader) write the CDR bytes instead, with the stamp
left at zero; publication patches the stamp, which sits at a fixed offset (right after the 4-byte
encapsulation header), and hands the bytes to ``Publisher.publish(bytes)`` (rclpy's raw publish,
in Humble too). The layout is little-endian plain CDR (XCDR1), what rmw_fastrtps writes; a test
checks the bytes equal rclpy's own serialisation.
"""

import struct

from weld_core.images import ImageFields

_ENCAPSULATION = b'\x00\x01\x00\x00'  # CDR, little endian
_STAMP = struct.Struct('<iI')
_STAMP_OFFSET = len(_ENCAPSULATION)


def _string(out: bytearray, text: str) -> None:
    _align(out, 4)
    raw = text.encode() + b'\x00'
    out += struct.pack('<I', len(raw))
    out += raw


def _align(out: bytearray, alignment: int) -> None:
    # alignment counts from the end of the encapsulation header
    out += b'\x00' * (-(len(out) - len(_ENCAPSULATION)) % alignment)


def image_cdr(fields: ImageFields, frame_id: str) -> bytes:
    """Serialised sensor_msgs/Image with header.stamp 0 and ``frame_id``."""
    out = bytearray(_ENCAPSULATION)
    out += _STAMP.pack(0, 0)
    _string(out, frame_id)
    _align(out, 4)
    out += struct.pack('<II', fields.height, fields.width)
    _string(out, fields.encoding)
    out += struct.pack('<B', fields.is_bigendian)
    _align(out, 4)
    out += struct.pack('<II', fields.step, len(fields.data))
    out += fields.data
    return bytes(out)


def stamped(cdr: bytes, sec: int, nanosec: int) -> bytes:
    """The same serialised message with header.stamp set to (sec, nanosec)."""
    return cdr[:_STAMP_OFFSET] + _STAMP.pack(sec, nanosec) + cdr[_STAMP_OFFSET + _STAMP.size :]
