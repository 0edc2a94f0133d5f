"""Round trips of every contract image encoding, with rclpy and rosbags messages, and the errors."""

import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from tests.core.yuv import blocky_rgb, nv12_from_rgb
from weld_core import images
from weld_core.bag_types import COMPRESSED_IMAGE, IMAGE, weld_typestore
from weld_core.errors import ImageFormatError

RNG = np.random.default_rng(7)
HEIGHT, WIDTH = 48, 64


def rgb_frame() -> np.ndarray:
    return RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def depth_frame() -> np.ndarray:
    depth = RNG.uniform(0.07, 0.3, (HEIGHT, WIDTH)).astype(np.float32)
    depth[5:8, 10:20] = 0.0  # dropout
    return depth


def rclpy_image(fields: images.ImageFields) -> Image:
    return Image(**fields.as_kwargs())


def rosbags_image(fields: images.ImageFields):
    store = weld_typestore()
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='cam'
    )
    return store.types[IMAGE](header=header, **fields.as_kwargs(numpy_data=True))


def through_cdr(msg):
    """Serialise a rosbags message to CDR and back, as a bag would."""
    store = weld_typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


BINDINGS = [
    pytest.param(rclpy_image, id='rclpy'),
    pytest.param(lambda f: through_cdr(rosbags_image(f)), id='rosbags'),
]


@pytest.mark.parametrize('make_msg', BINDINGS)
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_colour_round_trip(make_msg, encoding: str) -> None:
    rgb = rgb_frame()
    stored = rgb if encoding == 'rgb8' else rgb[:, :, ::-1]
    msg = make_msg(images.array_to_image(stored, encoding))
    assert np.array_equal(images.image_to_array(msg), stored)
    assert np.array_equal(images.rgb_from_msg(msg), rgb)


@pytest.mark.parametrize('make_msg', BINDINGS)
def test_32fc1_round_trip_keeps_metres_and_marks_nan_as_no_data(make_msg) -> None:
    depth = depth_frame()
    with_nan = depth.copy()
    with_nan[0, 0] = np.nan
    with_nan[0, 1] = np.inf
    msg = make_msg(images.depth_m_to_image(with_nan, '32FC1'))
    decoded = images.depth_m_from_msg(msg)
    assert decoded.dtype == np.float32
    assert decoded[0, 0] == 0.0 and decoded[0, 1] == 0.0
    assert np.array_equal(decoded[1:], depth[1:])


@pytest.mark.parametrize('make_msg', BINDINGS)
@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_millimetre_round_trip(make_msg, encoding: str) -> None:
    depth = depth_frame()
    msg = make_msg(images.depth_m_to_image(depth, encoding))
    assert msg.encoding == encoding
    raw = images.image_to_array(msg)
    assert raw.dtype == np.uint16
    assert np.array_equal(raw, np.rint(depth * 1000).astype(np.uint16))
    decoded = images.depth_m_from_msg(msg)
    assert np.abs(decoded - depth).max() <= 0.0005 + 1e-6
    assert np.all(decoded[5:8, 10:20] == 0.0)


def test_padded_rows_and_big_endian_data_are_read_correctly() -> None:
    mm = RNG.integers(1, 60000, (HEIGHT, WIDTH), dtype=np.uint16)
    step = WIDTH * 2 + 6
    rows = np.zeros((HEIGHT, step), np.uint8)
    rows[:, : WIDTH * 2] = mm.astype('>u2').view(np.uint8).reshape(HEIGHT, WIDTH * 2)
    msg = Image(height=HEIGHT, width=WIDTH, encoding='16UC1', is_bigendian=1, step=step, data=rows.tobytes())
    assert np.array_equal(images.image_to_array(msg), mm)


@pytest.mark.parametrize('image_format', ['jpeg', 'png'])
def test_compressed_colour_round_trip(image_format: str) -> None:
    # a smooth image so JPEG error stays small; PNG must be exact
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    fields = images.compress_rgb(rgb, image_format)
    assert fields.format == f'rgb8; {image_format} compressed bgr8'
    msg = CompressedImage(**fields.as_kwargs())
    decoded = images.rgb_from_msg(msg)
    if image_format == 'png':
        assert np.array_equal(decoded, rgb)
    else:
        assert np.abs(decoded.astype(int) - rgb).mean() < 3.0
        # channel order survives: red ramps along x, green along y
        assert np.corrcoef(decoded[:, :, 0].ravel(), (xx * 4).ravel())[0, 1] > 0.99


