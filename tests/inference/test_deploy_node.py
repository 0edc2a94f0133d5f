"""weld-deploy against a running inference node over real DDS: switch, refuse, roll back, confirm on
/weld/defects; and the same through ssh to a loopback sshd standing in for a board."""

import contextlib
import getpass
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.inference.frames import weld_frame
from tests.inference.harness import InferenceHarness
from tests.inference.models import write_model
from tests.inference.test_deploy_store import snapshot
from tests.inference.test_node_faults import node_args
from weld_core.model_file import file_sha256, read_model_info
from weld_core.model_store import read_sidecar

pytestmark = [pytest.mark.ros, pytest.mark.slow]
DEPLOY = [sys.executable, '-m', 'weld_inference.deploy']


@contextlib.contextmanager
def frames_flowing(harness: InferenceHarness, rate_hz: float = 10.0) -> Iterator[None]:
    """Pairs sent at ``rate_hz`` in the background, as a camera would, so the node keeps answering."""
    stop = threading.Event()

    def send() -> None:
        stamp = 5_000_000_000_000
        while not stop.wait(1.0 / rate_hz):
            stamp += 100_000_000
            harness.send(stamp)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5.0)


def latest_model_id(harness: InferenceHarness) -> str | None:
    with harness._lock:
        if not harness.results:
            return None
        return harness.results[max(harness.results)][-1].model_id


def deploy(env: dict[str, str], *args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEPLOY, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    source = tmp_path / 'exports'
    source.mkdir()
    truncated = source / 'weld-c.onnx'
    model_a = write_model(source / 'weld-a.onnx', name='weld', version='1', seed=1)
    truncated.write_bytes(model_a.read_bytes()[:300])
    return {
        'a': model_a,
        'b': write_model(source / 'weld-b.onnx', name='weld', version='2', seed=2),
        'truncated': truncated,
    }


def test_deploy_switches_refuses_and_rolls_back_a_running_node(
    ros_node, spawn_node, ros_env, tmp_path: Path, models
) -> None:
    folder = tmp_path / 'models'
    folder.mkdir()
    id_a, id_b = (read_model_info(models[key]).model_id for key in 'ab')
    harness = InferenceHarness(ros_node, *weld_frame(seed=1, height=120, width=160))
    node = spawn_node(node_args(folder), name='inference')
    harness.wait_ready(node)
    with frames_flowing(harness):
        ros_node.wait_for(lambda: latest_model_id(harness) == '', 10.0, 'the rules answering first')

        first = deploy(ros_env, str(models['a']), str(folder), '--wait-s', '30')
        assert first.returncode == 0, first.stdout + first.stderr
        assert f'OK deploy: {id_a} (weld-a.onnx); previous none' in first.stdout
        assert f"answers with model '{id_a}'" in first.stdout
        assert read_sidecar(folder / 'weld-a.onnx') == file_sha256(models['a']), 'sidecar written'
        ros_node.wait_for(lambda: latest_model_id(harness) == id_a, 5.0, 'results from model a')

        second = deploy(ros_env, str(models['b']), str(folder))
        assert second.returncode == 0, second.stdout + second.stderr
        assert f'{id_b} (weld-b.onnx); previous {id_a}' in second.stdout
        assert f"answers with model '{id_b}'" in second.stdout

        before = snapshot(folder)
        refused = deploy(ros_env, str(models['truncated']), str(folder))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert 'FAILED deploy: refused, nothing changed' in refused.stdout
        assert snapshot(folder) == before, 'a refused model must leave the folder as it was'
        time.sleep(1.0)
        assert latest_model_id(harness) == id_b, 'the node keeps answering with the running model'

        back = deploy(ros_env, '--rollback', str(folder))
        assert back.returncode == 0, back.stdout + back.stderr
        assert f'OK rollback: {id_a} (weld-a.onnx); previous {id_b}' in back.stdout
        assert f"answers with model '{id_a}'" in back.stdout
        assert not (folder / 'weld-b.onnx').exists() and not (folder / 'weld-b.onnx.sha256').exists()
        ros_node.wait_for(lambda: latest_model_id(harness) == id_a, 5.0, 'results from model a again')
    assert node.stop() == 0, node.output


def test_a_graph_out_of_reach_is_reported_placed_not_confirmed(ros_env, tmp_path: Path, models) -> None:
    folder = tmp_path / 'models'
    done = deploy(ros_env, str(models['a']), str(folder), '--wait-s', '20')
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'no /weld/defects publisher reachable from here: placed, not confirmed' in done.stdout
    assert (folder / 'weld-a.onnx').is_file() and (folder / 'weld-a.onnx.sha256').is_file()


@dataclass(frozen=True)
class Sshd:
    user: str
    port: int
    ssh: str  # the ssh command line weld-deploy --ssh takes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An OpenSSH server on 127.0.0.1 only, key login for this user, standing in for a board."""
    sshd = Path('/usr/sbin/sshd')
    if not sshd.is_file():
        pytest.skip(
            'openssh-server is not installed (requirements/apt.txt lists it; scripts/setup installs it)'
        )
    if os.geteuid() == 0:
        Path('/run/sshd').mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    folder = tmp_path / 'sshd'
    folder.mkdir()
    for key in ('host_key', 'client_key'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(folder / key)], check=True)
    (folder / 'authorized_keys').write_text((folder / 'client_key.pub').read_text())
    port, user = _free_port(), getpass.getuser()
    config = folder / 'sshd_config'
    config.write_text(
        f'Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / "host_key"}\n'
        f'AuthorizedKeysFile {folder / "authorized_keys"}\nPidFile {folder / "sshd.pid"}\n'
        f'AllowUsers {user}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n'
        'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n'
    )
    log = (folder / 'sshd.log').open('wb')
    process = subprocess.Popen([str(sshd), '-D', '-e', '-f', str(config)], stdout=log, stderr=log)
    ssh = (
        f'ssh -F /dev/null -p {port} -i {folder / "client_key"} -o BatchMode=yes -o ConnectTimeout=10 '
        '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'
    )
    try:
        deadline = time.monotonic() + 10.0
        while True:
            with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', port), timeout=1.0):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f'sshd did not start: {(folder / "sshd.log").read_text()}')
            time.sleep(0.1)
        yield Sshd(user, port, ssh)
    finally:
        process.terminate()
        process.wait(timeout=10.0)
        log.close()


