"""Benchmark of weld_labeler: recorded vs published pairs and the labeler's CPU at 30 Hz VGA RGB-D.

For each case a labeler process and a publisher process (rgb8 + 32FC1 + both CameraInfos, the
labeler subscribing with sensor-data QoS as deployed) run over loopback DDS for ``--seconds``:
1. pairing only: no session open (what the labeler costs while the operator is not capturing);
2. raw: a session recording every pair (``record_all_pairs``), Images written as received;
3. compressed: the same with JPEG + compressedDepth PNG encoding in the labeler.
Printed per case: pairs published, frames the labeler received, pairs it paired and recorded,
pairs lost (published - recorded), the labeler's CPU (% of one core, user + system, measured over
the publishing window only) and the bag size and write rate.

    .venv/bin/python bench/bench_labeler.py [--seconds 20] [--width 640 --height 480 --rate-hz 30]
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

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]


def call(node: Any, service_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
    client = node.create_client(service_type, name)
    if not client.wait_for_service(timeout_sec=30.0):
        raise RuntimeError(f'no service {name}')
    future = client.call_async(request)
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not future.done():
        raise RuntimeError(f'no answer from {name}')
    return future.result()


def run_case(
    name: str, args: argparse.Namespace, node: Any, env: dict[str, str], workdir: Path
) -> dict[str, Any]:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    from weld_interfaces.srv import StartSession, StopSession

    record = name != 'pairing only'
    folder = workdir / name.replace(' ', '_')
    command = [
        sys.executable, '-m', 'weld_labeler.labeler_node', '--ros-args',
        '-p', f'recording_dir:={folder}', '-p', 'min_free_space_mb:=0.0', '-p', 'record_all_pairs:=true',
        '-p', f'record_format:={"compressed" if name == "compressed" else "raw"}', '-p', 'diagnostics_period_s:=0.5',
    ]  # fmt: skip
    log = (workdir / f'{folder.name}.log').open('wb')
    labeler = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    latest: dict[str, str] = {}

    def on_diagnostics(message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.startswith('weld_labeler'):
                latest.clear()
                latest.update({kv.key: kv.value for kv in status.values})

    subscription = node.create_subscription(
        DiagnosticArray, '/diagnostics', on_diagnostics, QoSProfile(depth=10)
    )
    try:
        if record:
            started = call(
                node, StartSession, '/weld_labeler/start_session', StartSession.Request(name='bench')
            )
            if not started.success:
                raise RuntimeError(started.message)
        else:
            call(node, StopSession, '/weld_labeler/stop_session', StopSession.Request())  # waits for the node
        publisher = subprocess.Popen(
            [
                sys.executable, '-m', 'tests.labeler.frame_publisher', '--rate-hz', str(args.rate_hz),
                '--width', str(args.width), '--height', str(args.height), '--duration-s', str(args.seconds),
            ],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        process = psutil.Process(labeler.pid)
        assert publisher.stdout is not None
        published = 0
        cpu_start = wall_start = cpu_end = wall_end = 0.0
        for line in publisher.stdout:
            if line.startswith('publishing'):
                times = process.cpu_times()
                cpu_start, wall_start = times.user + times.system, time.monotonic()
            elif line.startswith('published'):
                times = process.cpu_times()
                cpu_end, wall_end = times.user + times.system, time.monotonic()
                published = int(line.split()[1])
        publisher.wait(timeout=30)
        time.sleep(1.5)  # the labeler writes what is still queued; diagnostics catch up
        recorded, bag_bytes = 0, 0
        if record:
            stopped = call(node, StopSession, '/weld_labeler/stop_session', StopSession.Request())
            recorded = stopped.pairs_recorded
            bag_bytes = sum(f.stat().st_size for f in Path(stopped.bag_path).iterdir())
        window = max(wall_end - wall_start, 1e-9)
        return {
            'case': name,
            'published': published,
            'rgb_received': int(latest.get('rgb_frames', 0)),
            'depth_received': int(latest.get('depth_frames', 0)),
            'paired': int(latest.get('pairs_paired', 0)),
            'recorded': recorded,
            'lost': published - recorded if record else published - int(latest.get('pairs_paired', 0)),
            'cpu_pct': 100.0 * (cpu_end - cpu_start) / window,
            'bag_mb': bag_bytes / 1e6,
            'write_mb_s': bag_bytes / 1e6 / window,
        }
    finally:
        node.destroy_subscription(subscription)
        labeler.send_signal(2)
        try:
            labeler.wait(timeout=20)
        except subprocess.TimeoutExpired:
            labeler.kill()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate-hz', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--domain-id', type=int, default=187, help='ROS_DOMAIN_ID for this run (100-200)')
    parser.add_argument('--cases', default='pairing only,raw,compressed')
    args = parser.parse_args()

    from weld_core.ros_env import loopback_env

    env = loopback_env(args.domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    os.environ.update({k: v for k, v in env.items() if k != 'ROS_DOMAIN_ID'})
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain_id)
    node = rclpy.create_node('bench_labeler', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix='bench-labeler-') as workdir:
            for case in args.cases.split(','):
                results.append(run_case(case.strip(), args, node, env, Path(workdir)))
                print(f'  done: {case}', flush=True)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)

    cores = psutil.cpu_count()
    print(
        f'\nweld_labeler, {args.width}x{args.height} rgb8 + 32FC1 at {args.rate_hz:g} Hz for {args.seconds:g} s '
        f'({cores} cores here, publisher in its own process)'
    )
    header = f'{"case":<13} {"published":>9} {"rgb rx":>7} {"depth rx":>8} {"paired":>7} {"recorded":>8}'
    print(header + f' {"lost":>5} {"CPU %core":>9} {"bag MB":>8} {"MB/s":>6}')
    for r in results:
        print(
            f'{r["case"]:<13} {r["published"]:>9} {r["rgb_received"]:>7} {r["depth_received"]:>8} {r["paired"]:>7} '
            f'{r["recorded"] if r["case"] != "pairing only" else "-":>8} {r["lost"]:>5} {r["cpu_pct"]:>9.1f} '
            f'{r["bag_mb"]:>8.1f} {r["write_mb_s"]:>6.1f}'
        )
    print('target: lost 0 (recorded == published) and CPU <= 100 % of one core')
    return 0


if __name__ == '__main__':
    sys.exit(main())
