"""weld_bringup: one declared node graph, started by scan.launch.py (ROS) or weld-scan (pip); the demo."""

from weld_bringup.graph import LAUNCH_ARGS, NODES, BringupError, LaunchArg, NodeLaunch, NodeSpec, resolve

__all__ = ['LAUNCH_ARGS', 'NODES', 'BringupError', 'LaunchArg', 'NodeLaunch', 'NodeSpec', 'resolve']
