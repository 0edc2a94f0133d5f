"""Soak of the board's graph: camera (relaying D-Robotics' stereo topics), labeler and inference with a
model, for minutes, with the labeler recording a session for part of the time.

Runs the graph as the board does (weld_bringup.graph with the board_stereonet.yaml camera layer, each
node in its own process) and stands in for the vendor's driver: a publisher in this process plays
640x352 nv12 colour + mono16 millimetre depth + camera_info on /StereoNetNode/* at ``--rate-hz``
(frames rendered once by the weld_camera simulator, cycled). It prints per node, after the warm-up and
at the end: RSS, open file descriptors, threads, /dev/shm files the process holds; and the pair
accounting: pairs the camera published, pairs the inference node paired, answered, skipped
(latest-frame-wins), rejected; the labeler's recorded pairs. Targets: RSS growth after warm-up < 5 %,
no growth of fds, threads or /dev/shm files, every paired pair answered or counted as skipped.

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--warmup-s 60] [--model MODEL.onnx]
    .venv-board/bin/python bench/bench_soak.py ...      # the board profile (Python 3.10, board libraries)

``--model`` defaults to a small synthetic classifier with real weldvision metadata (the test models'
builder, needs the onnx package); pass an exported model for a realistic model cost.
"""

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from weld_bringup import graph  # noqa: E402
from weld_bringup.runner import GraphRunner  # noqa: E402
from weld_core.images import ImageFields  # noqa: E402
from weld_core.ros_env import exclusive_domain, loopback_env  # noqa: E402
from weld_core.stamps import ns_to_sec_nanosec  # noqa: E402

WIDTH, HEIGHT = 640, 352
RGB_TOPIC = '/StereoNetNode/rectify_left_image'
DEPTH_TOPIC = '/StereoNetNode/stereonet_depth'
INFO_TOPIC = '/StereoNetNode/stereonet_depth/camera_info'


def vendor_frames(count: int) -> list[tuple[bytes, bytes]]:
    """(nv12, mono16) payloads of simulator frames at the stereo camera's size."""
    from bench.bench_inference import sim_frames
    from tests.core.yuv import nv12_from_rgb

    return [
        (nv12_from_rgb(rgb), np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype(np.uint16).tobytes())
        for rgb, depth_m in sim_frames(count, WIDTH, HEIGHT)
    ]


@dataclass
class Sample:
    at_s: float
    rss_mb: float
    fds: int
    threads: int
    shm: int
    thread_names: tuple[str, ...] = ()


@dataclass
class NodeTrace:
    key: str
    pid: int
    samples: list[Sample] = field(default_factory=list)


def shm_files(process: psutil.Process) -> int:
    held = set()
    for mapped in process.memory_maps(grouped=True):
        if mapped.path.startswith('/dev/shm/'):
            held.add(mapped.path)
    for opened in process.open_files():
        if opened.path.startswith('/dev/shm/'):
            held.add(opened.path)
    return len(held)


def sample(trace: NodeTrace, at_s: float) -> None:
    process = psutil.Process(trace.pid)
    trace.samples.append(
        Sample(
            at_s,
            process.memory_info().rss / 2**20,
            process.num_fds(),
            process.num_threads(),
            shm_files(process),
        )
    )


