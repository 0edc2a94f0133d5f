"""weld_labeler: label RGB-D weld frame pairs by ROS service and record crash-safe rosbag2 sessions."""
