"""Benchmark of weld_labeler: recorded vs published pairs and the labeler's CPU at 30 Hz VGA RGB-D.

For each case a labeler process and a publisher process (rgb8 + 32FC1 + both CameraInfos, the
labeler subscribing with sensor-data QoS as deployed) run over loopback DDS for ``--seconds``:
1. pairing only: no session open (what the labeler costs while the operator is not capturing);
2. raw: a session recording every pair (``record_all_pairs``), Images written as received;
3. compressed: the same with JPEG + compressedDepth PNG (``depth_png_level`` 0, the default: stored);
4. compressed png1: the same with zlib level 1 (smaller depth, several times the CPU).
Printed per case: pairs published, frames the labeler received, pairs it paired and recorded,
pairs lost (published - recorded), the labeler's CPU (user + system from the first published pair
until the session's last pair is written, as % of one core over the publishing time, and per pair)
and the bag size and write rate.

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
    record_format = 'compressed' if name.startswith('compressed') else 'raw'
    command = [
        sys.executable, '-m', 'weld_labeler.labeler_node', '--ros-args',
        '-p', f'recording_dir:={folder}', '-p', 'min_free_space_mb:=0.0', '-p', 'record_all_pairs:=true',
        '-p', f'record_format:={record_format}', '-p', 'diagnostics_period_s:=0.5',
        '-p', f'depth_png_level:={1 if name.endswith("png1") else 0}',
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
                wall_end = time.monotonic()
                published = int(line.split()[1])
        publisher.wait(timeout=30)
        time.sleep(1.0)  # the last frames arrive; diagnostics catch up
        recorded, bag_bytes = 0, 0
        if record:
            # stopping waits for the write queue: CPU counts every published pair's recording
            stopped = call(
                node, StopSession, '/weld_labeler/stop_session', StopSession.Request(), timeout_s=120
            )
            recorded = stopped.pairs_recorded
            bag_bytes = sum(f.stat().st_size for f in Path(stopped.bag_path).iterdir())
        times = process.cpu_times()
        cpu_end = times.user + times.system
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
            'cpu_ms_per_pair': 1000.0 * (cpu_end - cpu_start) / max(published, 1),
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
    parser.add_argument('--cases', default='pairing only,raw,compressed,compressed png1')
    args = parser.parse_args()

    from weld_core.ros_env import exclusive_domain

    with exclusive_domain() as domain_id:  # a domain id no test or other run on this machine holds
        return run_all(args, domain_id)


def run_all(args: argparse.Namespace, domain_id: int) -> int:
    from weld_core.ros_env import loopback_env

    env = loopback_env(domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    os.environ.update({k: v for k, v in env.items() if k != 'ROS_DOMAIN_ID'})
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
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
    title = f'{args.width}x{args.height} rgb8 + 32FC1 at {args.rate_hz:g} Hz for {args.seconds:g} s'
    print(f'\nweld_labeler, {title} ({cores} cores here, publisher in its own process)')
    columns = (
        'case',
        'published',
        'rgb rx',
        'depth rx',
        'paired',
        'recorded',
        'lost',
        'CPU %core',
        'ms/pair',
    )
    print(f'{columns[0]:<13}' + ''.join(f'{name:>10}' for name in columns[1:]) + f'{"bag MB":>9}{"MB/s":>7}')
    for r in results:
        recorded = r['recorded'] if r['case'] != 'pairing only' else '-'
        cells = (r['published'], r['rgb_received'], r['depth_received'], r['paired'], recorded, r['lost'])
        print(
            f'{r["case"]:<13}'
            + ''.join(f'{cell:>10}' for cell in cells)
            + f'{r["cpu_pct"]:>10.1f}{r["cpu_ms_per_pair"]:>10.1f}{r["bag_mb"]:>9.1f}{r["write_mb_s"]:>7.1f}'
        )
    print(
        'target: lost 0 (recorded == published) and CPU <= 100 % of one core; ms/pair = labeler CPU per pair'
    )
    print(
        f'load average after the run: {os.getloadavg()[0]:.1f} on {cores} cores (other work slows delivery)'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
