"""Tiny rosbag2 files for the training tests, written with rosbags (no ROS install needed).

``write_bag`` makes a labeler-style bag (every frame labelled, session id in the labels) or a plain
``ros2 bag record``-style one (other topic names, unlabelled frames, no session id), with the
colour and depth in any of the contract's forms.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from weld_core.bag_types import CAMERA_INFO, COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE, weld_typestore
from weld_core.images import array_to_image, compress_depth, compress_rgb, depth_m_to_image
from weld_core.stamps import ns_to_sec_nanosec

HEIGHT, WIDTH = 48, 64
BASE_NS = 1_764_000_000_000_000_000


@dataclass
class Frame:
    stamp_ns: int
    rgb: np.ndarray
    depth_m: np.ndarray
    label: str | None


def synthetic_pair(
    seed: int, label: str, height: int = HEIGHT, width: int = WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """A tilted plate 0.1 m away with a raised bead; defects change the bead (learnable, not realistic)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = 0.1 + 2e-5 * xs - 1e-5 * ys
    bead = np.abs(xs - width / 2 - rng.uniform(-4, 4)) < 5
    bead_height = {'good': 1.5, 'porosity': 1.5, 'spatter': 1.5, 'gap': -1.0, 'undercut': 0.6}.get(label, 1.5)
    depth = depth - bead * bead_height * 1e-3
    rgb = np.full((height, width, 3), 90, np.uint8)
    rgb[bead] = 170
    if label == 'porosity':
        depth[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2] += 1e-3
        rgb[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2] = 20
    if label == 'spatter':
        depth[5:9, 5:9] -= 8e-4
        rgb[5:9, 5:9] = 230
    depth = depth + rng.normal(0, 2e-5, depth.shape)
    depth[rng.random(depth.shape) < 0.01] = 0.0
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth.astype(np.float32)


def make_frames(labels: list[str | None], seed: int = 0, step_ns: int = 100_000_000) -> list[Frame]:
    frames = []
    for index, label in enumerate(labels):
        rgb, depth = synthetic_pair(seed * 1000 + index, label or 'good')
        frames.append(Frame(BASE_NS + seed * 10**12 + index * step_ns, rgb, depth, label))
    return frames


def write_bag(
    path: Path,
    frames: list[Frame],
    session_id: str = '',
    rgb_form: str = 'jpeg',
    depth_form: str = 'compressed32',
    storage: str = 'mcap',
    prefix: str = '/weld',
    depth_skew_ns: int = 0,
    zstd: bool = False,
    note: str = 'test session',
    fx: float | None = 300.0,
) -> Path:
    """rgb_form: raw | bgr | jpeg | png; depth_form: raw32 | raw16 | compressed32 | compressed16.

    ``fx``: focal length (px) of the CameraInfo written beside every frame; None writes no CameraInfo.
    """
    store = weld_typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    if zstd:
        writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    writer.open()
    rgb_topic = f'{prefix}/rgb/image_raw' + ('/compressed' if rgb_form in ('jpeg', 'png') else '')
    depth_topic = f'{prefix}/depth/image_raw' + (
        '/compressedDepth' if depth_form.startswith('compressed') else ''
    )
    rgb_conn = writer.add_connection(
        rgb_topic, COMPRESSED_IMAGE if rgb_form in ('jpeg', 'png') else IMAGE, typestore=store
    )
    depth_conn = writer.add_connection(
        depth_topic, COMPRESSED_IMAGE if depth_form.startswith('compressed') else IMAGE, typestore=store
    )
    info_conn = (
        writer.add_connection(f'{prefix}/rgb/camera_info', CAMERA_INFO, typestore=store) if fx else None
    )
    label_conn = writer.add_connection(f'{prefix}/labels', DEFECT_LABEL, typestore=store)

    def header(stamp_ns: int) -> object:
        sec, nanosec = ns_to_sec_nanosec(stamp_ns)
        return types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id='camera'
        )

    for frame in frames:
        if rgb_form in ('jpeg', 'png'):
            fields = compress_rgb(frame.rgb, rgb_form)
            rgb_msg = types[COMPRESSED_IMAGE](
                header=header(frame.stamp_ns), **fields.as_kwargs(numpy_data=True)
            )
        else:
            array = frame.rgb if rgb_form == 'raw' else np.ascontiguousarray(frame.rgb[:, :, ::-1])
            fields = array_to_image(array, 'rgb8' if rgb_form == 'raw' else 'bgr8')
            rgb_msg = types[IMAGE](header=header(frame.stamp_ns), **fields.as_kwargs(numpy_data=True))
        depth_stamp = frame.stamp_ns + depth_skew_ns
        if depth_form.startswith('compressed'):
            cfields = compress_depth(frame.depth_m, '32FC1' if depth_form.endswith('32') else '16UC1')
            depth_msg = types[COMPRESSED_IMAGE](
                header=header(depth_stamp), **cfields.as_kwargs(numpy_data=True)
            )
        else:
            dfields = depth_m_to_image(frame.depth_m, '32FC1' if depth_form == 'raw32' else '16UC1')
            depth_msg = types[IMAGE](header=header(depth_stamp), **dfields.as_kwargs(numpy_data=True))
        height, width = frame.depth_m.shape
        info_msg = types[CAMERA_INFO](
            header=header(frame.stamp_ns),
            height=height,
            width=width,
            distortion_model='plumb_bob',
            d=np.zeros(5),
            k=np.array([fx or 0.0, 0, width / 2, 0, fx or 0.0, height / 2, 0, 0, 1]),
            r=np.eye(3).ravel(),
            p=np.zeros(12),
            binning_x=0,
            binning_y=0,
            roi=types['sensor_msgs/msg/RegionOfInterest'](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        writer.write(rgb_conn, frame.stamp_ns, store.serialize_cdr(rgb_msg, rgb_conn.msgtype))
        writer.write(depth_conn, depth_stamp, store.serialize_cdr(depth_msg, depth_conn.msgtype))
        if info_conn is not None:
            writer.write(info_conn, frame.stamp_ns, store.serialize_cdr(info_msg, CAMERA_INFO))
        if frame.label is not None:
            label = types[DEFECT_LABEL](
                header=header(frame.stamp_ns), label=frame.label, session_id=session_id, note=note
            )
            writer.write(label_conn, frame.stamp_ns + 1_000_000, store.serialize_cdr(label, DEFECT_LABEL))
    writer.close()
    return path
