"""ROS-free weld-scene simulator: top-down RGB + registered depth of weld seams with exact labels."""

from weld_camera.sim.config import CameraIntrinsics, SimConfig, SimConfigError, default_class_mix
from weld_camera.sim.scene import RENDERABLE_CLASSES
from weld_camera.sim.simulator import SimFrame, WeldSimulator

__all__ = [
    'RENDERABLE_CLASSES',
    'CameraIntrinsics',
    'SimConfig',
    'SimConfigError',
    'SimFrame',
    'WeldSimulator',
    'default_class_mix',
]
