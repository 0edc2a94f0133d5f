"""Pairing and encoding normalisation of another driver's colour and depth streams (ROS-free).

Frames are kept as they arrive (messages of any binding, or colour arrays from a local device) and
converted only once paired, so unpairable frames cost nothing but their count. Output: rgb8
colour and the configured depth encoding; frames already in those encodings are passed through
without decoding.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from weld_camera.frames import CameraFrame, Intrinsics
from weld_core.errors import ImageFormatError
from weld_core.images import (
    ImageFields,
    array_to_image,
    depth_m_from_msg,
    depth_m_to_image,
    is_compressed,
    rgb_from_msg,
)
from weld_core.pairing import FramePair, FramePairer


@dataclass
class RelayStats:
    received_rgb: int = 0
    received_depth: int = 0
    rejected: int = 0  # paired frames whose images could not be converted or did not match
    last_rejection: str = ''


def _passthrough_fields(
    msg: Any, encoding: str, channels_bytes: int, same_layout: tuple[str, ...] = ()
) -> ImageFields | None:
    """The message's own bytes, labelled ``encoding``, when it already is ``encoding`` (or one of
    ``same_layout``, an encoding with the same bytes and units) with no row padding; else None."""
    if is_compressed(msg) or str(msg.encoding) not in (encoding, *same_layout) or bool(msg.is_bigendian):
        return None
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if step != width * channels_bytes or width <= 0 or height <= 0:
        return None
    data = msg.data
    raw = data.tobytes() if hasattr(data, 'tobytes') else bytes(data)
    if len(raw) != step * height:
        return None
    return ImageFields(height=height, width=width, encoding=encoding, is_bigendian=0, step=step, data=raw)


def rgb_fields(frame: Any) -> ImageFields:
    """A colour message (rgb8, bgr8, nv12, JPEG/PNG) or an HxWx3 BGR array (OpenCV) -> rgb8 Image fields."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageFormatError(f'colour frame of shape {frame.shape} {frame.dtype}, expected HxWx3 uint8')
        return array_to_image(np.ascontiguousarray(frame[:, :, ::-1]), 'rgb8')
    return _passthrough_fields(frame, 'rgb8', 3) or array_to_image(rgb_from_msg(frame), 'rgb8')


def depth_fields(msg: Any, encoding: str) -> ImageFields:
    """A depth message (32FC1, 16UC1, mono16, compressedDepth) -> Image fields in ``encoding``."""
    # mono16 depth (D-Robotics' stereo node) is millimetres in 16 bits, byte for byte a 16UC1 image
    same_layout = ('mono16',) if encoding == '16UC1' else ()
    passthrough = _passthrough_fields(msg, encoding, 4 if encoding == '32FC1' else 2, same_layout)
    return passthrough or depth_m_to_image(depth_m_from_msg(msg), encoding)


def empty_depth_fields(width: int, height: int, encoding: str) -> ImageFields:
    """A depth image with no data anywhere (0), for a colour camera without a depth sensor."""
    return depth_m_to_image(np.zeros((height, width), np.float32), encoding)


class RelayPairer:
    """Pairs colour and depth frames of another driver within a slop; returns publishable frames."""

    def __init__(self, depth_encoding: str, slop_ns: int, max_pending: int = 30) -> None:
        self.depth_encoding = depth_encoding
        self.pairer: FramePairer[Any] = FramePairer(slop_ns=slop_ns, max_pending=max_pending)
        self.stats = RelayStats()
        self.intrinsics: Intrinsics | None = None
        self.on_reject: Callable[[str], None] | None = None

    @property
    def dropped(self) -> int:
        """Frames dropped because no partner came within the slop."""
        return self.pairer.stats.dropped

    def add_rgb(self, stamp_ns: int, frame: Any) -> list[CameraFrame]:
        self.stats.received_rgb += 1
        return self._convert(self.pairer.add_rgb(stamp_ns, frame))

    def add_depth(self, stamp_ns: int, msg: Any) -> list[CameraFrame]:
        self.stats.received_depth += 1
        return self._convert(self.pairer.add_depth(stamp_ns, msg))

    def _convert(self, pairs: list[FramePair[Any]]) -> list[CameraFrame]:
        frames: list[CameraFrame] = []
        for pair in pairs:
            try:
                rgb = rgb_fields(pair.rgb)
                depth = depth_fields(pair.depth, self.depth_encoding)
                if (rgb.width, rgb.height) != (depth.width, depth.height):
                    raise ImageFormatError(
                        f'depth {depth.width}x{depth.height} is not registered to colour '
                        f'{rgb.width}x{rgb.height}: '
                        "relay the driver's depth aligned to colour"
                    )
            except ImageFormatError as exc:
                self.stats.rejected += 1
                self.stats.last_rejection = str(exc)
                if self.on_reject is not None:
                    self.on_reject(str(exc))
                continue
            frames.append(
                CameraFrame(rgb=rgb, depth=depth, stamp_ns=pair.stamp_ns, intrinsics=self.intrinsics)
            )
        return frames

    def counters(self) -> dict[str, float | int | str]:
        stats = self.pairer.stats
        return {
            'received_rgb': self.stats.received_rgb,
            'received_depth': self.stats.received_depth,
            'paired': stats.paired,
            'paired_exact': stats.paired_exact,
            'dropped_unpaired': stats.dropped,
            'dropped_rgb': stats.dropped_rgb,
            'dropped_depth': stats.dropped_depth,
            'rejected': self.stats.rejected,
            'last_rejection': self.stats.last_rejection,
        }
