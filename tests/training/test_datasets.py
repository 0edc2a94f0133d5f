"""Datasets that grow: incremental convert by content, refusals, removal, frozen versions, pruning,
and training that reads the on-disk cache (same loss as an in-RAM copy; the same loaders under DDP)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import training.dataset
from tests.training.bagmaker import make_frames, write_bag
from tests.training.conftest import CLASSES, tiny_args
from training.config import parse, recipe_of, recipe_parser
from training.convert import convert
from training.convert import main as convert_main
from training.data import FrameStore
from training.dataset import VERSIONS, load_manifest, prune, remove_sessions
from training.dataset import main as dataset_main
from training.errors import DatasetError
from training.procedure import datamodule, train_once

REPO = Path(__file__).resolve().parents[2]


def bags(folder: Path, count: int, first: int = 0) -> list[Path]:
    """Sessions s<first>... of ten frames each, written once (a second call gives the same bags)."""
    return [
        folder / f'bag{i}'
        if (folder / f'bag{i}').exists()
        else write_bag(folder / f'bag{i}', make_frames(CLASSES * 2, seed=i), session_id=f's{i}')
        for i in range(first, first + count)
    ]


def test_incremental_convert_adds_only_new_content_and_never_rewrites(tmp_path: Path) -> None:
    ds = tmp_path / 'ds'
    first = convert(bags(tmp_path, 3), ds, progress=False, workers=1)
    assert (first.version, first.frames, len(first.added)) == ('v0001', 30, 3)
    stored = {p.name: p.stat().st_mtime_ns for p in (ds / 'arrays').iterdir()}
    # the same sessions again, one of them copied under another name, and one new session
    copy = tmp_path / 'renamed'
    copy.mkdir()
    for file in (tmp_path / 'bag1').iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    again = convert([*bags(tmp_path, 3), copy, *bags(tmp_path, 1, first=3)], ds, progress=False, workers=1)
    assert again.version == 'v0002' and again.added_frames == 10 and again.frames == 40
    assert len(again.skipped_bags) == 4 and again.refused == []
    assert {p.name: p.stat().st_mtime_ns for p in (ds / 'arrays').iterdir() if p.name in stored} == stored
    # a recording in another form (sqlite, raw images) of a stored session: same frames, skipped
    write_bag(tmp_path / 'other', make_frames(CLASSES * 2, seed=0), session_id='s0', storage='sqlite3')
    same = convert([tmp_path / 'other'], ds, progress=False, workers=1)
    assert (
        same.added == []
        and same.version == 'v0002'
        and 'stored already as bag0' in same.skipped_bags[0]['reason']
    )
    # earlier sessions keep their split when sessions are added
    v1, v2 = (load_manifest(ds, v)['split']['sessions'] for v in ('v0001', 'v0002'))
    assert {s: v2[s] for s in v1} == v1


def test_a_conflicting_session_is_refused_and_nothing_stored_changes(tmp_path: Path) -> None:
    ds = tmp_path / 'ds'
    convert(bags(tmp_path, 3), ds, progress=False, workers=1)
    before = {p.relative_to(ds): p.read_bytes() for p in ds.rglob('*') if p.is_file()}
    # session s1 relabelled: same stamps and images, other labels
    relabelled = make_frames(CLASSES * 2, seed=1)
    for frame in relabelled[:3]:
        frame.label = 'good' if frame.label != 'good' else 'gap'
    write_bag(tmp_path / 'relabelled', relabelled, session_id='s1')
    report = convert([tmp_path / 'relabelled'], ds, progress=False, workers=1)
    assert report.added == [] and len(report.refused) == 1
    assert 'session s1' in report.refused[0]['reason'] and 'dataset remove' in report.refused[0]['reason']
    # the same images under another session name with other labels
    write_bag(tmp_path / 'copied', relabelled, session_id='s9')
    report = convert([tmp_path / 'copied'], ds, progress=False, workers=1)
    assert 'labelled' in report.refused[0]['reason']
    assert {p.relative_to(ds): p.read_bytes() for p in ds.rglob('*') if p.is_file()} == before
    assert convert_main([str(tmp_path / 'relabelled'), '-o', str(ds), '--quiet', '--workers', '1']) == 2
    with pytest.raises(DatasetError, match='size'):
        convert([tmp_path / 'relabelled'], ds, progress=False, workers=1, size=(24, 32))


def test_a_full_disk_while_adding_keeps_the_dataset_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = tmp_path / 'ds'
    convert(bags(tmp_path, 3), ds, progress=False, workers=1)
    manifest = (ds / 'manifest.json').read_bytes()
    write = training.dataset.write_json_atomic

    def full_at_the_version(path: Path, *args: object, **kwargs: object) -> None:
        if path.parent.name == VERSIONS:
            raise OSError(28, 'No space left on device')
        write(path, *args, **kwargs)

    monkeypatch.setattr(training.dataset, 'write_json_atomic', full_at_the_version)
    new = bags(tmp_path, 1, first=3)
    assert convert_main([str(new[0]), '-o', str(ds), '--quiet', '--workers', '1']) == 2
    assert 'No space left' in capsys.readouterr().err
    assert (ds / 'manifest.json').read_bytes() == manifest and [
        p.name for p in (ds / VERSIONS).iterdir()
    ] == ['v0001.json']
    assert not [p for p in ds.rglob('*') if '.tmp' in p.name]
    monkeypatch.setattr(training.dataset, 'write_json_atomic', write)
    again = convert(new, ds, progress=False, workers=1)  # the session was not taken as stored
    assert again.version == 'v0002' and again.added_frames == 10


def test_one_command_changes_a_dataset_at_a_time(tmp_path: Path) -> None:
    ds = tmp_path / 'ds'
    convert(bags(tmp_path, 3), ds, progress=False, workers=1)
    with training.dataset.changing(ds):  # as if another process were converting into it
        with pytest.raises(DatasetError, match='another weld-train command'):
            convert(bags(tmp_path, 1, first=3), ds, progress=False, workers=1)
        with pytest.raises(DatasetError, match='another weld-train command'):
            remove_sessions(ds, ['s0'])
    assert convert(bags(tmp_path, 1, first=3), ds, progress=False, workers=1).version == 'v0002'


def test_remove_versions_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / 'ds'
    convert(bags(tmp_path, 4), ds, progress=False, workers=1)
    removed = remove_sessions(ds, ['s2'])
    assert removed['name'] == 'v0002' and 's2' not in removed['counts']['per_session']
    convert(bags(tmp_path, 1, first=4), ds, progress=False, workers=1)
    assert dataset_main(['versions', str(ds)]) == 0
    out = capsys.readouterr().out
    assert 'v0001' in out and 'v0003' in out and '[current]' in out and 'per class: good' in out
    assert dataset_main(['versions', str(ds), 'v0001']) == 0
    assert 'session s2: good 2' in capsys.readouterr().out
    # an old version still reads back exactly, from the shared arrays
    old = FrameStore(ds, 'v0001')
    assert len(old.frames) == 40 and old.manifest['digest'] == load_manifest(ds, 'v0001')['digest']
    rgb, _ = old.pair(next(f for f in old.frames if f['session'] == 's2'))
    assert rgb.shape == (48, 64, 3)
    with pytest.raises(DatasetError, match='current version'):
        prune(ds, ['v0003'])
    result = prune(ds, ['v0001'])
    assert result['bags'] == ['bag2'] and not (ds / 'arrays' / 'bag2_rgb.npy').exists()
    current = FrameStore(ds)
    assert len(current.frames) == 40 and all(current.pair(f) for f in current.frames[::10])
    with pytest.raises(DatasetError, match=r"no dataset version 'v0001'.*pruned"):
        FrameStore(ds, 'v0001')
    assert dataset_main(['remove', str(ds), 'nope']) == 2
    assert sorted(p.name for p in (ds / VERSIONS).iterdir()) == ['v0002.json', 'v0003.json']


def _first_epoch_loss(log_dir: Path) -> float:
    lines = (log_dir / 'metrics.csv').read_text().splitlines()
    header = lines[0].split(',')
    column = header.index('train/loss_epoch') if 'train/loss_epoch' in header else None
    rows = [dict(zip(header, line.split(','), strict=False)) for line in lines[1:]]
    if column is None:
        key = next(k for k in header if k.startswith('train/loss'))
        return float(next(r[key] for r in rows if r.get(key)))
    return float(next(r['train/loss_epoch'] for r in rows if r.get('train/loss_epoch')))


def test_training_on_the_disk_cache_equals_training_on_an_in_ram_copy(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    recipe = recipe_of(parse(recipe_parser('test', 'test'), [*tiny_args(), '--trainer.max_epochs=1']))
    recipe = recipe.__class__(**{**recipe.__dict__, 'trainer': {**recipe.trainer, 'accelerator': 'cpu'}})
    torch.set_num_threads(1)
    on_disk = datamodule(recipe, tiny_dataset)
    disk_run = train_once(recipe, on_disk, tmp_path / 'disk', seed=5)
    in_ram = datamodule(recipe, tiny_dataset)
    in_ram.setup()
    for split, dataset in in_ram.datasets.items():
        copy = np.array(dataset.inputs[:])  # every input in memory, as the loader held them before
        in_ram.datasets[split] = TensorDataset(torch.from_numpy(copy), torch.from_numpy(in_ram.labels(split)))  # type: ignore[assignment]
    ram_run = train_once(recipe, in_ram, tmp_path / 'ram', seed=5)
    disk_loss, ram_loss = _first_epoch_loss(tmp_path / 'disk'), _first_epoch_loss(tmp_path / 'ram')
    assert np.isfinite(disk_loss) and disk_loss == pytest.approx(ram_loss, rel=1e-6)
    for a, b in zip(disk_run.model.state_dict().values(), ram_run.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_the_loaders_work_under_ddp_with_two_cpu_processes(tiny_dataset: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS='1')
    env.pop('LOCAL_RANK', None)
    script = REPO / 'tests' / 'training' / 'ddp_fit.py'
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_dataset), str(tmp_path / 'out')],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / 'out' / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2] and [r['rank'] for r in ranks] == [0, 1]
    batches = [[tuple(batch) for batch in r['batches']] for r in ranks]
    assert len(batches[0]) == len(batches[1]) and {len(b) for rank in batches for b in rank} == {4}
    # each process reads its own batches (the shorter rank padded with one of the other's); together
    # they hold every full batch of the epoch
    frames = [{i for batch in rank for i in batch} for rank in batches]
    assert len(frames[0] | frames[1]) == ranks[0]['train_frames'] // 4 * 4
    assert len(set(batches[0]) & set(batches[1])) <= 1
    assert ranks[0]['steps'] == ranks[1]['steps'] == 2
    assert ranks[0]['weights'] == pytest.approx(ranks[1]['weights'])  # DDP kept the copies equal
    # and `weld-train fit --trainer.devices 2`: both processes train, rank 0 alone writes and reports
    command = [sys.executable, '-m', 'training.cli', 'fit', str(tiny_dataset), *tiny_args(), '--retries=0']
    command += ['--trainer.devices=2', '--trainer.accelerator=cpu', f'--out={tmp_path / "fit"}']
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('checkpoint:') == 1 and (tmp_path / 'fit' / 'model.ckpt').is_file()
