"""Frame sources of the camera node, ROS-free: simulator, OpenCV device, relay pairing, bag replay."""

from weld_camera.sources.device_source import DeviceSource
from weld_camera.sources.prefetch import Prefetcher
from weld_camera.sources.relay import RelayPairer, depth_fields, empty_depth_fields, rgb_fields
from weld_camera.sources.replay_source import ReplaySource
from weld_camera.sources.sim_source import SimSource, encode_sim_frame

__all__ = [
    'DeviceSource',
    'Prefetcher',
    'RelayPairer',
    'ReplaySource',
    'SimSource',
    'depth_fields',
    'empty_depth_fields',
    'encode_sim_frame',
    'rgb_fields',
]
