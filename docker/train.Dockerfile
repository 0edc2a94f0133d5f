# weldvision desktop training: the training package (convert, fit, export, evaluate, compare) with
# weld_core, no ROS. PyTorch comes from the same pinned PyPI wheels the tests run with
# (requirements/train.txt); the Linux x86_64 wheels bundle the CUDA runtime, so `--gpus all` works
# on a host with the NVIDIA container toolkit. Build context: the repository root.
#   docker build -f docker/train.Dockerfile -t weldvision-train .
#   docker run --rm -it --gpus all -v "$PWD/data:/data" weldvision-train \
#       python -m training.convert /data/sessions -o /data/dataset
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/weldvision
COPY requirements/ros.txt requirements/train.txt requirements/
# the node-side libraries training reads bags and images with; the ros-* wheels are not needed here
RUN grep -E '^(numpy|opencv-python-headless|rosbags|onnxruntime|PyYAML|psutil)==' requirements/ros.txt \
        > requirements/train-libs.txt \
    && pip install --no-cache-dir -r requirements/train-libs.txt -r requirements/train.txt

COPY ros2_ws/src/weld_core ros2_ws/src/weld_core
RUN pip install --no-cache-dir --no-deps ./ros2_ws/src/weld_core
COPY training training

WORKDIR /data
ENV PYTHONPATH=/opt/weldvision
CMD ["python", "-m", "training.fit", "--help"]
