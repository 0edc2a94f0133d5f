"""Benchmark of weld_camera: simulator rendering, free-running publish rate, and 30 Hz delivery.

Prints, per resolution (default 640x480 and 320x240):
1. render: the simulator alone in this process (wall and CPU ms per frame) and the cost of encoding
   a frame pair into Image bytes;
2. free-running sim: the camera node (its own process, rate_hz 1000) publishing as fast as frames
   come; achieved rate at a subscriber in this process, node CPU per published pair, split into
   rendering (the render thread's CPU time, from the node's /diagnostics) and publishing (the rest);
3. 30 Hz sim: delivered rate, latency header stamp -> receive (p50/p95) at this process, lost
   pairs (published per the node's counter minus complete pairs received), and the cores the node
   spends on publishing with rendering set aside;
4. 30 Hz publishing only: the same node replaying a raw bag of simulator frames (no rendering, no
   decoding: raw rgb8/32FC1 pass through), to show the publishing path alone at 30 Hz.

The subscriber uses sensor-data QoS (BEST_EFFORT), as the contract's consumers do. Every figure
comes from this run; the machine's load (printed) moves them.

    .venv/bin/python bench/bench_camera.py [--seconds 8] [--resolutions 640x480,320x240] [--render-workers 0]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000


def render_cost(width: int, height: int, frames: int) -> dict[str, float]:
    from weld_camera.sim import SimConfig, WeldSimulator
    from weld_core.images import array_to_image, depth_m_to_image

    simulator = WeldSimulator(SimConfig(width=width, height=height, seed=0))
    simulator.next()  # first frame builds texture banks
    wall, cpu, encode = [], [], []
    for _ in range(frames):
        w0, c0 = time.perf_counter(), time.process_time()
        frame = simulator.next()
        w1, c1 = time.perf_counter(), time.process_time()
        array_to_image(frame.rgb, 'rgb8')
        depth_m_to_image(frame.depth_m, '32FC1')
        encode.append(time.perf_counter() - w1)
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
    return {
        'wall_ms': 1e3 * statistics.median(wall),
        'cpu_ms': 1e3 * statistics.median(cpu),
        'encode_ms': 1e3 * statistics.median(encode),
    }


class Listener:
    """Subscribes to the camera's rgb + depth and the node's diagnostics, in this process."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('bench_camera_listener', context=self.context)
        self.rgb: dict[int, int] = {}
        self.depth: dict[int, int] = {}
        self.counters: dict[str, str] = {}
        self.recording = False
        self._lock = threading.Lock()
        self.node.create_subscription(
            Image, '/weld/rgb/image_raw', lambda m: self._on_image(self.rgb, m), qos_profile_sensor_data
        )
        self.node.create_subscription(
            Image, '/weld/depth/image_raw', lambda m: self._on_image(self.depth, m), qos_profile_sensor_data
        )
        self.node.create_subscription(
            DiagnosticArray,
            '/diagnostics',
            self._on_diagnostics,
            QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE),
        )
        self.change_state = self.node.create_client(ChangeState, '/weld_camera/change_state')
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_image(self, into: dict[int, int], msg: Any) -> None:
        received = time.time_ns()
        if self.recording:
            with self._lock:
                into[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = received

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith('weld_camera'):
                with self._lock:
                    self.counters = {kv.key: kv.value for kv in status.values}

    def counter(self, key: str, default: float = 0.0) -> float:
        with self._lock:
            return float(self.counters.get(key, default))

    def transition(self, transition_id: int) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        if not self.change_state.wait_for_service(timeout_sec=30.0):
            raise RuntimeError('the camera node has no lifecycle service')
        future = self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        deadline = time.monotonic() + 30.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not future.result().success:
            raise RuntimeError(f'lifecycle transition {transition_id} failed')

    def reset(self) -> None:
        with self._lock:
            self.rgb, self.depth = {}, {}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@contextmanager
def camera_process(env: dict[str, str], params: dict[str, Any]) -> Iterator[psutil.Process]:
    args = [sys.executable, '-m', 'weld_camera.camera_node', '--ros-args']
    for name, value in {**params, 'autostart': False}.items():
        text = ('true' if value else 'false') if isinstance(value, bool) else str(value)
        args += ['-p', f'{name}:={text}']
    process = subprocess.Popen(
        args,
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield psutil.Process(process.pid)
    finally:
        process.send_signal(2)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_case(
    listener: Listener, env: dict[str, str], params: dict[str, Any], seconds: float
) -> dict[str, float]:
    """Configure + activate the node, record ``seconds``, deactivate; figures from both ends."""
    from lifecycle_msgs.msg import Transition

    with camera_process(env, params) as process:
        listener.transition(Transition.TRANSITION_CONFIGURE)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not (
            listener.node.count_publishers('/weld/rgb/image_raw')
            and listener.node.count_publishers('/weld/depth/image_raw')
        ):
            time.sleep(0.05)
        time.sleep(1.0)  # let the publishers and this subscriber match before the first frame
        listener.reset()
        listener.recording = True
        listener.transition(Transition.TRANSITION_ACTIVATE)
        deadline = time.monotonic() + 60.0
        while not listener.rgb and time.monotonic() < deadline:  # render processes take a while to start
            time.sleep(0.05)
        time.sleep(1.5)  # warm-up: render queue filled, a diagnostics message with running counters
        cpu0 = sum(process.cpu_times()[:2])
        published0, render0 = listener.counter('pairs_published'), listener.counter('render_cpu_s')
        t0, t0_ns = time.monotonic(), time.time_ns()
        time.sleep(seconds)
        cpu1 = sum(process.cpu_times()[:2])
        published1, render1 = listener.counter('pairs_published'), listener.counter('render_cpu_s')
        elapsed, t1_ns = time.monotonic() - t0, time.time_ns()
        listener.transition(Transition.TRANSITION_DEACTIVATE)
        time.sleep(1.5)  # in-flight frames land; the node's next diagnostics carry the final count
        listener.recording = False
        published_total = listener.counter('pairs_published')
    with listener._lock:
        rgb, depth = dict(listener.rgb), dict(listener.depth)
    complete = set(rgb) & set(depth)
    latencies = [(max(rgb[s], depth[s]) - s) / MS for s in complete]
    window_pairs = max(published1 - published0, 1.0)
    node_cpu = cpu1 - cpu0
    render_cpu = render1 - render0
    # render processes burn their CPU outside the node process: nothing to set aside there
    in_process_render_cpu = render_cpu if listener.counter('render_processes') == 0 else 0.0
    return {
        'published_hz': (published1 - published0) / elapsed,
        'delivered_hz': sum(1 for s in complete if t0_ns <= rgb[s] < t1_ns) / elapsed,
        'published': published_total,
        'complete_pairs': len(complete),
        'lost': published_total - len(complete),
        'latency_p50_ms': float(np.percentile(latencies, 50)) if latencies else float('nan'),
        'latency_p95_ms': float(np.percentile(latencies, 95)) if latencies else float('nan'),
        'node_cpu_ms_per_pair': 1e3 * node_cpu / window_pairs,
        'render_cpu_ms_per_pair': 1e3 * render_cpu / window_pairs,
        'publish_cpu_ms_per_pair': 1e3 * (node_cpu - in_process_render_cpu) / window_pairs,
        'publish_cores': (node_cpu - in_process_render_cpu) / elapsed,
        'node_cores': node_cpu / elapsed,
    }


def write_raw_bag(path: Path, width: int, height: int, frames: int) -> None:
    """A raw rgb8 + 32FC1 bag of simulator frames at 30 Hz, for the publishing-only case."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from weld_camera.sim import SimConfig, WeldSimulator
    from weld_core.bag_types import IMAGE, weld_typestore
    from weld_core.images import array_to_image, depth_m_to_image

    store = weld_typestore()
    types = store.types
    simulator = WeldSimulator(SimConfig(width=width, height=height, seed=1))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        rgb_conn = writer.add_connection('/weld/rgb/image_raw', IMAGE, typestore=store)
        depth_conn = writer.add_connection('/weld/depth/image_raw', IMAGE, typestore=store)
        for index in range(frames):
            frame = simulator.next()
            stamp = 1_700_000_000_000_000_000 + index * 33_333_333
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id='f',
            )
            for conn, fields in (
                (rgb_conn, array_to_image(frame.rgb, 'rgb8')),
                (depth_conn, depth_m_to_image(frame.depth_m, '32FC1')),
            ):
                msg = types[IMAGE](header=header, **fields.as_kwargs(numpy_data=True))
                writer.write(conn, stamp, store.serialize_cdr(msg, IMAGE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=8.0, help='measurement window per case')
    parser.add_argument('--resolutions', default='640x480,320x240')
    parser.add_argument('--render-workers', default='0', help='comma list of sim_render_workers to try')
    parser.add_argument('--render-frames', type=int, default=10)
    args = parser.parse_args()

    from weld_core.ros_env import exclusive_domain, loopback_env

    print(f'machine: {os.cpu_count()} cores, load average {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    with exclusive_domain() as domain_id, tempfile.TemporaryDirectory() as tmp:
        env = loopback_env(domain_id)
        os.environ.update({k: v for k, v in env.items() if k != 'ROS_DOMAIN_ID'})
        listener = Listener(domain_id)
        try:
            for resolution in args.resolutions.split(','):
                width, height = (int(v) for v in resolution.split('x'))
                print(f'\n== {width}x{height} ==')
                cost = render_cost(width, height, args.render_frames)
                print(
                    f'render (in-process, median of {args.render_frames}): {cost["wall_ms"]:.1f} ms wall, '
                    f'{cost["cpu_ms"]:.1f} ms CPU per frame; encoding the pair into Image bytes '
                    f'{cost["encode_ms"]:.2f} ms'
                )
                base = {'width': width, 'height': height, 'depth_encoding': '32FC1'}
                for workers in (int(v) for v in args.render_workers.split(',')):
                    free = run_case(
                        listener,
                        env,
                        {**base, 'rate_hz': 1000.0, 'sim_render_workers': workers},
                        args.seconds,
                    )
                    render_where = 'render thread' if workers == 0 else f'{workers} render processes'
                    print(
                        f'free-running sim ({render_where}): {free["published_hz"]:.1f} pairs/s published, '
                        f'{free["delivered_hz"]:.1f} delivered; CPU per pair: '
                        f'rendering {free["render_cpu_ms_per_pair"]:.1f} ms, '
                        f'publishing (node process less its render thread) '
                        f'{free["publish_cpu_ms_per_pair"]:.1f} ms/pair'
                    )
                    paced = run_case(
                        listener, env, {**base, 'rate_hz': 30.0, 'sim_render_workers': workers}, args.seconds
                    )
                    _print_paced(f'sim at 30 Hz ({render_where})', paced)
                bag = Path(tmp) / f'raw_{width}x{height}'
                write_raw_bag(bag, width, height, 60)
                replay = run_case(
                    listener,
                    env,
                    {**base, 'source': 'replay', 'bag_path': str(bag), 'loop': True, 'replay_rate': '30'},
                    args.seconds,
                )
                _print_paced('publishing only at 30 Hz (raw bag replay, no rendering)', replay)
        finally:
            listener.close()


def _print_paced(title: str, r: dict[str, float]) -> None:
    print(
        f'{title}: delivered {r["delivered_hz"]:.1f} Hz, latency p50 {r["latency_p50_ms"]:.1f} ms / '
        f'p95 {r["latency_p95_ms"]:.1f} ms, lost {r["lost"]:.0f} of {r["published"]:.0f} pairs; '
        f'publishing {r["publish_cores"]:.3f} cores ({r["publish_cpu_ms_per_pair"]:.1f} ms/pair), '
        f'node total {r["node_cores"]:.3f} cores'
    )


if __name__ == '__main__':
    main()
