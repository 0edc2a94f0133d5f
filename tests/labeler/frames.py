"""CDR-serialised frames for ROS-free labeler tests (what a raw subscription would hand over)."""

import numpy as np

from weld_core.bag_types import CAMERA_INFO, IMAGE, weld_typestore
from weld_core.images import array_to_image, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec

BASE_NS = 1_790_000_000_000_000_000
PERIOD_NS = 33_333_333
FRAME_ID = 'weld_camera_optical'


def _header(stamp_ns: int, frame_id: str = FRAME_ID) -> object:
    types = weld_typestore().types
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def rgb_array(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    rgb = np.full((height, width, 3), (index * 37) % 256, np.uint8)
    rgb[:, : width // 2, 1] = 200
    return rgb


def depth_array(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.full((height, width), 0.08 + 0.001 * (index % 20), np.float32)


def image_cdr(stamp_ns: int, fields: object) -> bytes:
    store = weld_typestore()
    message = store.types[IMAGE](header=_header(stamp_ns), **fields.as_kwargs(numpy_data=True))  # type: ignore[attr-defined]
    return bytes(store.serialize_cdr(message, IMAGE))


def rgb_cdr(index: int, stamp_ns: int | None = None, height: int = 48, width: int = 64) -> bytes:
    stamp = BASE_NS + index * PERIOD_NS if stamp_ns is None else stamp_ns
    return image_cdr(stamp, array_to_image(rgb_array(index, height, width), 'rgb8'))


def depth_cdr(
    index: int, stamp_ns: int | None = None, encoding: str = '32FC1', height: int = 48, width: int = 64
) -> bytes:
    stamp = BASE_NS + index * PERIOD_NS if stamp_ns is None else stamp_ns
    return image_cdr(stamp, depth_m_to_image(depth_array(index, height, width), encoding))


def camera_info_cdr(stamp_ns: int, height: int = 48, width: int = 64) -> bytes:
    store = weld_typestore()
    types = store.types
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    k = np.array([300.0, 0, width / 2, 0, 300.0, height / 2, 0, 0, 1], np.float64)
    message = types[CAMERA_INFO](
        header=_header(stamp_ns),
        height=height,
        width=width,
        distortion_model='plumb_bob',
        d=np.zeros(5),
        k=k,
        r=np.eye(3).reshape(-1),
        p=np.zeros(12),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    return bytes(store.serialize_cdr(message, CAMERA_INFO))


def stamp_of(index: int) -> int:
    return BASE_NS + index * PERIOD_NS
