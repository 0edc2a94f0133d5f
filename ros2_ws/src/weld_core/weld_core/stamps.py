"""Timestamps as int nanoseconds, converted from and to message stamps of any ROS binding."""

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> int nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """int nanoseconds -> (sec, nanosec) for filling a Time message."""
    return int(ns) // NS_PER_S, int(ns) % NS_PER_S
