"""Start the weldvision graph without ``ros2 launch``: the pip world's equivalent of scan.launch.py.

    weld-scan [source:=sim] [models_dir:=DIR] [recording_dir:=DIR] [nodes:=camera,labeler,inference]
    python -m weld_bringup ...            (the same)

Every node runs in its own process, started as ``python -m <module> --ros-args -r __node:=<name>
--params-file <site config> [--params-file <overrides>]``, with DDS confined to loopback
(weld_core.ros_env). Output lines are prefixed with the node's key. Ctrl-C (SIGINT) or SIGTERM
forwards SIGINT to every node and waits for each to exit; the runner exits 0 only if all did.
"""

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import yaml

from weld_bringup import graph
from weld_core.ros_env import loopback_env

STOP_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def overrides_yaml(launch: graph.NodeLaunch) -> str:
    """The launch-argument overrides of one node as a ROS 2 params file (values stay strings)."""
    return yaml.safe_dump({launch.spec.name: {'ros__parameters': dict(launch.overrides)}}, sort_keys=True)


def node_command(
    launch: graph.NodeLaunch, overrides_file: Path | None, python: str = sys.executable
) -> list[str]:
    """The command line of one node; later params files override earlier ones, as in launch_ros."""
    command = [python, '-m', launch.spec.module, '--ros-args', '-r', f'__node:={launch.spec.name}']
    for params_file in launch.params_files:
        command += ['--params-file', str(params_file)]
    if overrides_file is not None:
        command += ['--params-file', str(overrides_file)]
    return command


def _die_with_parent() -> None:
    # a runner killed with SIGKILL cannot forward Ctrl-C; the kernel sends SIGINT to its nodes instead
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


class NodeProcess:
    """One running node: its process and the thread that copies its output, prefixed, to the sinks."""

    def __init__(
        self,
        launch: graph.NodeLaunch,
        command: list[str],
        env: Mapping[str, str],
        echo: Callable[[str], None] | None,
        log_file: Path | None,
    ) -> None:
        self.launch = launch
        self.key = launch.spec.key
        self.command = command
        self._echo = echo
        self._log: IO[str] | None = open(log_file, 'a', encoding='utf-8') if log_file else None  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            text=True,
            errors='replace',
            bufsize=1,
        )
        self.tail: list[str] = []
        self._reader = threading.Thread(target=self._copy_output, name=f'output-{self.key}', daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        stream = self.process.stdout
        if stream is None:
            return
        for line in stream:
            text = line.rstrip('\n')
            self.tail = [*self.tail[-49:], text]
            if self._log is not None:
                self._log.write(text + '\n')
                self._log.flush()
            if self._echo is not None:
                self._echo(f'[{self.key}] {text}')

    def returncode(self) -> int | None:
        return self.process.poll()

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self, timeout_s: float) -> int:
        """Wait for exit; SIGKILL after ``timeout_s`` (reported as -9). Returns the exit code."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5.0)
        self._reader.join(timeout=5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode


class GraphRunner:
    """Starts the resolved graph as subprocesses and stops it cleanly; a context manager."""

    def __init__(
        self,
        launches: Sequence[graph.NodeLaunch],
        env: Mapping[str, str],
        work_dir: Path,
        echo: Callable[[str], None] | None = print,
        log_dir: Path | None = None,
    ) -> None:
        self.launches = list(launches)
        self.env = dict(env)
        self.work_dir = Path(work_dir)
        self.echo = echo
        self.log_dir = log_dir
        self.nodes: list[NodeProcess] = []

    def commands(self) -> list[list[str]]:
        """Write the override files and return each node's command line (what start() runs)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        commands = []
        for launch in self.launches:
            overrides_file = None
            if launch.overrides:
                overrides_file = self.work_dir / f'{launch.spec.name}.overrides.yaml'
                overrides_file.write_text(overrides_yaml(launch), encoding='utf-8')
            commands.append(node_command(launch, overrides_file))
        return commands

    def start(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for launch, command in zip(self.launches, self.commands(), strict=True):
            log_file = self.log_dir / f'{launch.spec.key}.log' if self.log_dir else None
            node = NodeProcess(launch, command, self.env, self.echo, log_file)
            self.nodes.append(node)
            self._say(f'started {launch.spec.name} (pid {node.process.pid})')

    def exited(self) -> list[NodeProcess]:
        """Nodes that have ended on their own."""
        return [node for node in self.nodes if node.returncode() is not None]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGINT to every node, then wait for all; exit codes by node key."""
        for node in self.nodes:
            node.interrupt()
        deadline = time.monotonic() + timeout_s
        codes = {node.key: node.wait(max(0.1, deadline - time.monotonic())) for node in self.nodes}
        for key, code in codes.items():
            self._say(f'{key} exited with code {code}')
        self.nodes = []
        return codes

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(f'[runner] {text}')

    def __enter__(self) -> 'GraphRunner':
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_domain_id() -> int:
    return int(os.environ.get('ROS_DOMAIN_ID', '0') or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='weld-scan',
        description='Start the weldvision graph (camera, labeler, inference) in the pip world.',
        epilog='launch arguments (as for ros2 launch weld_bringup scan.launch.py):\n' + graph.argument_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('arguments', nargs='*', metavar='name:=value', help='launch arguments')
    parser.add_argument(
        '--domain-id',
        type=int,
        default=default_domain_id(),
        help='ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID or 0)',
    )
    parser.add_argument(
        '--config-dir', type=Path, default=None, help='site configs (default: weld_bringup/config)'
    )
    parser.add_argument(
        '--log-dir', type=Path, default=None, help='also write each node output to <key>.log here'
    )
    parser.add_argument(
        '--print', action='store_true', help='print the node commands and exit without starting'
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        launches = graph.resolve(graph.parse_arguments(args.arguments), args.config_dir or graph.config_dir())
        env = loopback_env(args.domain_id)
    except (graph.BringupError, ValueError, FileNotFoundError) as error:
        print(f'weld-scan: {error}', file=sys.stderr)
        return 2
    env.setdefault('PYTHONUNBUFFERED', '1')
    if args.print:
        # the printed commands stay runnable: their override files are kept
        work_dir = args.log_dir or Path(tempfile.mkdtemp(prefix='weld-scan-'))
        for command in GraphRunner(launches, env, work_dir, echo=None).commands():
            print(' '.join(command))
        return 0
    with tempfile.TemporaryDirectory(prefix='weld-scan-') as scratch:
        runner = GraphRunner(
            launches, env, args.log_dir or Path(scratch), echo=_print_line, log_dir=args.log_dir
        )
        return _run_until_stopped(runner, args.domain_id)


def _run_until_stopped(runner: GraphRunner, domain_id: int) -> int:
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    _print_line(f'[runner] ROS_DOMAIN_ID={domain_id}, DDS on loopback; Ctrl-C stops every node')
    runner.start()
    failed: list[str] = []
    while not stop_requested.wait(0.2):
        ended = runner.exited()
        if ended:
            failed = [node.key for node in ended]
            _print_line(f'[runner] {", ".join(failed)} ended on its own: stopping the graph')
            break
    codes = runner.stop()
    return 0 if not failed and all(code == 0 for code in codes.values()) else 1


_print_lock = threading.Lock()


def _print_line(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


if __name__ == '__main__':
    sys.exit(main())
