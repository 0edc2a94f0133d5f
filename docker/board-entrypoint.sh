#!/usr/bin/env bash
# Source ROS 2 Humble and the weldvision workspace, then run the command (default: the launch file).
set -eo pipefail
source /opt/ros/humble/setup.bash
source /opt/weldvision/install/setup.bash
exec "$@"
