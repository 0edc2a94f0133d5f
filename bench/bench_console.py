"""Benchmark of the operator console: its CPU share while the graph runs, and the camera-to-browser
preview delay.

The deployed graph (weld-scan's site configs: simulator camera 640x480 at 15 Hz, labeler, inference
with an empty models folder so the rules answer, console at its default preview rate of 5 Hz) runs
through the runner for two windows of ``--seconds`` each:
1. nobody watching: the console receives the camera raw and renders nothing;
2. one page watching: a real chromium (headless, driven by Playwright) shows the live view.
Printed per window: the CPU of each node (user + system, % of one core) and, while watching, the
previews the page showed per second and the delay from the camera's stamp to the picture shown in
the page (p50 / p95 / max; same machine, same clock). Targets (issue 31): console <= 10 % of one
core, p95 <= 300 ms.

    .venv/bin/python bench/bench_console.py [--seconds 30] [--json out.json]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.console.graph import URL_LINE, browser_page  # noqa: E402
from weld_bringup import graph  # noqa: E402
from weld_bringup.runner import GraphRunner  # noqa: E402
from weld_core.ros_env import exclusive_domain, loopback_env  # noqa: E402


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    used = {}
    for key, pid in pids.items():
        process = psutil.Process(pid)
        total = 0.0
        for member in (process, *process.children(recursive=True)):
            times = member.cpu_times()
            total += times.user + times.system
        used[key] = total
    return used


def cpu_share(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """% of one core each node used over the next ``seconds``."""
    before, started = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    after, wall = cpu_seconds(pids), time.monotonic() - started
    return {key: 100.0 * (after[key] - before[key]) / wall for key in pids}


def console_url(log: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = URL_LINE.search(log.read_text(errors='replace')) if log.is_file() else None
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise RuntimeError(f'the console did not start; see {log}')


def run(seconds: float, workdir: Path) -> dict[str, Any]:
    layer = workdir / 'layer.yaml'
    layer.write_text(
        yaml.safe_dump(
            {
                'weld_labeler': {'ros__parameters': {'export_dir': str(workdir / 'exports')}},
                'weld_console': {
                    'ros__parameters': {
                        'port': 0,
                        'export_dir': str(workdir / 'exports'),
                        'review_dir': str(workdir / 'review'),
                    }
                },
            }
        )
    )
    (workdir / 'models').mkdir()
    arguments = {
        'params_file': str(layer),
        'models_dir': str(workdir / 'models'),
        'recording_dir': str(workdir / 'sessions'),
    }
    launches = graph.resolve(arguments, graph.config_dir())
    camera = yaml.safe_load((graph.config_dir() / 'camera.yaml').read_text())['weld_camera'][
        'ros__parameters'
    ]
    console = yaml.safe_load((graph.config_dir() / 'console.yaml').read_text())['weld_console'][
        'ros__parameters'
    ]
    report: dict[str, Any] = {
        'camera': f'{camera["width"]}x{camera["height"]} at {camera["rate_hz"]} Hz ({camera["source"]})',
        'preview_rate_hz': console['preview_rate_hz'],
        'preview_width_px': console['preview_width_px'],
        'seconds': seconds,
        'cpu_count': psutil.cpu_count(),
    }
    with exclusive_domain() as domain_id:
        env = loopback_env(domain_id)
        runner = GraphRunner(launches, env, workdir / 'params', echo=None, log_dir=workdir / 'logs')
        with runner:
            url = console_url(workdir / 'logs' / 'console.log')
            pids = {node.key: node.process.pid for node in runner.nodes}
            time.sleep(8.0)  # the graph settles (first frames, first results)
            report['idle_cpu_percent'] = cpu_share(pids, seconds)
            with browser_page() as page:
                page.goto(url)
                deadline = time.monotonic() + 60
                while page.evaluate('window.weldConsole.previews') < 5 and time.monotonic() < deadline:
                    time.sleep(0.2)
                page.evaluate('window.weldConsole.delays.length = 0; window.weldConsole.previews = 0')
                started = time.monotonic()
                report['watching_cpu_percent'] = cpu_share(pids, seconds)
                shown = page.evaluate('window.weldConsole.previews')
                delays = np.array(page.evaluate('window.weldConsole.delays'), dtype=np.float64)
                report['previews_per_s'] = shown / (time.monotonic() - started)
            if delays.size:
                report['delay_ms'] = {
                    'p50': float(np.percentile(delays, 50)),
                    'p95': float(np.percentile(delays, 95)),
                    'max': float(delays.max()),
                    'count': int(delays.size),
                }
            report['load_average_1min'] = psutil.getloadavg()[0]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--seconds', type=float, default=30.0, help='length of each measuring window')
    parser.add_argument('--json', type=Path, default=None, help='also write the figures here')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench-console-') as scratch:
        report = run(args.seconds, Path(scratch))
    print(
        f'graph: camera {report["camera"]}, console previews {report["preview_rate_hz"]} Hz '
        f'at most {report["preview_width_px"]} px wide; {report["cpu_count"]} CPUs, '
        f'1-min load average {report["load_average_1min"]:.2f}'
    )
    print(f'{"node":<10} {"idle CPU %":>11} {"watching CPU %":>15}')
    for key in report['idle_cpu_percent']:
        print(
            f'{key:<10} {report["idle_cpu_percent"][key]:>11.1f} {report["watching_cpu_percent"][key]:>15.1f}'
        )
    print(f'previews shown: {report["previews_per_s"]:.2f} per s')
    if 'delay_ms' in report:
        delay = report['delay_ms']
        print(
            f'camera-to-browser delay: p50 {delay["p50"]:.0f} ms, p95 {delay["p95"]:.0f} ms, '
            f'max {delay["max"]:.0f} ms ({delay["count"]} previews)'
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