class Driver:
    """The vendor's stereo node as far as the graph can tell, and a listener to /diagnostics."""

    def __init__(self, domain_id: int, frames: list[tuple[bytes, bytes]], rate_hz: float) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from weld_interfaces.srv import SetContinuousLabel, StartSession, StopSession

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('soak_driver', context=self.context)
        qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.rgb_pub = self.node.create_publisher(Image, RGB_TOPIC, qos)
        self.depth_pub = self.node.create_publisher(Image, DEPTH_TOPIC, qos)
        self.info_pub = self.node.create_publisher(CameraInfo, INFO_TOPIC, qos)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, qos)
        self.start_session = self.node.create_client(StartSession, '/weld_labeler/start_session')
        self.stop_session = self.node.create_client(StopSession, '/weld_labeler/stop_session')
        self.continuous = self.node.create_client(SetContinuousLabel, '/weld_labeler/set_continuous_label')
        self._types = (Image, CameraInfo, SetContinuousLabel, StartSession, StopSession)
        self.frames, self.rate_hz = frames, rate_hz
        self.sent = 0
        self.diagnostics: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self._feed = threading.Thread(target=self._publish, daemon=True)

    def _on_diagnostics(self, msg: Any) -> None:
        with self._lock:
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def diag(self, name: str, key: str) -> str:
        with self._lock:
            return self.diagnostics.get(name, {}).get(key, '')

    def _publish(self) -> None:
        image_type, info_type = self._types[0], self._types[1]
        info = info_type(width=WIDTH, height=HEIGHT, distortion_model='plumb_bob')
        info.k = [430.0, 0.0, WIDTH / 2, 0.0, 430.0, HEIGHT / 2, 0.0, 0.0, 1.0]
        start = time.monotonic()
        while not self._stop.is_set():
            nv12, mono16 = self.frames[self.sent % len(self.frames)]
            sec, nanosec = ns_to_sec_nanosec(time.time_ns())
            for publisher, fields in (
                (self.rgb_pub, ImageFields(HEIGHT, WIDTH, 'nv12', 0, WIDTH, nv12)),
                (self.depth_pub, ImageFields(HEIGHT, WIDTH, 'mono16', 0, WIDTH * 2, mono16)),
            ):
                msg = image_type(**fields.as_kwargs())
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
                msg.header.frame_id = 'camera_depth_frame'
                publisher.publish(msg)
            info.header.stamp.sec, info.header.stamp.nanosec = sec, nanosec
            self.info_pub.publish(info)
            self.sent += 1
            self._stop.wait(max(0.0, start + self.sent / self.rate_hz - time.monotonic()))

    def start_feed(self) -> None:
        self._feed.start()

    def call(self, client: Any, request: Any, timeout_s: float = 15.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f'service {client.srv_name} not available')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not future.done():
            raise RuntimeError(f'service {client.srv_name} did not answer')
        return future.result()

    def record(self, on: bool) -> str:
        continuous_type, start_type, stop_type = self._types[2], self._types[3], self._types[4]
        if on:
            self.call(self.start_session, start_type.Request(name='soak'))
            answer = self.call(self.continuous, continuous_type.Request(label='good', note='soak'))
            return answer.message
        self.call(self.continuous, continuous_type.Request(label=''))
        stopped = self.call(self.stop_session, stop_type.Request())
        return f'{stopped.pairs_recorded} pairs recorded in {stopped.bag_path}'

    def close(self) -> None:
        import rclpy

        self._stop.set()
        if self._feed.is_alive():
            self._feed.join(timeout=5.0)
        self.executor.shutdown()
        self._spin.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def write_model(path: Path) -> str:
    from tests.inference.models import write_model as write_test_model

    write_test_model(path, name='soak', version='1')
    return 'synthetic test classifier (tests/inference/models.py)'


def growth(first: float, last: float) -> str:
    return f'{(last - first) / first * 100:+.1f} %' if first else 'n/a'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=10.0)
    parser.add_argument('--warmup-s', type=float, default=60.0)
    parser.add_argument(
        '--rate-hz', type=float, default=15.0, help='stereo frames per second (vendor: <= 30)'
    )
    parser.add_argument(
        '--record',
        default='20-50,0.3-0.6',
        help='recording windows: the first in seconds (inside the warm-up, so every code path has run '
        'once before the baseline), the others as fractions of the run',
    )
    parser.add_argument('--sample-s', type=float, default=10.0)
    parser.add_argument('--model', type=Path, help='an exported model (default: a synthetic one)')
    args = parser.parse_args()
    total_s = args.minutes * 60.0
    windows = []
    for index, window in enumerate(args.record.split(',')):
        start_text, _, end_text = window.partition('-')
        scale = 1.0 if index == 0 else total_s
        windows.append((float(start_text) * scale, float(end_text) * scale))

    with tempfile.TemporaryDirectory(prefix='weld-soak-') as scratch, exclusive_domain() as domain_id:
        work = Path(scratch)
        models = work / 'models'
        models.mkdir()
        if args.model:
            (models / args.model.name).write_bytes(args.model.read_bytes())
            model_note = str(args.model)
        else:
            model_note = write_model(models / 'soak.onnx')
        layer = yaml.safe_load((graph.config_dir() / 'board_stereonet.yaml').read_text())
        layer['weld_labeler'] = {
            'ros__parameters': {'export_dir': str(work / 'exports'), 'auto_start_session': False}
        }
        layer_file = work / 'site.yaml'
        layer_file.write_text(yaml.safe_dump(layer))
        launches = graph.resolve(
            {
                'params_file': str(layer_file),
                'models_dir': str(models),
                'recording_dir': str(work / 'sessions'),
            },
            graph.config_dir(),
        )
        print(
            f'soak: Python {sys.version.split()[0]}, numpy {np.__version__}, model {model_note}, '
            f'{args.rate_hz:g} Hz {WIDTH}x{HEIGHT} nv12 + mono16, {args.minutes:g} min, '
            f'warm-up {args.warmup_s:g} s, '
            f'recording {", ".join(f"{a:.0f}-{b:.0f} s" for a, b in windows)}, ROS_DOMAIN_ID {domain_id}',
            flush=True,
        )
        frames = vendor_frames(12)
        runner = GraphRunner(
            launches, loopback_env(domain_id), work / 'run', echo=None, log_dir=work / 'logs'
        )
        driver = Driver(domain_id, frames, args.rate_hz)
        traces: list[NodeTrace] = []
        try:
            runner.start()
            traces = [NodeTrace(node.launch.spec.key, node.process.pid) for node in runner.nodes]
            deadline = time.monotonic() + 60.0
            while driver.diag('weld_inference: inference', 'model_id') == '':
                if time.monotonic() > deadline or runner.exited():
                    raise RuntimeError(
                        'the graph did not come up with the model; logs: ' + str(work / 'logs')
                    )
                time.sleep(0.2)
            driver.start_feed()
            start = time.monotonic()
            recording = False
            next_sample = 0.0
            while (elapsed := time.monotonic() - start) < total_s:
                if runner.exited():
                    raise RuntimeError(f'a node ended during the soak; logs in {work / "logs"}')
                wanted = any(begin <= elapsed < end for begin, end in windows)
                if wanted != recording:
                    state = 'on' if wanted else 'off'
                    print(f'[{elapsed:5.0f} s] recording {state}: {driver.record(wanted)}', flush=True)
                    recording = wanted
                if elapsed >= next_sample:
                    for trace in traces:
                        sample(trace, elapsed)
                    next_sample += args.sample_s
                time.sleep(0.2)
            driver._stop.set()
            time.sleep(3.0)  # the last pairs drain, diagnostics catch up
            for trace in traces:
                sample(trace, time.monotonic() - start)
            report(traces, driver, args.warmup_s)
        finally:
            driver.close()
            codes = runner.stop()
            print(f'exit codes: {codes}')
    return 0


