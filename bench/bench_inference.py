"""Benchmark of weld_inference: raw model call, node latency and delivery at 10/30 Hz VGA, rules cost.

Prints, in one run:
1. model: the raw ONNX Runtime call (``session.run`` on a preprocessed tensor, nothing else), the
   shared preprocessing of one VGA pair, and both together (p50/p95 ms);
2. rules: the rule detector's time per pair at 640x480 and 320x240 (p50/p95 ms);
3. node at 10 Hz and 30 Hz (VGA rgb8 + 32FC1 from this process over loopback DDS, the node in its own
   process with sensor-data QoS as deployed): the node's own receive-to-publish latency
   (``DefectResult.latency_ms``, p50/p95), the publish-to-receive latency seen here, delivered
   results per pair sent, pairs the node skipped (latest-frame-wins) and the node's CPU (% of one
   core); once with the model and once with no model (rules only);
4. the target check: node p95 <= 1.2 x raw call p95 + 2 ms, and no unanswered pair.

Frames come from the weld_camera simulator (a handful of VGA frames, cycled). The model is an
exported ``--model`` file, or by default the network of the training's default config
(training/configs/default.yaml, untrained: the cost does not depend on the weights) exported here
with the training's metadata.

    .venv/bin/python bench/bench_inference.py [--seconds 10] [--model models/weld.onnx] [--threads 2]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # training/ is a folder of the checkout, not an installed package


def percentiles(values: list[float]) -> str:
    if not values:
        return 'n/a'
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return f'p50 {p50:7.2f}  p95 {p95:7.2f}'


def sim_frames(count: int, width: int = 640, height: int = 480) -> list[tuple[np.ndarray, np.ndarray]]:
    from weld_camera.sim import SimConfig, WeldSimulator

    simulator = WeldSimulator(SimConfig(width=width, height=height, seed=7))
    frames = []
    for _ in range(count):
        frame = simulator.next()
        frames.append((frame.rgb, frame.depth_m))
    return frames


def export_default_model(path: Path) -> None:
    """The network of training/configs/default.yaml, untrained, exported with its metadata."""
    import yaml

    from training.config import DEFAULT_CONFIG
    from training.export import build_metadata, write_onnx
    from training.module import WeldClassifier
    from weld_core.preprocess import expand_channels

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    model = WeldClassifier(
        input_channels=expand_channels(config['data']['channels']),
        input_size=tuple(config['data']['input_size']),
        preprocess=config['data'].get('preprocess'),
        **config['model'],
    ).eval()
    metadata = build_metadata(model, Path('untrained.ckpt'), {}, 'untrained (benchmark)', 'bench')
    write_onnx(model, path, metadata)


def bench_model(path: Path, frames: list, threads: int, calls: int) -> dict[str, list[float]]:
    from weld_inference.model_runner import ModelRunner

    runner = ModelRunner.load(path, intra_op_threads=threads, inter_op_threads=1)
    tensors = [runner.preprocess(rgb, depth) for rgb, depth in frames]
    for tensor in tensors:
        runner.run_tensor(tensor)
    raw, pre, both, pre_cpu = [], [], [], []
    for index in range(calls):
        rgb, depth = frames[index % len(frames)]
        t0, c0 = time.perf_counter(), time.thread_time()
        tensor = runner.preprocess(rgb, depth)
        t1, c1 = time.perf_counter(), time.thread_time()
        runner.session.run([runner.output_name], {runner.info.input_name: tensor})
        t2 = time.perf_counter()
        pre.append((t1 - t0) * 1e3)
        pre_cpu.append((c1 - c0) * 1e3)
        raw.append((t2 - t1) * 1e3)
        both.append((t2 - t0) * 1e3)
    return {
        'raw': raw,
        'preprocess': pre,
        'preprocess_cpu': pre_cpu,
        'both': both,
        'model_id': [runner.model_id],
    }  # type: ignore[dict-item]


def bench_rules(frames: list, calls: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (this thread) ms per pair of the rule detector."""
    from weld_inference.rules import RuleDetector

    detector = RuleDetector()
    detector(*frames[0])
    wall, cpu = [], []
    for index in range(calls):
        rgb, depth = frames[index % len(frames)]
        t0, c0 = time.perf_counter(), time.thread_time()
        detector(rgb, depth)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return wall, cpu


