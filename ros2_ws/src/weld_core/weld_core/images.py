"""Image messages <-> numpy arrays for every encoding of the contract, written once.

Works on any message object with the sensor_msgs fields (rclpy, rosbags, or a plain namespace):
``Image`` (height, width, encoding, is_bigendian, step, data) and ``CompressedImage``
(format, data). Raw images are converted by cv_bridge when it is importable (a ROS install) and by
this module otherwise; compressed forms always by this module (OpenCV). Every problem with the
input raises :class:`~weld_core.errors.ImageFormatError`.

Conventions of the arrays this module returns:
- colour: ``HxWx3 uint8`` in RGB order, whatever the message's channel order;
- depth: ``HxW float32`` metres, 0.0 where the sensor gave no data (0, NaN, inf or negative).
"""

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from weld_core.errors import ImageFormatError

RGB_ENCODINGS = ('rgb8', 'bgr8')
# colour encodings read (never written): NV12, what D-Robotics' camera and stereo nodes publish
YUV_ENCODINGS = ('nv12',)
DEPTH_ENCODINGS = ('32FC1', '16UC1', 'mono16')

# encoding -> (numpy dtype, channels)
_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    '32FC1': (np.dtype(np.float32), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    'mono16': (np.dtype(np.uint16), 1),
}

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_DEPTH_HEADER = struct.Struct('<iff')  # compressed_depth_image_transport ConfigHeader
_INV_DEPTH_FORMAT = 0

# Quantisation of 32FC1 compressedDepth (depth_quantization / depth_max of
# compressed_depth_image_transport). 50 and 2 m resolve 4 micrometres at 0.1 m and reach down to
# 38 mm, which suits a camera 75-300 mm above a weld; the transport's defaults (100, 10 m) cannot
# encode anything closer than 152 mm.
DEFAULT_DEPTH_QUANTIZATION = 50.0
DEFAULT_DEPTH_MAX_M = 2.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)

try:  # a ROS install has cv_bridge; the pip world does not
    from cv_bridge import CvBridge, CvBridgeError

    _CV_BRIDGE: Any = CvBridge()
except ImportError:
    _CV_BRIDGE = None
    CvBridgeError = RuntimeError