def report(traces: list[NodeTrace], driver: Driver, warmup_s: float) -> None:
    print(
        f'\n{"node":<10} {"RSS warm MB":>11} {"RSS end MB":>10} {"growth":>8} {"fds":>9} '
        f'{"threads":>9} {"shm":>7}'
    )
    for trace in traces:
        warm = next(s for s in trace.samples if s.at_s >= warmup_s)
        end = trace.samples[-1]
        after = [s for s in trace.samples if s.at_s >= warmup_s]
        peak_fds, peak_threads = max(s.fds for s in after), max(s.threads for s in after)
        print(
            f'{trace.key:<10} {warm.rss_mb:>11.1f} {end.rss_mb:>10.1f} {growth(warm.rss_mb, end.rss_mb):>8} '
            f'{warm.fds:>4}->{end.fds:<4} {warm.threads:>4}->{end.threads:<4} {warm.shm:>3}->{end.shm:<3}'
            f'  (after warm-up: max fds {peak_fds}, max threads {peak_threads})'
        )
    print('\nRSS MB / threads each minute:')
    for trace in traces:
        minutes = [
            next(s for s in trace.samples if s.at_s >= minute * 60)
            for minute in range(int(trace.samples[-1].at_s // 60) + 1)
        ] + [trace.samples[-1]]
        timeline = ' '.join(f'{s.rss_mb:.0f}/{s.threads}' for s in minutes)
        warm = next(s for s in trace.samples if s.at_s >= warmup_s)
        added = sorted((Counter(trace.samples[-1].thread_names) - Counter(warm.thread_names)).elements())
        print(f'  {trace.key:<10} {timeline}' + (f'  (threads new since warm-up: {added})' if added else ''))
    camera, inference = 'weld_camera: camera', 'weld_inference: inference'
    published = int(driver.diag(camera, 'pairs_published') or 0)
    paired = int(driver.diag(inference, 'pairs_paired') or 0)
    answered = int(driver.diag(inference, 'answered') or 0)
    skipped = int(driver.diag(inference, 'skipped') or 0)
    rejected = int(driver.diag(inference, 'rejected_frames') or 0)
    print(
        f'\nsent by the stand-in driver {driver.sent}, relayed by the camera {published}; '
        f'inference: paired {paired}, '
        f'answered {answered} (model {driver.diag(inference, "source_model")}, rules '
        f'{driver.diag(inference, "source_rules")}), skipped {skipped}, rejected {rejected}, '
        f'unaccounted {paired - answered - skipped - rejected}; latency p95 '
        f'{driver.diag(inference, "latency_ms_p95")} ms'
    )


if __name__ == '__main__':
    sys.exit(main())
