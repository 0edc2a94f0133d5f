"""weld_core: the ROS-free core shared by the weldvision nodes and the desktop training."""

from weld_core.classes import DEFAULT_CLASSES, GOOD_CLASS, check_class_list, check_label
from weld_core.errors import ImageFormatError, LabelError, WeldError
from weld_core.pairing import DEFAULT_SLOP_NS, FramePair, FramePairer, PairingStats
from weld_core.stamps import NS_PER_S, ns_to_sec_nanosec, stamp_to_ns

__all__ = [
    'DEFAULT_CLASSES',
    'DEFAULT_SLOP_NS',
    'GOOD_CLASS',
    'NS_PER_S',
    'FramePair',
    'FramePairer',
    'ImageFormatError',
    'LabelError',
    'PairingStats',
    'WeldError',
    'check_class_list',
    'check_label',
    'ns_to_sec_nanosec',
    'stamp_to_ns',
]
