"""Fixtures shared by every test: isolated ROS domains on loopback DDS, in-process and subprocess nodes.

Every test that touches DDS gets a ROS_DOMAIN_ID nobody else on this machine holds (a file lock per
id, so concurrent pytest runs do not hear each other) and the loopback Fast DDS profile.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from weld_core.ros_env import exclusive_domain, loopback_env

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_ADDRESSES = frozenset({'127.0.0.1', '::1'})


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def ros_domain_id() -> Iterator[int]:
    """A ROS_DOMAIN_ID held by this test alone on this machine."""
    with exclusive_domain() as domain_id:
        yield domain_id


@pytest.fixture
def ros_env(ros_domain_id: int) -> dict[str, str]:
    """Environment for a node subprocess: loopback DDS profile, this test's domain id."""
    env = loopback_env(ros_domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    env['RCUTILS_COLORIZED_OUTPUT'] = '0'
    return env


class SpinningNode:
    """An rclpy node in this process, in its own context, spun by a background thread."""

    def __init__(self, name: str, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ.update({k: v for k, v in loopback_env(domain_id).items() if k != 'ROS_DOMAIN_ID'})
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f'spin-{name}', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str = 'condition') -> None:
        """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def ros_node(ros_domain_id: int, request: pytest.FixtureRequest) -> Iterator[SpinningNode]:
    """An in-process node on this test's domain; its ``.node`` is an rclpy Node, spun in a thread."""
    name = 'test_' + ''.join(c if c.isalnum() else '_' for c in request.node.name)[:40]
    spinning = SpinningNode(name, ros_domain_id)
    try:
        yield spinning
    finally:
        spinning.close()


class NodeProcess:
    """A node started in its own process; output is kept for assertions and failure reports."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self.off_loopback_at_stop: list[str] = []
        self._log = open(log_path, 'wb')  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def output(self) -> str:
        """What the process wrote so far (also after :meth:`stop`, which closes the log)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.process.poll() is None

    def sockets_off_loopback(self) -> list[str]:
        """Sockets of this process and its children bound or connected to a non-loopback address."""
        return off_loopback(inet_sockets(self.process.pid))

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGINT (Ctrl-C) and wait; SIGKILL only if it does not exit. Returns the exit code."""
        if self.process.poll() is None:
            self.off_loopback_at_stop = self.sockets_off_loopback()
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5.0)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def spawn_node(
    ros_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: ``spawn_node(['-m', 'weld_camera.camera_node', '--ros-args', ...])`` starts a process.

    Arguments are passed to this venv's python; ``extra_env`` adds variables. Every process is
    stopped with SIGINT at teardown. A failed test's report shows the end of every node's output.
    """
    started: list[NodeProcess] = []
    request.node.weld_node_processes = started

    def spawn(
        args: list[str], extra_env: dict[str, str] | None = None, name: str | None = None
    ) -> NodeProcess:
        env = dict(ros_env, **(extra_env or {}))
        label = name or f'node{len(started)}'
        process = NodeProcess([sys.executable, *args], env, REPO_ROOT, tmp_path / f'{label}.log')
        started.append(process)
        return process

    yield spawn
    for process in reversed(started):
        process.stop()
    # every node a test started must have kept DDS on loopback while it ran
    off_loopback = [line for process in started for line in process.off_loopback_at_stop]
    assert not off_loopback, f'node sockets on a real network interface: {off_loopback}'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the end of each spawned node's output to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.when == 'call' and report.failed:
        for process in getattr(item, 'weld_node_processes', []):
            report.sections.append((f'node {process.log_path.stem}', process.output[-4000:]))


def fastdds_shm_files() -> set[str]:
    """Fast DDS shared-memory files in /dev/shm (segments, ports and their locks)."""
    return {
        entry.name
        for entry in Path('/dev/shm').iterdir()
        if entry.name.startswith(('fastdds_', 'fast_datasharing'))
    }


def pytest_report_header(config: Any) -> list[str]:
    return [f'weldvision: loopback DDS profile via {REPO_ROOT / "launch/dds/fastdds_loopback.xml"}']


def held_shm_files() -> set[str]:
    """Names of /dev/shm files some live process still maps or holds open (not stale)."""
    import psutil

    held: set[str] = set()
    for process in psutil.process_iter(['pid']):
        try:
            for mapped in process.memory_maps(grouped=True):
                if mapped.path.startswith('/dev/shm/'):
                    held.add(Path(mapped.path).name)
            for opened in process.open_files():
                if opened.path.startswith('/dev/shm/'):
                    held.add(Path(opened.path).name)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return held


def inet_sockets(pid: int) -> list[tuple[int, Any]]:
    """(pid, socket) for every inet socket of a process and its children (gone processes skipped)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    found: list[tuple[int, Any]] = []
    for process in processes:
        try:
            found.extend((process.pid, sock) for sock in process.net_connections(kind='inet'))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def off_loopback(sockets: list[tuple[int, Any]]) -> list[str]:
    """The sockets bound or connected to an address other than 127.0.0.1 / ::1, described."""
    found = []
    for pid, sock in sockets:
        addresses = [sock.laddr.ip] + ([sock.raddr.ip] if sock.raddr else [])
        if any(address not in LOOPBACK_ADDRESSES for address in addresses):
            found.append(f'pid {pid}: {sock.laddr} -> {sock.raddr or "-"}')
    return found
