# weldvision on the board: ROS 2 Humble (Ubuntu 22.04, Python 3.10), the workspace built with colcon
# (weld_interfaces, weld_core, camera, labeler, inference, console, bringup), its apt dependencies through
# rosdep from the package.xml files, and the pip-only libraries (requirements/board-pip*.txt) with
# Ubuntu's numpy kept. Build context: the repository root. Runs as the non-root user weldvision.
#   docker build -f docker/board.Dockerfile -t weldvision-board .
#   docker run --rm -it --net=host --ipc=host -v /opt/weldvision:/opt/weldvision/data weldvision-board
# Default command: the graph with the D-Robotics stereo camera layer (relay of hobot_stereonet's
# topics); append params_file:=.../board_realsense.yaml for a RealSense. Not built in this project's
# CI (no Docker engine there); scripts/board-setup is the tested install path.
FROM ros:humble-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/weldvision/ws
COPY ros2_ws/src src
COPY requirements/board-pip.txt requirements/board-pip-nodeps.txt /tmp/requirements/

# package.xml keys through rosdep; the two pip keys are installed below, pinned, without replacing
# Ubuntu's numpy (apt's OpenCV and Humble's message libraries are built against it)
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-colcon-common-extensions \
    && rosdep update --rosdistro humble \
    && rosdep install --rosdistro humble --from-paths src --ignore-src -y \
        --skip-keys "python3-onnxruntime-pip python3-rosbags-pip" \
    && python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > /tmp/requirements/constraints.txt \
    && pip3 install --no-cache-dir -c /tmp/requirements/constraints.txt -r /tmp/requirements/board-pip.txt \
    && pip3 install --no-cache-dir --no-deps -r /tmp/requirements/board-pip-nodeps.txt \
    && rm -rf /var/lib/apt/lists/*

RUN source /opt/ros/humble/setup.bash \
    && colcon build --merge-install --install-base /opt/weldvision/install --event-handlers console_direct- \
    && rm -rf build log

RUN useradd --system --user-group --home-dir /opt/weldvision/data --shell /usr/sbin/nologin weldvision \
    && mkdir -p /opt/weldvision/data/models /opt/weldvision/data/sessions /opt/weldvision/data/exports \
    && chown -R weldvision:weldvision /opt/weldvision/data
COPY docker/board-entrypoint.sh /opt/weldvision/entrypoint.sh
USER weldvision
ENV ROS_HOME=/opt/weldvision/data/ros
ENTRYPOINT ["/opt/weldvision/entrypoint.sh"]
CMD ["ros2", "launch", "weld_bringup", "scan.launch.py", "params_file:=/opt/weldvision/install/share/weld_bringup/config/board_stereonet.yaml", "models_dir:=/opt/weldvision/data/models", "recording_dir:=/opt/weldvision/data/sessions"]
