# weldvision on the board: ROS 2 Humble, the workspace built with colcon (weld_interfaces, weld_core,
# camera, labeler, inference, bringup) and ONNX Runtime. Build context: the repository root.
#   docker build -f docker/board.Dockerfile -t weldvision-board .
#   docker run --rm -it --net=host --ipc=host -v /opt/weldvision:/opt/weldvision weldvision-board
# Default command: ros2 launch weld_bringup scan.launch.py (append launch arguments, e.g. source:=relay).
# Models go in /opt/weldvision/models on the host, session bags land in /opt/weldvision/sessions.
FROM ros:humble-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3-pip python3-colcon-common-extensions python3-numpy python3-opencv python3-yaml python3-psutil \
        ros-humble-diagnostic-msgs ros-humble-launch-ros ros-humble-lifecycle-msgs \
    && rm -rf /var/lib/apt/lists/*

# Humble's OpenCV is built against numpy 1.x: keep pip from replacing it with numpy 2
COPY docker/board-requirements.txt /tmp/board-requirements.txt
RUN pip3 install --no-cache-dir -r /tmp/board-requirements.txt

WORKDIR /opt/weldvision/ws
COPY ros2_ws/src src
RUN source /opt/ros/humble/setup.bash \
    && colcon build --merge-install --install-base /opt/weldvision/install --event-handlers console_direct- \
    && rm -rf build log

RUN mkdir -p /opt/weldvision/models /opt/weldvision/sessions
COPY docker/board-entrypoint.sh /opt/weldvision/entrypoint.sh
ENTRYPOINT ["/opt/weldvision/entrypoint.sh"]
CMD ["ros2", "launch", "weld_bringup", "scan.launch.py"]