def test_compressed_depth_32fc1_inverse_depth_layout() -> None:
    depth = depth_frame()
    fields = images.compress_depth(depth, '32FC1')
    assert fields.format == '32FC1; compressedDepth png'
    form, quant_a, quant_b = struct.unpack('<iff', fields.data[:12])
    assert form == 0 and fields.data[12:20] == b'\x89PNG\r\n\x1a\n'
    # the contract's formula applied by hand to the PNG gives the same depth
    packed = cv2.imdecode(np.frombuffer(fields.data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    by_hand = np.where(packed > 0, quant_a / (packed.astype(np.float64) - quant_b), 0.0)
    decoded = images.depth_m_from_msg(CompressedImage(**fields.as_kwargs()))
    assert np.allclose(decoded, by_hand, atol=1e-6)
    # quantisation error at 0.3 m stays below 0.05 mm; no-data stays no-data
    assert np.abs(decoded - depth).max() < 5e-5
    assert np.all(decoded[5:8, 10:20] == 0.0)


def test_compressed_depth_16uc1_and_plain_png_depth() -> None:
    depth = depth_frame()
    fields = images.compress_depth(depth, '16UC1')
    assert fields.format == '16UC1; compressedDepth png'
    decoded = images.depth_m_from_msg(SimpleNamespace(**fields.as_kwargs()))
    assert np.abs(decoded - depth).max() <= 0.0005 + 1e-6
    _, png = cv2.imencode('.png', np.rint(depth * 1000).astype(np.uint16))
    plain = SimpleNamespace(format='16UC1; png compressed', data=png.tobytes())
    assert np.array_equal(images.depth_m_from_msg(plain), decoded)


def test_rosbags_compressed_messages_decode_like_rclpy_ones() -> None:
    store = weld_typestore()
    depth = depth_frame()
    fields = images.compress_depth(depth, '32FC1')
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=3, nanosec=4), frame_id='cam'
    )
    msg = through_cdr(store.types[COMPRESSED_IMAGE](header=header, **fields.as_kwargs(numpy_data=True)))
    assert np.array_equal(
        images.depth_m_from_msg(msg), images.depth_m_from_msg(CompressedImage(**fields.as_kwargs()))
    )


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        (dict(encoding='yuv422', height=2, width=2, step=4, data=bytes(8)), 'unsupported image encoding'),
        (dict(encoding='rgb8', height=2, width=2, step=5, data=bytes(10)), 'step 5 is smaller'),
        (dict(encoding='rgb8', height=2, width=2, step=6, data=bytes(11)), 'truncated rgb8 image'),
        (dict(encoding='32FC1', height=2, width=2, step=8, data=bytes(20)), '20 bytes of data, 16 expected'),
        (dict(encoding='16UC1', height=0, width=2, step=4, data=b''), 'empty 16UC1 image'),
        (dict(encoding='16UC1', height=2, width=2, step=5, data=bytes(10)), 'not a multiple of 2'),
    ],
)
def test_bad_raw_images_raise_one_clear_error(fields: dict, message: str) -> None:
    msg = Image(is_bigendian=0, **fields)
    with pytest.raises(ImageFormatError, match=message):
        images.image_to_array(msg)


def test_colour_and_depth_decoders_refuse_each_others_encodings() -> None:
    depth_msg = rclpy_image(images.depth_m_to_image(depth_frame(), '32FC1'))
    colour_msg = rclpy_image(images.array_to_image(rgb_frame(), 'rgb8'))
    with pytest.raises(ImageFormatError, match='colour image expected'):
        images.rgb_from_msg(depth_msg)
    with pytest.raises(ImageFormatError, match='depth image expected'):
        images.depth_m_from_msg(colour_msg)


@pytest.mark.parametrize(
    ('image_format', 'data', 'decoder', 'message'),
    [
        ('rgb8; jpeg compressed bgr8', b'', images.rgb_from_msg, 'empty'),
        (
            'rgb8; jpeg compressed bgr8',
            b'\xff\xd8\xff\xe0 not really a jpeg',
            images.rgb_from_msg,
            'corrupt or truncated',
        ),
        ('32FC1; compressedDepth png', b'\x00' * 12 + b'garbage', images.depth_m_from_msg, 'holds no PNG'),
        ('32FC1; compressedDepth rvl', b'\x00' * 20, images.depth_m_from_msg, 'RVL'),
        ('32FC1; compressedDepth png', b'\x00' * 12, images.rgb_from_msg, 'not a colour image'),
    ],
)
def test_bad_compressed_images_raise_one_clear_error(image_format, data, decoder, message) -> None:
    with pytest.raises(ImageFormatError, match=message):
        decoder(CompressedImage(format=image_format, data=data))


def test_truncated_compressed_depth_is_refused() -> None:
    fields = images.compress_depth(depth_frame(), '32FC1')
    cut = CompressedImage(format=fields.format, data=fields.data[: len(fields.data) // 2])
    with pytest.raises(ImageFormatError, match='corrupt or truncated'):
        images.depth_m_from_msg(cut)


@pytest.mark.parametrize(
    ('array', 'encoding', 'message'),
    [
        (np.zeros((4, 4), np.uint8), 'rgb8', 'cannot be a rgb8 image'),
        (np.zeros((4, 4, 3), np.float32), 'rgb8', 'dtype float32'),
        (np.zeros((4, 4), np.uint16), 'yuv422', 'unsupported image encoding'),
    ],
)
def test_bad_arrays_are_refused(array, encoding, message) -> None:
    with pytest.raises(ImageFormatError, match=message):
        images.array_to_image(array, encoding)


@pytest.mark.parametrize('make_msg', BINDINGS)
def test_nv12_colour_decodes_to_rgb(make_msg) -> None:
    rgb = blocky_rgb(HEIGHT, WIDTH)
    fields = images.ImageFields(
        height=HEIGHT, width=WIDTH, encoding='nv12', is_bigendian=0, step=WIDTH, data=nv12_from_rgb(rgb)
    )
    decoded = images.rgb_from_msg(make_msg(fields))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert int(np.abs(decoded.astype(int) - rgb.astype(int)).max()) <= 3, 'only YUV rounding may differ'


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        (dict(height=3, width=4, step=4, data=bytes(18)), 'even, non-empty size'),
        (dict(height=2, width=4, step=2, data=bytes(6)), 'step 2 is smaller than its width 4'),
        (dict(height=2, width=4, step=4, data=bytes(8)), '8 bytes of data, 12 expected'),
    ],
)
def test_bad_nv12_images_raise_one_clear_error(fields: dict, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        images.rgb_from_msg(Image(encoding='nv12', is_bigendian=0, **fields))