@dataclass(frozen=True)
class ImageFields:
    """The fields of a sensor_msgs/Image, ready to build a message of any binding."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes

    def as_kwargs(self, numpy_data: bool = False) -> dict[str, Any]:
        """Keyword arguments for a message constructor.

        rclpy messages take ``bytes``; rosbags messages need a uint8 array (``numpy_data=True``).
        """
        data: Any = np.frombuffer(self.data, np.uint8) if numpy_data else self.data
        return {
            'height': self.height,
            'width': self.width,
            'encoding': self.encoding,
            'is_bigendian': self.is_bigendian,
            'step': self.step,
            'data': data,
        }


@dataclass(frozen=True)
class CompressedFields:
    """The fields of a sensor_msgs/CompressedImage (format string as image_transport writes it)."""

    format: str
    data: bytes

    def as_kwargs(self, numpy_data: bool = False) -> dict[str, Any]:
        data: Any = np.frombuffer(self.data, np.uint8) if numpy_data else self.data
        return {'format': self.format, 'data': data}


def _data_bytes(msg: Any) -> np.ndarray:
    """The message's data as a flat uint8 array, without copying where the binding allows."""
    data = msg.data
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def is_compressed(msg: Any) -> bool:
    """True for a CompressedImage (it has ``format``, no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def image_to_array(msg: Any) -> np.ndarray:
    """A raw Image message -> array in the message's own layout (HxW or HxWxC, native byte order).

    Checks encoding, size, step and data length before touching the data.
    """
    encoding = str(msg.encoding)
    if encoding not in _LAYOUT:
        raise ImageFormatError(
            f'unsupported image encoding {encoding!r}: expected one of '
            f'{", ".join(_LAYOUT)} (or a CompressedImage)'
        )
    dtype, channels = _LAYOUT[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageFormatError(f'empty {encoding} image ({width}x{height})')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(
            f'{encoding} image step {step} is smaller than width*pixel size {row_bytes} ({width}x{height})'
        )
    if step % dtype.itemsize:
        raise ImageFormatError(f'{encoding} image step {step} is not a multiple of {dtype.itemsize}')
    flat = _data_bytes(msg)
    if flat.size < step * height:
        raise ImageFormatError(
            f'truncated {encoding} image: {flat.size} bytes of data, {step * height} expected '
            f'for {width}x{height} with step {step}'
        )
    if flat.size > step * height:
        raise ImageFormatError(
            f'{encoding} image has {flat.size} bytes of data, {step * height} expected '
            f'for {width}x{height} with step {step}'
        )
    if _CV_BRIDGE is not None:
        try:
            return np.asarray(_CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding='passthrough'))
        except CvBridgeError as exc:  # cv_bridge rejects what it cannot convert
            raise ImageFormatError(f'cv_bridge could not convert {encoding}: {exc}') from exc
    rows = flat[: step * height].reshape(height, step)[:, :row_bytes]
    big_endian = bool(msg.is_bigendian) and dtype.itemsize > 1
    typed = np.ascontiguousarray(rows).view(dtype.newbyteorder('>') if big_endian else dtype)
    array = typed.astype(dtype, copy=False) if big_endian else typed
    return array.reshape(height, width, channels) if channels > 1 else array.reshape(height, width)


def array_to_image(array: np.ndarray, encoding: str) -> ImageFields:
    """An array -> Image fields with the given encoding (little-endian, no row padding)."""
    if encoding not in _LAYOUT:
        raise ImageFormatError(
            f'unsupported image encoding {encoding!r}: expected one of {", ".join(_LAYOUT)}'
        )
    dtype, channels = _LAYOUT[encoding]
    array = np.asarray(array)
    expected_ndim = 3 if channels > 1 else 2
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ImageFormatError(
            f'array of shape {array.shape} cannot be a {encoding} image '
            f'(expected HxW{"x" + str(channels) if channels > 1 else ""})'
        )
    if array.dtype != dtype:
        raise ImageFormatError(
            f'array of dtype {array.dtype} cannot be a {encoding} image (expected {dtype})'
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageFormatError(f'empty array {array.shape} cannot be an image')
    height, width = array.shape[:2]
    little = np.ascontiguousarray(array, dtype=dtype.newbyteorder('<'))
    return ImageFields(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * dtype.itemsize,
        data=little.tobytes(),
    )


def _rgb_from_array(array: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == 'rgb8':
        return array
    if encoding == 'bgr8':
        return np.ascontiguousarray(array[:, :, ::-1])
    raise ImageFormatError(
        f'colour image expected ({", ".join(RGB_ENCODINGS + YUV_ENCODINGS)}), got {encoding!r}'
    )


def _rgb_from_nv12(msg: Any) -> np.ndarray:
    """An NV12 Image (full-size Y plane, then interleaved U/V at half size; ``step`` = Y row bytes) -> RGB."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ImageFormatError(f'nv12 image must have an even, non-empty size, got {width}x{height}')
    if step < width:
        raise ImageFormatError(f'nv12 image step {step} is smaller than its width {width}')
    flat = _data_bytes(msg)
    expected = step * height * 3 // 2
    if flat.size != expected:
        raise ImageFormatError(
            f'nv12 image has {flat.size} bytes of data, {expected} expected for {width}x{height} '
            f'with step {step}'
        )
    planes = np.ascontiguousarray(flat.reshape(height * 3 // 2, step)[:, :width])
    return cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_NV12)


def _depth_m_from_array(array: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == '32FC1':
        # NaN, inf and negative metres are no data (0): three OpenCV passes that also make the copy
        # (numpy's masks took several times as long on every VGA frame of the node)
        depth = cv2.threshold(np.asarray(array, np.float32), 0.0, 0.0, cv2.THRESH_TOZERO)[1]
        cv2.patchNaNs(depth, 0.0)
        return cv2.threshold(depth, _FLOAT32_MAX, 0.0, cv2.THRESH_TOZERO_INV, dst=depth)[1]
    if encoding in ('16UC1', 'mono16'):
        depth = array.astype(np.float32)
        depth *= np.float32(0.001)
        return depth
    raise ImageFormatError(f'depth image expected ({", ".join(DEPTH_ENCODINGS)}), got {encoding!r}')


def rgb_from_msg(msg: Any) -> np.ndarray:
    """Image (rgb8/bgr8/nv12) or CompressedImage (JPEG/PNG) -> HxWx3 uint8 RGB."""
    if is_compressed(msg):
        return decompress_rgb(str(msg.format), _data_bytes(msg))
    if str(msg.encoding) in YUV_ENCODINGS:
        return _rgb_from_nv12(msg)
    return _rgb_from_array(image_to_array(msg), str(msg.encoding))


def depth_m_from_msg(msg: Any) -> np.ndarray:
    """Image (32FC1/16UC1/mono16) or CompressedImage (compressedDepth or 16-bit PNG) -> metres."""
    if is_compressed(msg):
        return decompress_depth_m(str(msg.format), _data_bytes(msg))
    return _depth_m_from_array(image_to_array(msg), str(msg.encoding))


def depth_m_to_image(depth_m: np.ndarray, encoding: str = '32FC1') -> ImageFields:
    """Metres (0 or NaN = no data) -> Image fields as 32FC1 metres or 16UC1/mono16 millimetres."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if encoding == '32FC1':
        return array_to_image(depth, '32FC1')
    if encoding in ('16UC1', 'mono16'):
        mm = np.nan_to_num(depth * 1000.0, nan=0.0, posinf=0.0, neginf=0.0)
        return array_to_image(np.clip(np.rint(mm), 0, 65535).astype(np.uint16), encoding)
    raise ImageFormatError(f'depth encoding must be one of {", ".join(DEPTH_ENCODINGS)}, got {encoding!r}')


def _imdecode(data: np.ndarray, flags: int, what: str) -> np.ndarray:
    if data.size == 0:
        raise ImageFormatError(f'empty {what} data')
    image = cv2.imdecode(data, flags)
    if image is None:
        raise ImageFormatError(f'corrupt or truncated {what} data ({data.size} bytes)')
    return image


def compress_rgb(rgb: np.ndarray, image_format: str = 'jpeg', jpeg_quality: int = 90) -> CompressedFields:
    """HxWx3 uint8 RGB -> CompressedImage fields as image_transport's compressed plugin writes them."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageFormatError(f'HxWx3 uint8 RGB expected, got {rgb.shape} {rgb.dtype}')
    if image_format not in ('jpeg', 'png'):
        raise ImageFormatError(f'compressed colour format must be jpeg or png, got {image_format!r}')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == 'jpeg' else []
    ok, buffer = cv2.imencode('.jpg' if image_format == 'jpeg' else '.png', rgb[:, :, ::-1], params)
    if not ok:
        raise ImageFormatError(f'OpenCV could not encode a {rgb.shape} image as {image_format}')
    return CompressedFields(format=f'rgb8; {image_format} compressed bgr8', data=buffer.tobytes())


def decompress_rgb(image_format: str, data: np.ndarray) -> np.ndarray:
    """CompressedImage colour data (JPEG or PNG) -> HxWx3 uint8 RGB."""
    lowered = image_format.lower()
    if 'compresseddepth' in lowered:
        raise ImageFormatError(f'a compressedDepth image ({image_format!r}) is not a colour image')
    image = _imdecode(data, cv2.IMREAD_UNCHANGED, f'compressed colour ({image_format!r})')
    if image.dtype != np.uint8:
        raise ImageFormatError(f'compressed colour image decodes to {image.dtype}, expected 8-bit')
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    # OpenCV hands back the channels in stored order; image_transport stores BGR ('compressed
    # bgr8', and the bare 'jpeg'/'png' of older drivers) unless the format says 'compressed rgb8'
    if 'compressed rgb8' in lowered:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(image[:, :, ::-1])


def compress_depth(
    depth_m: np.ndarray,
    encoding: str = '32FC1',
    depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
    depth_max_m: float = DEFAULT_DEPTH_MAX_M,
    png_level: int = 1,
) -> CompressedFields:
    """Metres -> compressedDepth fields (compressed_depth_image_transport layout, PNG).

    32FC1 stores quantised inverse depth, 16UC1 stores millimetres; both after a 12-byte header.
    ``png_level`` is zlib's 0-9: 0 stores the 16-bit values unpacked (several times faster to
    write, larger), 1 is image_transport's speed-leaning choice.
    """
    if not 0 <= int(png_level) <= 9:
        raise ImageFormatError(f'png_level must be 0..9, got {png_level}')
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2 or depth.size == 0:
        raise ImageFormatError(f'HxW depth expected, got {depth.shape}')
    valid = np.isfinite(depth) & (depth > 0)
    if encoding == '32FC1':
        quant_a = float(depth_quantization) * (float(depth_quantization) + 1.0)
        quant_b = 1.0 - quant_a / float(depth_max_m)
        inverse = np.zeros(depth.shape, np.float64)
        inside = valid & (depth < depth_max_m)
        inverse[inside] = quant_a / depth[inside].astype(np.float64) + quant_b
        packed = np.clip(np.rint(inverse), 0, 65535).astype(np.uint16)
        header = _DEPTH_HEADER.pack(_INV_DEPTH_FORMAT, quant_a, quant_b)
    elif encoding in ('16UC1', 'mono16'):
        mm = np.where(valid, depth * 1000.0, 0.0)
        packed = np.clip(np.rint(mm), 0, 65535).astype(np.uint16)
        header = _DEPTH_HEADER.pack(_INV_DEPTH_FORMAT, 0.0, 0.0)
    else:
        raise ImageFormatError(f'compressedDepth encoding must be 32FC1 or 16UC1, got {encoding!r}')
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    if png_level == 0 and hasattr(cv2, 'IMWRITE_PNG_FILTER'):
        # row filters only help deflate; a stored PNG skips them (about ten times faster)
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    ok, buffer = cv2.imencode('.png', packed, params)
    if not ok:
        raise ImageFormatError(f'OpenCV could not encode a {depth.shape} depth image as PNG')
    return CompressedFields(format=f'{encoding}; compressedDepth png', data=header + buffer.tobytes())


@lru_cache(maxsize=8)
def _inverse_depth_table(quant_a: float, quant_b: float) -> np.ndarray:
    """uint16 quantised inverse depth -> float32 metres for all 65536 codes (0 = no data).

    A lookup is several times faster than the per-pixel float64 division and gives the same values.
    """
    codes = np.arange(65536, dtype=np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        table = (quant_a / (codes - quant_b)).astype(np.float32)
    table[0] = 0.0
    table[~np.isfinite(table) | (table < 0)] = 0.0
    table.setflags(write=False)
    return table


def decompress_depth_m(image_format: str, data: np.ndarray) -> np.ndarray:
    """CompressedImage depth data -> HxW float32 metres (0 = no data).

    Understands compressedDepth (with or without the 12-byte header, 32FC1 inverse depth or 16UC1
    millimetres) and a plain 16-bit PNG of millimetres (``16UC1; png compressed``).
    """
    lowered = image_format.lower()
    source_encoding = image_format.split(';')[0].strip()
    if 'rvl' in lowered:
        raise ImageFormatError(f'compressedDepth RVL ({image_format!r}) is not supported: record PNG')
    raw = bytes(data[: _DEPTH_HEADER.size + len(_PNG_SIGNATURE)])
    if 'compresseddepth' in lowered:
        if raw[_DEPTH_HEADER.size :].startswith(_PNG_SIGNATURE):
            _, quant_a, quant_b = _DEPTH_HEADER.unpack(raw[: _DEPTH_HEADER.size])
            payload = data[_DEPTH_HEADER.size :]
        elif raw.startswith(_PNG_SIGNATURE):
            quant_a, quant_b = 0.0, 0.0
            payload = data
        else:
            raise ImageFormatError(
                f'compressedDepth data ({data.size} bytes) holds no PNG: corrupt or truncated'
            )
        packed = _imdecode(payload, cv2.IMREAD_UNCHANGED, f'compressedDepth ({image_format!r})')
        if packed.dtype != np.uint16 or packed.ndim != 2:
            raise ImageFormatError(
                f'compressedDepth PNG decodes to {packed.dtype} {packed.shape}, expected 16-bit mono'
            )
        if source_encoding == '32FC1':
            if quant_a == 0.0:
                raise ImageFormatError('32FC1 compressedDepth without a quantisation header')
            return _inverse_depth_table(quant_a, quant_b)[packed]
        if source_encoding in ('16UC1', 'mono16'):
            return packed.astype(np.float32) * np.float32(0.001)
        raise ImageFormatError(f'compressedDepth of unsupported encoding {source_encoding!r}')
    if 'png' in lowered or raw.startswith(_PNG_SIGNATURE):
        packed = _imdecode(data, cv2.IMREAD_UNCHANGED, f'compressed depth ({image_format!r})')
        if packed.dtype != np.uint16 or packed.ndim != 2:
            raise ImageFormatError(
                f'depth PNG decodes to {packed.dtype} {packed.shape}, expected 16-bit mono'
            )
        return packed.astype(np.float32) * np.float32(0.001)
    raise ImageFormatError(
        f'unsupported compressed depth format {image_format!r}: expected compressedDepth png'
    )
