"""weld-scan starts the declared graph as real processes on loopback DDS, applies the site configs,
layers and overrides, prefixes node output, and stops everything cleanly on Ctrl-C."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from rcl_interfaces.srv import GetParameters
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tests.conftest import fastdds_shm_files, held_shm_files, inet_sockets, off_loopback
from weld_bringup import graph
from weld_interfaces.msg import DefectLabel, DefectResult
from weld_interfaces.srv import Capture

LAYER = {
    'weld_camera': {'ros__parameters': {'rate_hz': 10.0, 'width': 320, 'height': 240, 'seed': 3}},
    # any free port: other test runs on this machine may hold the site config's
    'weld_console': {'ros__parameters': {'port': 0}},
}


class Runner:
    def __init__(self, arguments: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open('wb')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'weld_bringup', *arguments],
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors='replace')

    def node_pids(self) -> dict[str, int]:
        return {
            name: int(pid) for name, pid in re.findall(r'\[runner\] started (\w+) \(pid (\d+)\)', self.output)
        }

    def finish(self, timeout_s: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._handle.close()
        return code


@pytest.fixture
def start_runner(ros_env: dict[str, str], tmp_path: Path):
    started: list[Runner] = []

    def start(arguments: list[str]) -> Runner:
        runner = Runner(arguments, ros_env, tmp_path / f'runner{len(started)}.log')
        started.append(runner)
        return runner

    yield start
    for runner in started:
        if runner.process.poll() is None:
            runner.process.send_signal(signal.SIGINT)
        runner.finish()


def _get_parameters(ros_node: Any, node_name: str, names: list[str]) -> dict[str, Any]:
    client = ros_node.node.create_client(GetParameters, f'/{node_name}/get_parameters')
    assert client.wait_for_service(timeout_sec=20.0), f'/{node_name}/get_parameters is not offered'
    future = client.call_async(GetParameters.Request(names=names))
    ros_node.wait_for(future.done, 10.0, f'parameters of {node_name}')
    return {
        name: parameter_value_to_python(value)
        for name, value in zip(names, future.result().values, strict=True)
    }


def _gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids
        ):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.ros
@pytest.mark.slow
def test_runner_brings_up_the_configured_graph_and_stops_it_cleanly(
    ros_node: Any, ros_domain_id: int, start_runner: Any, tmp_path: Path
) -> None:
    shm_before = fastdds_shm_files()
    layer = tmp_path / 'layer.yaml'
    layer.write_text(yaml.safe_dump(LAYER))
    models, sessions = tmp_path / 'models', tmp_path / 'sessions'
    models.mkdir()
    runner = start_runner(
        [
            f'--domain-id={ros_domain_id}',
            f'params_file:={layer}',
            f'models_dir:={models}',
            f'recording_dir:={sessions}',
        ]
    )
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    results: list[DefectResult] = []
    truth: list[DefectLabel] = []
    ros_node.node.create_subscription(DefectResult, '/weld/defects', results.append, reliable)
    ros_node.node.create_subscription(DefectLabel, '/weld/sim/ground_truth', truth.append, reliable)
    ros_node.wait_for(lambda: len(results) >= 3 and truth, 60.0, f'results and ground truth\n{runner.output}')
    assert {r.source for r in results} == {'rules'}, 'the models folder is empty: the rules must answer'
    assert ros_node.node.create_client(Capture, '/weld_labeler/capture').wait_for_service(timeout_sec=10.0)

    # each node holds its site config, then the layer, then the launch-argument overrides
    expected_by_node = {
        spec.name: yaml.safe_load((graph.source_config_dir() / spec.config).read_text())[spec.name][
            'ros__parameters'
        ]
        for spec in graph.NODES
    }
    expected_by_node['weld_camera'].update(LAYER['weld_camera']['ros__parameters'])
    expected_by_node['weld_console'].update(LAYER['weld_console']['ros__parameters'])
    expected_by_node['weld_inference']['models_dir'] = str(models)
    expected_by_node['weld_console']['models_dir'] = str(models)
    expected_by_node['weld_labeler']['recording_dir'] = str(sessions)
    expected_by_node['weld_console']['recording_dir'] = str(sessions)
    for node_name, expected in expected_by_node.items():
        actual = _get_parameters(ros_node, node_name, sorted(expected))
        assert actual == expected, (
            f'{node_name}: parameters differ from its configs (undeclared names read None)'
        )
    for key in graph.NODE_KEYS:
        assert re.search(rf'^\[{key}\] ', runner.output, re.MULTILINE), f'no prefixed output of {key}'

    pids = list(runner.node_pids().values())
    assert len(pids) == len(graph.NODES)
    for pid in pids:
        sockets = inet_sockets(pid)
        assert sockets, 'a node with no sockets is not on DDS'
        assert not off_loopback(sockets), f'node sockets on a real network interface: {off_loopback(sockets)}'
    runner.process.send_signal(signal.SIGINT)
    assert runner.finish() == 0, runner.output
    for key in graph.NODE_KEYS:
        assert f'[runner] {key} exited with code 0' in runner.output, runner.output
    assert _gone(pids, 5.0)
    time.sleep(0.5)
    leftover = fastdds_shm_files() - shm_before
    assert not leftover - held_shm_files(), f'stale Fast DDS shared memory: {sorted(leftover)}'


@pytest.mark.ros
@pytest.mark.slow
def test_a_node_that_dies_stops_the_graph_and_a_killed_runner_takes_its_nodes_along(
    ros_domain_id: int, start_runner: Any, tmp_path: Path
) -> None:
    models = tmp_path / 'models'
    models.mkdir()
    arguments = [f'--domain-id={ros_domain_id}', 'nodes:=camera,inference', f'models_dir:={models}']
    runner = start_runner(arguments)
    deadline = time.monotonic() + 30.0
    while len(runner.node_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = runner.node_pids()
    assert set(pids) == {'weld_camera', 'weld_inference'}, runner.output
    time.sleep(2.0)
    psutil.Process(pids['weld_camera']).kill()
    assert runner.finish() == 1, runner.output
    assert '[runner] camera ended on its own: stopping the graph' in runner.output
    assert '[runner] inference exited with code 0' in runner.output
    assert _gone(list(pids.values()), 5.0)

    # SIGKILL leaves the runner no chance to forward Ctrl-C: the kernel interrupts its nodes instead
    second = start_runner(arguments)
    deadline = time.monotonic() + 30.0
    while len(second.node_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = second.node_pids()
    time.sleep(2.0)
    second.process.kill()
    second.finish()
    assert _gone(list(pids.values()), 15.0), 'nodes outlived their killed runner'


def test_print_shows_the_commands_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            '-m',
            'weld_bringup',
            '--print',
            f'--log-dir={tmp_path}',
            'nodes:=camera',
            'source:=replay',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    assert ' -m weld_camera.camera_node --ros-args -r __node:=weld_camera --params-file ' in line
    assert line.endswith(str(tmp_path / 'weld_camera.overrides.yaml'))
    bad = subprocess.run(
        [sys.executable, '-m', 'weld_bringup', 'nodes:=camera,lidar'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown node 'lidar'" in bad.stderr
