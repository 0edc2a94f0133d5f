"""weld_inference.deploy.store: placing, keeping and rolling back models in one folder (no ROS)."""

import io
import json
from pathlib import Path

import pytest

from tests.inference.models import write_model
from weld_core.model_file import ModelError, file_sha256, read_model_info
from weld_core.model_store import read_sidecar
from weld_inference.deploy import DeployError, place, receive, rollback, running_model
from weld_inference.deploy.store import RECORD_DIR, models_newest_first
from weld_inference.deploy.targets import is_ssh_target, remote_command


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones too): digest and mtime."""
    return {
        str(path.relative_to(folder)): (file_sha256(path), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob('*'))
        if path.is_file()
    }


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    source = tmp_path / 'exports'
    source.mkdir()
    return {
        'a': write_model(source / 'weld-a.onnx', name='weld', version='1', seed=1),
        'b': write_model(source / 'weld-b.onnx', name='weld', version='2', seed=2),
    }


def test_place_writes_the_sidecar_and_keeps_the_model_it_replaces(tmp_path: Path, models) -> None:
    folder = tmp_path / 'models'
    first = place(models['a'], folder)
    assert first.previous is None and first.current.model_id == read_model_info(models['a']).model_id
    assert read_sidecar(folder / 'weld-a.onnx') == file_sha256(models['a'])
    assert (folder / 'weld-a.onnx.sha256').read_text() == f'{file_sha256(models["a"])}  weld-a.onnx\n'

    second = place(models['b'], folder)
    assert second.previous == first.current
    assert running_model(folder) == second.current
    assert models_newest_first(folder)[0].name == 'weld-b.onnx'
    kept = folder / RECORD_DIR / 'previous' / 'weld-a.onnx'
    assert file_sha256(kept) == file_sha256(models['a']) and read_sidecar(kept) == file_sha256(kept)
    state = json.loads((folder / RECORD_DIR / 'state.json').read_text())
    assert state['current']['name'] == 'weld-b.onnx' and state['previous']['name'] == 'weld-a.onnx'
    assert not [p for p in folder.rglob('*') if p.name.endswith('.part')], 'no partial file left behind'


def test_an_invalid_model_is_refused_and_nothing_changes(tmp_path: Path, models) -> None:
    folder = tmp_path / 'models'
    place(models['a'], folder)
    before = snapshot(folder)
    truncated = tmp_path / 'weld-c.onnx'
    truncated.write_bytes(models['b'].read_bytes()[:200])
    wrong_classes = write_model(tmp_path / 'weld-3.onnx', name='weld', version='3', graph_classes=3)
    for bad in (truncated, wrong_classes, tmp_path / 'missing.onnx'):
        with pytest.raises(ModelError):
            place(bad, folder)
    with pytest.raises(ModelError, match='not a model file name'):
        place(models['b'], folder, name='../escape.onnx')
    assert snapshot(folder) == before


def test_rollback_restores_an_overwritten_model_and_a_second_rollback_undoes_it(
    tmp_path: Path, models
) -> None:
    folder = tmp_path / 'models'
    place(models['a'], folder, name='weld.onnx')
    place(models['b'], folder, name='weld.onnx')  # same name: the old content exists only as the kept copy
    assert file_sha256(folder / 'weld.onnx') == file_sha256(models['b'])

    back = rollback(folder)
    assert file_sha256(folder / 'weld.onnx') == file_sha256(models['a'])
    assert read_sidecar(folder / 'weld.onnx') == file_sha256(models['a'])
    assert back.current.sha256 == file_sha256(models['a']) and back.previous.sha256 == file_sha256(
        models['b']
    )

    rollback(folder)
    assert file_sha256(folder / 'weld.onnx') == file_sha256(models['b'])


def test_rollback_of_the_first_deploy_leaves_no_model_and_is_refused_without_a_record(
    tmp_path: Path, models
) -> None:
    folder = tmp_path / 'models'
    with pytest.raises(DeployError, match='no deploy recorded'):
        rollback(folder)
    place(models['a'], folder)
    change = rollback(folder)
    assert change.current is None and running_model(folder) is None
    assert [p.name for p in folder.iterdir() if not p.name.startswith('.')] == []
    rollback(folder)  # and back again
    assert running_model(folder).name == 'weld-a.onnx'


def test_rollback_refuses_when_the_deployed_file_was_replaced_by_hand(tmp_path: Path, models) -> None:
    folder = tmp_path / 'models'
    place(models['a'], folder)
    place(models['b'], folder)
    (folder / 'weld-b.onnx').write_bytes(models['a'].read_bytes())
    before = snapshot(folder)
    with pytest.raises(DeployError, match='no longer the deployed file'):
        rollback(folder)
    assert snapshot(folder) == before


def test_running_model_skips_a_newer_file_the_node_would_reject(tmp_path: Path, models) -> None:
    folder = tmp_path / 'models'
    place(models['a'], folder)
    (folder / 'zz-broken.onnx').write_bytes(b'not onnx')
    assert running_model(folder).name == 'weld-a.onnx'


def test_receive_refuses_a_stream_whose_digest_differs(tmp_path: Path, models) -> None:
    data = models['a'].read_bytes()
    folder = tmp_path / 'models'
    with pytest.raises(DeployError, match='transfer was cut or corrupted'):
        receive(io.BytesIO(data[:-10]), folder, 'weld-a.onnx', file_sha256(models['a']))
    assert not list((folder / RECORD_DIR / 'incoming').iterdir())
    received = receive(io.BytesIO(data), folder, 'weld-a.onnx', file_sha256(models['a']))
    assert received.read_bytes() == data and received.parent.name == 'incoming'


def test_ssh_targets_and_the_remote_command_line() -> None:
    assert is_ssh_target('weld@rdk-x5-01:/opt/weldvision/models')
    assert is_ssh_target('rdk:/opt/weldvision/models')
    assert not is_ssh_target('/opt/weldvision/models') and not is_ssh_target('runs/models')
    assert not is_ssh_target('./a:b')
    command = remote_command(
        '/opt/weldvision/bin/weldvision-env weld-deploy', '/opt/my models', 'deploy', 'w.onnx', 'ab' * 32, 30
    )
    assert command == (
        "/opt/weldvision/bin/weldvision-env weld-deploy - '/opt/my models' --name w.onnx "
        f'--expect-sha256 {"ab" * 32} --wait-s 30 --json'
    )
    assert remote_command('weld-deploy', '/m', 'rollback', '', '', 5) == (
        'weld-deploy --rollback /m --wait-s 5 --json'
    )
