"""Benchmark of weld_inference: per-pair cost on one core, an A55 estimate, the rules, the node over DDS.

Prints, in one run:
1. per pair, one thread (ONNX Runtime intra-op 1, OpenCV 1 thread), at the board camera's sizes
   640x480 and 320x240: decode (Image messages, deserialised as a subscription delivers them ->
   arrays, with weld_core.images as the node does), preprocessing (the model's own
   weld_core.preprocess), the model call (ONNX Runtime on the preprocessed tensor) and the whole path
   (the three in sequence, timed as one): p50/p95 wall ms and the thread's CPU ms, for each ``--model``
   (give the FP32 and the INT8 export to compare them);
2. the per-pair targets as ratios of this run: preprocessing <= the model call at VGA, whole path
   <= 6 ms at VGA;
3. the estimate for one Cortex-A55 core of the RDK X5 (1.5 GHz): the whole path times the
   x86 -> A55 factor of :data:`A55_FACTOR` (published single-thread figures, see there);
4. the rules (weld_inference.rules) per pair at both sizes, target <= 10 ms at VGA;
5. the node (its own process, VGA rgb8 + 32FC1 from this process over loopback DDS, sensor-data
   QoS as deployed, ``--threads`` intra-op threads): publish->result seen here and the node's own
   receive->publish (``DefectResult.latency_ms``) p50/p95, delivered results per pair sent, skipped
   pairs and the node's CPU, with the model at 10 and 30 Hz and with no model (rules only); the
   target: publish->result p95 <= 1.2 x the whole path's p95 + 2 ms.

Frames come from the weld_camera simulator (a handful of frames per size, cycled). The model is an
exported ``--model`` file, or by default the network of the training's default config
(training/configs/default.yaml, untrained: the cost does not depend on the weights) exported here
with the training's metadata.

    .venv/bin/python bench/bench_inference.py [--seconds 10] [--model models/weld.onnx ...] [--threads 1]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # training/ is a folder of the checkout, not an installed package

SIZES = ((640, 480), (320, 240))
PATH_TARGET_MS = 6.0  # decode + preprocessing + model per VGA pair, one core of this machine
RULES_TARGET_MS = 10.0


@dataclass(frozen=True)
class A55Factor:
    """How many times longer one Cortex-A55 core of the RDK X5 takes than one core of this machine."""

    low: float
    typical: float
    high: float
    source: str


# ncnn's benchncnn, one thread, 23 float32 CNNs (Tencent/ncnn benchmark/README.md, commit a4d2ea1):
# Rock3A, Rockchip RK3568 (Cortex-A55 2.0 GHz) against AMD EPYC 7742 (Zen 2, as this machine's EPYC):
# median 6.0x, interquartile 5.2-7.1x; the RDK X5 clocks its A55 cores at 1.5 GHz (D-Robotics
# rdk_doc), x 2.0 / 1.5. Uncertain: this machine is a shared Zen 2 vCPU of unknown clock, not an
# EPYC 7742; a CNN benchmark stands in for a path that is part OpenCV filters and numpy (memory
# bound, Python overhead), which the in-order A55 may run relatively slower or faster; no board was
# measured. Treat the estimate as a range, not a figure.
A55_FACTOR = A55Factor(
    low=5.2 * 2.0 / 1.5,
    typical=6.0 * 2.0 / 1.5,
    high=7.1 * 2.0 / 1.5,
    source='ncnn benchncnn 1 thread: RK3568 A55 2.0 GHz vs EPYC 7742, median (IQR) of 23 CNNs, x 2.0/1.5 GHz',
)


def percentiles(values: list[float]) -> str:
    if not values:
        return 'n/a'
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return f'p50 {p50:7.2f}  p95 {p95:7.2f}'


def p50(values: list[float]) -> float:
    return float(np.percentile(values, 50)) if values else float('nan')


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float('nan')


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


def received_messages(frames: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[Any, Any]]:
    """rgb8 + 32FC1 Image messages as a subscription hands them over (serialised, then deserialised)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from weld_core.images import array_to_image, depth_m_to_image

    def through_the_wire(fields: Any) -> Any:
        return deserialize_message(serialize_message(Image(**fields.as_kwargs())), Image)

    return [
        (through_the_wire(array_to_image(rgb, 'rgb8')), through_the_wire(depth_m_to_image(depth, '32FC1')))
        for rgb, depth in frames
    ]


