"""Bags for the replay tests, written in tmp_path with rosbags (and with the labeler's recorder)."""

from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from weld_core.bag_types import CAMERA_INFO, COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE, weld_typestore
from weld_core.images import array_to_image, compress_depth, compress_rgb, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec

FRAME_ID = 'bag_camera_optical_frame'
START_NS = 1_700_000_000_000_000_000
LABELS = ('good', 'porosity', 'spatter', 'gap', 'undercut')


def frame_arrays(index: int, width: int = 64, height: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index``: an rgb with index-dependent colours and a depth plane at 100 + index mm."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = (index * 20) % 256
    rgb[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    rgb[..., 2] = 200
    depth = np.full((height, width), 0.100 + 0.001 * index, np.float32)
    depth[:4, :4] = 0.0  # no data, as a real sensor has
    return rgb, depth


def _header(store: Any, stamp_ns: int) -> Any:
    types = store.types
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=FRAME_ID
    )


def camera_info(store: Any, stamp_ns: int, width: int, height: int, fx: float = 80.0) -> Any:
    return store.types[CAMERA_INFO](
        header=_header(store, stamp_ns),
        height=height,
        width=width,
        distortion_model='plumb_bob',
        d=np.zeros(5),
        k=np.array([fx, 0, width / 2, 0, fx, height / 2, 0, 0, 1], float),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, width / 2, 0, 0, fx, height / 2, 0, 0, 0, 1, 0], float),
        binning_x=0,
        binning_y=0,
        roi=store.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def image_msg(store: Any, stamp_ns: int, fields: Any) -> Any:
    return store.types[IMAGE](header=_header(store, stamp_ns), **fields.as_kwargs(numpy_data=True))


def write_bag(
    path: Path,
    count: int,
    interval_ns: int,
    compressed: bool = False,
    storage: StoragePlugin = StoragePlugin.MCAP,
    labelled: bool = True,
    depth_offset_ns: int = 0,
) -> list[int]:
    """A rosbags-written bag of ``count`` pairs (a plain `ros2 bag record` layout); returns rgb stamps."""
    store = weld_typestore()
    stamps = [START_NS + i * interval_ns for i in range(count)]
    rgb_topic = '/weld/rgb/image_raw' + ('/compressed' if compressed else '')
    depth_topic = '/weld/depth/image_raw' + ('/compressedDepth' if compressed else '')
    image_type = COMPRESSED_IMAGE if compressed else IMAGE
    with Writer(path, version=9, storage_plugin=storage) as writer:
        rgb_conn = writer.add_connection(rgb_topic, image_type, typestore=store)
        depth_conn = writer.add_connection(depth_topic, image_type, typestore=store)
        info_conn = writer.add_connection('/weld/rgb/camera_info', CAMERA_INFO, typestore=store)
        label_conn = writer.add_connection('/weld/labels', DEFECT_LABEL, typestore=store)
        for index, stamp in enumerate(stamps):
            rgb, depth = frame_arrays(index)
            depth_stamp = stamp + depth_offset_ns
            if compressed:
                rgb_msg = store.types[COMPRESSED_IMAGE](
                    header=_header(store, stamp), **compress_rgb(rgb, 'png').as_kwargs(numpy_data=True)
                )
                depth_msg = store.types[COMPRESSED_IMAGE](
                    header=_header(store, depth_stamp),
                    **compress_depth(depth, '16UC1').as_kwargs(numpy_data=True),
                )
            else:
                rgb_msg = image_msg(store, stamp, array_to_image(rgb, 'rgb8'))
                depth_msg = image_msg(store, depth_stamp, depth_m_to_image(depth, '16UC1'))
            writer.write(rgb_conn, stamp, store.serialize_cdr(rgb_msg, image_type))
            writer.write(depth_conn, depth_stamp, store.serialize_cdr(depth_msg, image_type))
            writer.write(
                info_conn, stamp, store.serialize_cdr(camera_info(store, stamp, 64, 48), CAMERA_INFO)
            )
            if labelled:
                label = store.types[DEFECT_LABEL](
                    header=_header(store, stamp),
                    label=LABELS[index % len(LABELS)],
                    session_id='s-test',
                    note=f'frame {index}',
                )
                writer.write(label_conn, stamp, store.serialize_cdr(label, DEFECT_LABEL))
    return stamps


def write_labeler_bag(path: Path, count: int, interval_ns: int, record_format: str) -> list[int]:
    """A bag written by weld_labeler's own recorder (the project's capture path)."""
    from weld_labeler.recorder import BagRecorder, PairLabel

    store = weld_typestore()
    stamps = [START_NS + i * interval_ns for i in range(count)]
    with BagRecorder(path, record_format=record_format) as recorder:
        for index, stamp in enumerate(stamps):
            rgb, depth = frame_arrays(index)
            rgb_cdr = bytes(store.serialize_cdr(image_msg(store, stamp, array_to_image(rgb, 'rgb8')), IMAGE))
            depth_cdr = bytes(
                store.serialize_cdr(image_msg(store, stamp, depth_m_to_image(depth, '32FC1')), IMAGE)
            )
            info_cdr = bytes(store.serialize_cdr(camera_info(store, stamp, 64, 48), CAMERA_INFO))
            label = PairLabel(
                label=LABELS[index % len(LABELS)], session_id='s-labeler', note=f'frame {index}'
            )
            recorder.write(
                recorder.prepare_pair(rgb_cdr, depth_cdr, stamp, FRAME_ID, info_cdr, info_cdr, label)
            )
    return stamps