class Driver:
    """This process's side: publishes VGA pairs, receives DefectResults and /diagnostics."""

    def __init__(self, domain_id: int, frames: list) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import Image

        from weld_core.images import array_to_image, depth_m_to_image
        from weld_interfaces.msg import DefectResult

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('bench_inference_driver', context=self.context)
        images = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        self.rgb_pub = self.node.create_publisher(Image, '/weld/rgb/image_raw', images)
        self.depth_pub = self.node.create_publisher(Image, '/weld/depth/image_raw', images)
        reliable = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.results: dict[int, tuple[float, float, str]] = {}  # stamp -> (node latency, e2e ms, source)
        self.sent_at: dict[int, float] = {}
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(DefectResult, '/weld/defects', self._on_result, reliable)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, reliable)
        self.messages = [
            (
                Image(**array_to_image(rgb, 'rgb8').as_kwargs()),
                Image(**depth_m_to_image(depth, '32FC1').as_kwargs()),
            )
            for rgb, depth in frames
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_result(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        now = time.perf_counter()
        with self.lock:
            sent = self.sent_at.get(stamp)
            e2e = (now - sent) * 1e3 if sent is not None else float('nan')
            self.results[stamp] = (float(msg.latency_ms), e2e, msg.source)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == 'weld_inference: inference':
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait_for_node(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (
                self.rgb_pub.get_subscription_count()
                and self.depth_pub.get_subscription_count()
                and self.diagnostics
            ):
                return
            time.sleep(0.05)
        raise RuntimeError('the inference node did not come up')

    def run(self, rate_hz: float, seconds: float, first_stamp_s: int) -> list[int]:
        period = 1.0 / rate_hz
        count = int(rate_hz * seconds)
        stamps = []
        start = time.perf_counter()
        for index in range(count):
            stamp = first_stamp_s * 1_000_000_000 + index * int(period * 1e9)
            rgb, depth = self.messages[index % len(self.messages)]
            rgb.header.stamp.sec, rgb.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            depth.header.stamp = rgb.header.stamp
            with self.lock:
                self.sent_at[stamp] = time.perf_counter()
            self.rgb_pub.publish(rgb)
            self.depth_pub.publish(depth)
            stamps.append(stamp)
            delay = start + (index + 1) * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        time.sleep(1.0)  # the last results
        return stamps

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run_node_phase(
    driver: Driver, process: psutil.Process, rate_hz: float, seconds: float, first_stamp_s: int
) -> dict[str, Any]:
    with driver.lock:
        skipped_before = int(driver.diagnostics.get('skipped', '0'))
    cpu_before = sum(process.cpu_times()[:2])
    wall_before = time.perf_counter()
    stamps = driver.run(rate_hz, seconds, first_stamp_s)
    seconds_run = time.perf_counter() - wall_before
    cpu = (sum(process.cpu_times()[:2]) - cpu_before) / seconds_run
    time.sleep(1.2)  # one more /diagnostics
    with driver.lock:
        answered = [driver.results[s] for s in stamps if s in driver.results]
        skipped = int(driver.diagnostics.get('skipped', '0')) - skipped_before
    sources = {source for _, _, source in answered}
    return {
        'sent': len(stamps),
        'answered': len(answered),
        'skipped': skipped,
        'node_ms': [a[0] for a in answered],
        'e2e_ms': [a[1] for a in answered],
        'cpu_pct': 100.0 * cpu,
        'cpu_ms_per_pair': 1e3 * cpu * seconds_run / max(len(answered), 1),
        'sources': ','.join(sorted(sources)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0, help='duration of each node phase')
    parser.add_argument(
        '--model', type=Path, help='an exported .onnx (default: the default network, untrained)'
    )
    parser.add_argument(
        '--threads', type=int, default=2, help='ONNX Runtime intra-op threads (node and raw call)'
    )
    parser.add_argument('--calls', type=int, default=100, help='calls for the raw model and rules timings')
    args = parser.parse_args()

    from weld_core.ros_env import exclusive_domain, loopback_env

    print(f'machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}')
    frames = sim_frames(6)
    with tempfile.TemporaryDirectory(prefix='bench-inference-') as temp:
        models = Path(temp) / 'models'
        models.mkdir()
        model_path = models / 'bench.onnx'
        if args.model:
            model_path.write_bytes(args.model.read_bytes())
        else:
            export_default_model(model_path)
        timings = bench_model(model_path, frames, args.threads, args.calls)
        raw_p95 = float(np.percentile(timings['raw'], 95))
        print(
            f'\nmodel {timings["model_id"][0]} ({args.threads} intra-op threads), ms over {args.calls} calls:'
        )
        print(f'  raw ONNX Runtime call      {percentiles(timings["raw"])}')
        print(f'  preprocessing (VGA pair)   {percentiles(timings["preprocess"])}')
        print(f'    its CPU time (1 thread)  {percentiles(timings["preprocess_cpu"])}')
        print(f'  preprocessing + call       {percentiles(timings["both"])}')
        rules_vga, rules_vga_cpu = bench_rules(frames, args.calls // 2)
        rules_qvga, rules_qvga_cpu = bench_rules(sim_frames(4, 320, 240), args.calls // 2)
        print('\nrules per pair, ms (wall; CPU of the thread):')
        print(f'  640x480                    {percentiles(rules_vga)};  CPU {percentiles(rules_vga_cpu)}')
        print(f'  320x240                    {percentiles(rules_qvga)};  CPU {percentiles(rules_qvga_cpu)}')

        phases = [('model', 10.0), ('model', 30.0), ('rules only', 10.0)]
        rows = []
        with exclusive_domain() as domain_id:
            env = loopback_env(domain_id)
            env['PYTHONUNBUFFERED'] = '1'
            driver = Driver(domain_id, frames)
            try:
                for stage, (what, rate) in enumerate(phases):
                    folder = models if what == 'model' else Path(temp) / 'empty'
                    folder.mkdir(exist_ok=True)
                    log = open(Path(temp) / f'node{stage}.log', 'wb')  # noqa: SIM115 - closed below
                    command = [
                        sys.executable,
                        '-m',
                        'weld_inference.inference_node',
                        '--ros-args',
                        '-p',
                        f'models_dir:={folder}',
                        '-p',
                        'max_rate_hz:=0.0',
                        '-p',
                        f'ort_intra_op_num_threads:={args.threads}',
                        '-p',
                        'model_budget_ms:=1000.0',
                    ]
                    node = subprocess.Popen(
                        command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
                    )
                    try:
                        driver.diagnostics = {}
                        driver.wait_for_node()
                        time.sleep(1.0)
                        result = run_node_phase(
                            driver, psutil.Process(node.pid), rate, args.seconds, 1000 * (stage + 1)
                        )
                    finally:
                        node.send_signal(2)
                        node.wait(timeout=20)
                        log.close()
                    rows.append((what, rate, result))
            finally:
                driver.close()

        print(f'\nnode, VGA rgb8 + 32FC1 over loopback DDS, {args.seconds:g} s per phase, ms:')
        for what, rate, r in rows:
            print(
                f'  {what:10s} {rate:4.0f} Hz: delivered {r["answered"]}/{r["sent"]} '
                f'({100.0 * r["answered"] / max(r["sent"], 1):.1f} %), skipped {r["skipped"]}, '
                f'node CPU {r["cpu_pct"]:.0f} % of a core ({r["cpu_ms_per_pair"]:.1f} ms per answered pair), '
                f'source {r["sources"]}'
            )
            print(f'      receive->publish (node)  {percentiles(r["node_ms"])}')
            print(f'      publish->receive (here)  {percentiles(r["e2e_ms"])}')
        both_p95 = float(np.percentile(timings['both'], 95))
        print('\ntarget: node p95 <= 1.2 x raw call p95 + 2 ms, and no unanswered pair at the rate')
        print('  (the node also preprocesses, so it is checked against the direct runtime path too:')
        print('   preprocessing + call in a plain loop; the difference is what the node itself adds)')
        for what, rate, r in rows:
            if what != 'model':
                continue
            p95 = float(np.percentile(r['node_ms'], 95)) if r['node_ms'] else float('nan')
            unanswered = r['sent'] - r['answered']
            for label, reference in (('raw call', raw_p95), ('preprocessing + call', both_p95)):
                limit = 1.2 * reference + 2.0
                verdict = 'met' if p95 <= limit else 'NOT met'
                print(
                    f'  {rate:4.0f} Hz vs {label:21s}: node p95 {p95:7.2f} ms, '
                    f'limit {limit:7.2f} ms -> {verdict}'
                )
            print(
                f'  {rate:4.0f} Hz unanswered pairs: {unanswered} -> '
                f'{"met" if unanswered == 0 else "NOT met"}'
            )
        print(f'\nmachine load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