def test_ssh_targets_deploy_on_the_board_side_and_report_each_target(
    ros_node, spawn_node, ros_env, ros_domain_id, tmp_path: Path, models, loopback_sshd: Sshd
) -> None:
    folder = tmp_path / 'board' / 'models'
    folder.mkdir(parents=True)
    id_b = read_model_info(models['b']).model_id
    harness = InferenceHarness(ros_node, *weld_frame(seed=2, height=120, width=160))
    node = spawn_node(node_args(folder), name='inference')
    harness.wait_ready(node)
    # the board runs weld-deploy itself, on its own ROS domain (here: this test's), as board-setup installs it
    remote = f'env ROS_DOMAIN_ID={ros_domain_id} {sys.executable} -m weld_inference.deploy'
    good = f'{loopback_sshd.user}@127.0.0.1:{folder}'
    unwritable = f'{loopback_sshd.user}@127.0.0.1:/proc/weldvision/models'
    options = ['--ssh', loopback_sshd.ssh, '--remote-command', remote, '--wait-s', '30']
    with frames_flowing(harness):
        done = deploy(ros_env, str(models['b']), good, unwritable, *options)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stdout.strip().splitlines()
        assert lines[0].startswith(f'{good}: OK deploy: {id_b} (weld-b.onnx); previous none'), lines
        assert f"answers with model '{id_b}'" in lines[0], 'confirmed by the board side'
        assert lines[1].startswith(f'{unwritable}: FAILED deploy:') and 'weldvision' in lines[1], lines
        assert read_sidecar(folder / 'weld-b.onnx') == file_sha256(models['b'])
        assert not list((folder / '.weld-deploy' / 'incoming').iterdir()), 'the received copy is cleaned up'
        ros_node.wait_for(lambda: latest_model_id(harness) == id_b, 5.0, 'results from the deployed model')

        back = deploy(ros_env, '--rollback', good, *options)
        assert back.returncode == 0, back.stdout + back.stderr
        assert 'OK rollback: no deployed model' in back.stdout and 'answers with the rules' in back.stdout
        ros_node.wait_for(lambda: latest_model_id(harness) == '', 5.0, 'the rules answering again')
    assert node.stop() == 0, node.output
