"""weld_core.model_store: the checks made before a model is placed, the sidecar, atomic placement."""

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inference.models import build_model, model_metadata, write_model
from weld_core.model_file import ModelError
from weld_core.model_store import (
    check_model,
    check_model_name,
    install_model,
    read_sidecar,
    select_model,
    sidecar_path,
    write_sidecar,
)


def listing(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} if folder.is_dir() else {}


def test_sidecar_is_sha256sum_format_and_reads_back(tmp_path: Path) -> None:
    model = write_model(tmp_path / 'm.onnx')
    sidecar = write_sidecar(model)
    assert sidecar == sidecar_path(model) == tmp_path / 'm.onnx.sha256'
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert sidecar.read_text() == f'{digest}  m.onnx\n'
    assert read_sidecar(model) == digest
    # the coreutils tool agrees with the file it did not write
    subprocess.run(['sha256sum', '--check', '--status', sidecar.name], cwd=tmp_path, check=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def test_install_places_the_file_and_its_sidecar(tmp_path: Path) -> None:
    (tmp_path / 'export').mkdir()
    source = write_model(tmp_path / 'export' / 'weldnet.onnx', name='weldnet', version='7')
    models = tmp_path / 'models'
    installed = install_model(source, models)
    assert installed.path == models / 'weldnet.onnx' and not installed.replaced
    assert installed.path.read_bytes() == source.read_bytes()
    assert read_sidecar(installed.path) == installed.info.sha256
    assert installed.info.model_id.startswith('weldnet-7-')
    assert sorted(p.name for p in models.iterdir()) == ['weldnet.onnx', 'weldnet.onnx.sha256']
    # what the node checks passes, the sidecar included
    assert check_model(installed.path).info.sha256 == installed.info.sha256


def test_install_over_a_file_of_the_same_name_replaces_both(tmp_path: Path) -> None:
    models = tmp_path / 'models'
    install_model(write_model(tmp_path / 'a.onnx', version='1'), models, 'weld.onnx')
    second = install_model(write_model(tmp_path / 'b.onnx', version='2', seed=3), models, 'weld.onnx')
    assert second.replaced
    assert second.path.read_bytes() == (tmp_path / 'b.onnx').read_bytes()
    assert read_sidecar(second.path) == second.info.sha256
    assert check_model(second.path).info.metadata['model_version'] == '2'


@pytest.mark.parametrize(
    ('kind', 'match'),
    [
        ('garbage', 'cannot load'),
        ('no-metadata', 'lacks'),
        ('wrong-classes', '5 classes'),
    ],
)
def test_a_file_the_node_would_refuse_is_not_placed(tmp_path: Path, kind: str, match: str) -> None:
    models = tmp_path / 'models'
    install_model(write_model(tmp_path / 'ok.onnx'), models)
    before = listing(models)
    bad = tmp_path / 'bad.onnx'
    if kind == 'garbage':
        bad.write_bytes(b'\x08\x01' + b'\x00' * 200)
    elif kind == 'no-metadata':
        metadata = model_metadata('x', '1')
        del metadata['training_data']
        bad.write_bytes(build_model(metadata=metadata))
    else:
        bad.write_bytes(build_model(graph_classes=3))
    with pytest.raises(ModelError, match=match):
        install_model(bad, models)
    assert listing(models) == before


def test_the_self_test_refuses_an_output_that_is_not_probabilities(tmp_path: Path) -> None:
    # a graph whose output is the logits (no softmax) while the metadata promises probabilities
    from onnx import load_from_string

    proto = load_from_string(build_model())
    softmax = next(node for node in proto.graph.node if node.op_type == 'Softmax')
    proto.graph.node.remove(softmax)
    proto.graph.output[0].name = 'logits'
    bad = tmp_path / 'logits.onnx'
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match='self-test call failed: output is not a probability distribution'):
        check_model(bad)


def test_a_corrupt_copy_is_caught_by_its_sidecar(tmp_path: Path) -> None:
    model = write_model(tmp_path / 'm.onnx')
    write_sidecar(model)
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match='does not match'):
        check_model(model)


@pytest.mark.parametrize(
    'name',
    ['../escape.onnx', '.hidden.onnx', 'a b.onnx', 'model.txt', 'sub/model.onnx', 'x;rm.onnx', '.onnx'],
)
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    source = write_model(tmp_path / 'ok.onnx')
    with pytest.raises(ModelError, match='not a model file name'):
        install_model(source, tmp_path / 'models', name)
    assert not (tmp_path / 'models').exists()
    assert check_model_name('weld-net_2.v3.onnx') == 'weld-net_2.v3.onnx'


def _install_with_file_size_limit(source: Path, models: Path, limit: int) -> subprocess.CompletedProcess:
    """install_model in a child process whose files may not grow beyond ``limit`` bytes (a full disk)."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = (
        'import sys\n'
        'from weld_core.model_store import install_model\n'
        'from weld_core.model_file import ModelError\n'
        'try:\n    install_model(sys.argv[1], sys.argv[2])\n'
        'except ModelError as exc:\n    print(exc); sys.exit(3)\n'
    )
    return subprocess.run(
        [sys.executable, '-c', code, str(source), str(models)],
        capture_output=True,
        text=True,
        preexec_fn=limit_writes,
        env={**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[2])},
        timeout=60,
    )


def test_a_full_disk_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    models = tmp_path / 'models'
    install_model(write_model(tmp_path / 'old.onnx', version='1'), models, 'weld.onnx')
    before = listing(models)
    big = write_model(tmp_path / 'weld.onnx', kind='slow', version='2', slow_matmuls=2)
    assert big.stat().st_size > 100_000
    done = _install_with_file_size_limit(big, models, limit=50_000)
    assert done.returncode == 3, done.stderr
    assert 'the folder is unchanged' in done.stdout and 'File too large' in done.stdout
    assert listing(models) == before


def test_select_makes_a_file_the_newest(tmp_path: Path) -> None:
    first = write_model(tmp_path / 'a.onnx')
    second = write_model(tmp_path / 'b.onnx')
    os.utime(second, ns=(second.stat().st_mtime_ns + 10**9,) * 2)  # b is newer, even in the future
    select_model(first)
    assert first.stat().st_mtime_ns > second.stat().st_mtime_ns
    with pytest.raises(ModelError, match='no such model file'):
        select_model(tmp_path / 'missing.onnx')
