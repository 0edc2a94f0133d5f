"""rosbags type store with the weld_interfaces messages, for bag I/O without a ROS install.

The message definitions are kept here as text so the desktop (no ROS, no built interfaces) can
read and write labelled bags; tests/interfaces checks they equal ros2_ws/src/weld_interfaces/msg.
"""

from functools import lru_cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

DEFECT_LABEL_MSG = """\
# DefectLabel.msg - an operator's label for one captured RGB-D frame pair
std_msgs/Header header   # stamp and frame_id of the labelled rgb image
string label             # one of the configured classes
string session_id        # recording session this capture belongs to ('' if none)
string note              # free text, e.g. seam id or welding parameters
"""

DEFECT_RESULT_MSG = """\
# DefectResult.msg - one classification of one RGB-D frame pair
std_msgs/Header header   # stamp and frame_id copied from the classified rgb image
string label             # winning class
float32 confidence       # its probability, 0..1
string[] class_names
float32[] scores         # per-class probabilities, same order as class_names
string source            # 'model' or 'rules'
string model_id          # model name and version (or sha256 prefix); '' for rules
string fallback_reason   # why the rules answered ('' when source == 'model')
float32 latency_ms       # from receiving the pair to publishing this result
"""

INTERFACE_MSGS = {
    'weld_interfaces/msg/DefectLabel': DEFECT_LABEL_MSG,
    'weld_interfaces/msg/DefectResult': DEFECT_RESULT_MSG,
}

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
DEFECT_LABEL = 'weld_interfaces/msg/DefectLabel'
DEFECT_RESULT = 'weld_interfaces/msg/DefectResult'


@lru_cache(maxsize=1)
def weld_typestore() -> Typestore:
    """A ROS 2 Humble type store with DefectLabel and DefectResult registered."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    for name, text in INTERFACE_MSGS.items():
        store.register(get_types_from_msg(text, name))
    return store