@dataclass
class StageTimes:
    """Wall and thread-CPU ms of each stage of the per-pair path, one list entry per pair."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


STAGES = ('decode', 'preprocessing', 'model call', 'whole path')


def pair_costs(model_path: Path, messages: list[tuple[Any, Any]], calls: int) -> tuple[StageTimes, str]:
    """Decode + preprocessing + model call per pair on one thread, each stage timed, as the node runs them."""
    from weld_core.images import depth_m_from_msg, rgb_from_msg
    from weld_inference.model_runner import ModelRunner

    runner = ModelRunner.load(model_path, intra_op_threads=1, inter_op_threads=1)
    feed = runner.info.input_name

    def one(rgb_msg: Any, depth_msg: Any) -> list[tuple[float, float]]:
        marks = [(time.perf_counter(), time.thread_time())]
        rgb, depth = rgb_from_msg(rgb_msg), depth_m_from_msg(depth_msg)
        marks.append((time.perf_counter(), time.thread_time()))
        tensor = runner.preprocess(rgb, depth)
        marks.append((time.perf_counter(), time.thread_time()))
        runner.session.run([runner.output_name], {feed: tensor})
        marks.append((time.perf_counter(), time.thread_time()))
        return marks

    for rgb_msg, depth_msg in messages:  # warm-up: first calls allocate
        one(rgb_msg, depth_msg)
    times = StageTimes({s: [] for s in STAGES}, {s: [] for s in STAGES})
    for index in range(calls):
        marks = one(*messages[index % len(messages)])
        spans = [(marks[i], marks[i + 1]) for i in range(3)] + [(marks[0], marks[3])]
        for stage, (start, stop) in zip(STAGES, spans, strict=True):
            times.wall[stage].append((stop[0] - start[0]) * 1e3)
            times.cpu[stage].append((stop[1] - start[1]) * 1e3)
    return times, runner.model_id


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


def print_pair_costs(results: dict[tuple[str, int, int], StageTimes], calls: int) -> None:
    print(f'\nper pair, one thread (ONNX Runtime intra-op 1, OpenCV 1 thread), ms over {calls} pairs:')
    for (model_id, width, height), times in results.items():
        print(f'  {model_id} at {width}x{height}:')
        for stage in STAGES:
            print(
                f'    {stage:14s} wall {percentiles(times.wall[stage])};  '
                f'CPU p50 {p50(times.cpu[stage]):7.2f}'
            )


def print_targets(results: dict[tuple[str, int, int], StageTimes]) -> None:
    print(
        '\ntargets (VGA; one core: the thread CPU time, which a machine shared with other jobs inflates less '
        f'than the wall time; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):'
    )
    for (model_id, width, _height), times in results.items():
        if width != 640:
            continue
        pre, call = p50(times.cpu['preprocessing']), p50(times.cpu['model call'])
        path = p50(times.cpu['whole path'])
        print(
            f'  {model_id}: preprocessing / model call (CPU p50) {pre:.2f} / {call:.2f} = {pre / call:.2f} '
            f'(target <= 1) -> {"met" if pre <= call else "NOT met"}'
        )
        print(
            f'  {model_id}: whole path CPU p50 {path:.2f} ms (target <= {PATH_TARGET_MS:g}) -> '
            f'{"met" if path <= PATH_TARGET_MS else "NOT met"}'
        )
    factor = A55_FACTOR
    print(
        f'\nestimate for one Cortex-A55 core of the RDK X5: x{factor.typical:.1f} '
        f'({factor.low:.1f}-{factor.high:.1f})'
    )
    print(f'  factor from: {factor.source}')
    print(
        '  the factor compares idle single cores: CPU times taken while other jobs share this machine are '
        'inflated, and so is the estimate'
    )
    for (model_id, width, height), times in results.items():
        path = p50(times.cpu['whole path'])
        print(
            f'  {model_id} at {width}x{height}: whole path {path:.2f} ms CPU here -> '
            f'{path * factor.typical:.0f} ms ({path * factor.low:.0f}-{path * factor.high:.0f}) '
            'on one A55 core'
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0, help='duration of each node phase')
    parser.add_argument(
        '--model',
        type=Path,
        action='append',
        help='an exported .onnx (repeat to compare, e.g. FP32 and INT8; the node runs the first); '
        'default: the default network, untrained',
    )
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime intra-op threads of the node')
    parser.add_argument(
        '--calls', type=int, default=200, help='pairs timed per size and model, and for the rules'
    )
    parser.add_argument('--no-node', action='store_true', help='skip the node phases')
    args = parser.parse_args()

    cv2.setNumThreads(1)
    print(f'machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}')
    frames = {size: sim_frames(6, *size) for size in SIZES}
    with tempfile.TemporaryDirectory(prefix='bench-inference-') as temp:
        models = Path(temp) / 'models'
        models.mkdir()
        sources = args.model or [None]
        model_paths = []
        for index, source in enumerate(sources):
            path = models / (source.name if source else 'bench.onnx')
            if source:
                path.write_bytes(source.read_bytes())
            else:
                export_default_model(path)
            if index:  # only the first is the newest file, the one the node runs
                os.utime(path, (1.0, 1.0))
            model_paths.append(path)
        results: dict[tuple[str, int, int], StageTimes] = {}
        for size in SIZES:
            messages = received_messages(frames[size])
            for path in model_paths:
                times, model_id = pair_costs(path, messages, args.calls)
                results[(model_id, *size)] = times
        print_pair_costs(results, args.calls)
        print_targets(results)
        print('\nrules per pair, one thread, ms (wall; CPU of the thread):')
        for width, height in SIZES:
            wall, cpu = bench_rules(frames[(width, height)], args.calls // 2)
            met = 'met' if p50(cpu) <= RULES_TARGET_MS else 'NOT met'
            verdict = f' (target CPU p50 <= {RULES_TARGET_MS:g}: {met})'
            print(
                f'  {width}x{height}   wall {percentiles(wall)};  CPU p50 {p50(cpu):7.2f}'
                f'{verdict if width == 640 else ""}'
            )
        if args.no_node:
            return 0
        first = next(key for key in results if key[1] == 640)
        path_p95 = p95(results[first].wall['whole path'])
        rows = run_node_phases(args, temp, models, frames[(640, 480)])
        print(f'\nnode, VGA rgb8 + 32FC1 over loopback DDS, {args.seconds:g} s per phase, ms:')
        for what, rate, r in rows:
            print(
                f'  {what:10s} {rate:4.0f} Hz: delivered {r["answered"]}/{r["sent"]} '
                f'({100.0 * r["answered"] / max(r["sent"], 1):.1f} %), skipped {r["skipped"]}, '
                f'node CPU {r["cpu_pct"]:.0f} % of a core ({r["cpu_ms_per_pair"]:.1f} ms per answered pair), '
                f'source {r["sources"]}'
            )
            print(f'      publish->result (here)   {percentiles(r["e2e_ms"])}')
            print(f'      receive->publish (node)  {percentiles(r["node_ms"])}')
        limit = 1.2 * path_p95 + 2.0
        print(
            f'\ntarget: node publish->result p95 <= 1.2 x whole path p95 ({path_p95:.2f} ms) + 2 ms '
            f'= {limit:.2f} ms'
        )
        for what, rate, r in rows:
            if what != 'model':
                continue
            node_p95 = p95(r['e2e_ms'])
            print(
                f'  {rate:4.0f} Hz: p95 {node_p95:7.2f} ms -> {"met" if node_p95 <= limit else "NOT met"}; '
                f'unanswered pairs {r["sent"] - r["answered"]} (skipped {r["skipped"]})'
            )
        print(f'\nmachine load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)')
    return 0


def run_node_phases(
    args: argparse.Namespace, temp: str, models: Path, frames: list
) -> list[tuple[str, float, dict[str, Any]]]:
    from weld_core.ros_env import exclusive_domain, loopback_env

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
                node = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
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
    return rows


if __name__ == '__main__':
    sys.exit(main())
