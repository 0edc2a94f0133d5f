"""Benchmark of the operator console: its CPU share while the graph runs, and the camera-to-browser
preview delay.

The deployed graph (weld-scan's site configs: simulator camera 640x480 at 15 Hz, labeler, inference
with an empty models folder so the rules answer, console at its default preview rate of 5 Hz) runs
through the runner for two windows of ``--seconds`` each:
1. nobody watching: the console takes no frame and renders nothing (the camera's frames wait in
   its DDS queue; results, measurements and labels still arrive);
2. one page watching: a real chromium (headless, driven by Playwright) shows the live view.
Printed per window: the CPU of each node (user + system, % of one core), the inference results that
reached the console and the previews it rendered per second, and, while watching, the delay from the camera's
stamp to the picture shown in the page (p50 / p95 / max; same machine, same clock). On a loaded
machine the simulator falls short of its rate and the console has less to do: read its share
together with the results per second that reached it. Targets (issue 31): <= 10 % of one core,
p95 <= 300 ms.

    .venv/bin/python bench/bench_console.py [--seconds 30] [--json out.json]
"""

import argparse
import json
import sys
import tempfile
import time
import urllib.request
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


def counters(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + 'api/state', timeout=10) as response:
        return dict(json.loads(response.read())['counters'])


def window(pids: dict[str, int], seconds: float, url: str) -> dict[str, Any]:
    """CPU of each node over the next ``seconds`` and the pairs and previews the console handled."""
    before, seen, started = cpu_seconds(pids), counters(url), time.monotonic()
    time.sleep(seconds)
    after, now, wall = cpu_seconds(pids), counters(url), time.monotonic() - started

    def rate(name: str) -> float:
        return (now.get(name, 0) - seen.get(name, 0)) / wall

    return {
        'cpu_percent': {key: 100.0 * (after[key] - before[key]) / wall for key in pids},
        'console_cpu_s': after['console'] - before['console'],
        'results_per_s': rate('results_received'),
        'previews_per_s': rate('previews_sent'),
        'wall_s': wall,
    }


def console_url(log: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = URL_LINE.search(log.read_text(errors='replace')) if log.is_file() else None
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise RuntimeError(f'the console did not start; see {log}')


def site_parameters(config: str, node: str) -> dict[str, Any]:
    return dict(yaml.safe_load((graph.config_dir() / config).read_text())[node]['ros__parameters'])


def run(seconds: float, workdir: Path) -> dict[str, Any]:
    layer = workdir / 'layer.yaml'
    folders = {'export_dir': str(workdir / 'exports'), 'review_dir': str(workdir / 'review')}
    layer.write_text(
        yaml.safe_dump(
            {
                'weld_labeler': {'ros__parameters': {'export_dir': folders['export_dir']}},
                'weld_console': {'ros__parameters': {'port': 0, **folders}},
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
    camera = site_parameters('camera.yaml', 'weld_camera')
    console = site_parameters('console.yaml', 'weld_console')
    report: dict[str, Any] = {
        'camera': f'{camera["width"]}x{camera["height"]} at {camera["rate_hz"]} Hz ({camera["source"]})',
        'preview_rate_hz': console['preview_rate_hz'],
        'preview_width_px': console['preview_width_px'],
        'seconds': seconds,
        'cpu_count': psutil.cpu_count(),
    }
    with exclusive_domain() as domain_id:
        runner = GraphRunner(launches, loopback_env(domain_id), workdir / 'params', None, workdir / 'logs')
        with runner:
            url = console_url(workdir / 'logs' / 'console.log')
            pids = {node.key: node.process.pid for node in runner.nodes}
            time.sleep(8.0)  # the graph settles (first frames, first results)
            report['idle'] = window(pids, seconds, url)
            with browser_page() as page:
                page.goto(url)
                deadline = time.monotonic() + 60
                while page.evaluate('window.weldConsole.previews') < 5 and time.monotonic() < deadline:
                    time.sleep(0.2)
                page.evaluate('window.weldConsole.delays.length = 0; window.weldConsole.previews = 0')
                started = time.monotonic()
                report['watching'] = window(pids, seconds, url)
                report['shown_per_s'] = page.evaluate('window.weldConsole.previews') / (
                    time.monotonic() - started
                )
                delays = np.array(page.evaluate('window.weldConsole.delays'), dtype=np.float64)
            report['load_average_1min'] = psutil.getloadavg()[0]
    if delays.size:
        report['delay_ms'] = {
            'p50': float(np.percentile(delays, 50)),
            'p95': float(np.percentile(delays, 95)),
            'max': float(delays.max()),
            'count': int(delays.size),
        }
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
    idle, watching = report['idle'], report['watching']
    print(
        f'graph: camera {report["camera"]}, console previews {report["preview_rate_hz"]} Hz at most '
        f'{report["preview_width_px"]} px wide; {report["cpu_count"]} CPUs, 1-min load average '
        f'{report["load_average_1min"]:.2f}'
    )
    print(f'{"node":<10} {"idle CPU %":>11} {"watching CPU %":>15}')
    for key in idle['cpu_percent']:
        print(f'{key:<10} {idle["cpu_percent"][key]:>11.1f} {watching["cpu_percent"][key]:>15.1f}')
    print(
        f'results reaching the console {idle["results_per_s"]:.1f} / {watching["results_per_s"]:.1f} per s '
        f'(idle / watching); previews rendered {watching["previews_per_s"]:.2f} per s, shown '
        f'{report["shown_per_s"]:.2f} per s'
    )
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
