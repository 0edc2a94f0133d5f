"""The dataset folder: stored bags, frozen versions, and ``weld-train dataset``.

    weld-train dataset versions DATASET [VERSION]     the frozen versions (one in full)
    weld-train dataset remove DATASET SESSION...      a new version without these sessions
    weld-train dataset prune DATASET VERSION...       drop old versions and the arrays only they use

Layout (``weld-train convert`` adds bags; nothing stored is ever rewritten):

- ``arrays/<key>_rgb.npy``, ``arrays/<key>_depth.npy``: one stored bag's decoded frames;
- ``bags/<key>.json``: that bag's frames (stamp, label, session, row, content sha256), its content
  digest, intrinsics and what was skipped in it;
- ``versions/vNNNN.json``: a frozen version: which bags, the split of its sessions, counts per class,
  session and split, digest, date and what changed from the one before. Every change (an add, a
  removal) makes a new version and no version file is written twice, so a model trained on one can
  always be traced back to exactly its frames;
- ``manifest.json``: the newest version with its frames listed (what training reads);
- ``cache/<key>/``: preprocessed inputs of a bag, one file per preprocessing (training.data).

Sessions keep their split when sessions are added or removed; new sessions fill the validation and
test shares the split settings ask for. Every file is written under a temporary name and renamed.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import DatasetError
from training.splits import split_frames_in_time, split_sessions, split_sizes
from weld_core.errors import WeldError
from weld_core.files import write_atomically

MANIFEST = 'manifest.json'
ARRAYS = 'arrays'
BAGS = 'bags'
VERSIONS = 'versions'
CACHE = 'cache'
LOCK = '.lock'
FORMAT = 2


def write_json_atomic(path: Path, data: Any, exclusive: bool = False) -> None:
    """``data`` as JSON at ``path``, written whole or not at all; ``exclusive``: never replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=1).encode(), exclusive=exclusive)


@contextlib.contextmanager
def changing(root: Path) -> Iterator[None]:
    """Held while a command changes the dataset (convert, remove, prune): one at a time, so no
    version is built on a state another command is changing. The kernel lets go if a process dies."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK, 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DatasetError(
                f'{root}: another weld-train command is changing this dataset (convert, remove or '
                'prune); run this one when it has finished'
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f'{path}: missing ({what}); the dataset folder is incomplete') from exc
    except ValueError as exc:
        raise DatasetError(f'{path}: not valid JSON ({exc}); the {what} is damaged') from exc


class RowFile:
    """Rows of an ``.npy`` file, each read with ``pread``: nothing is mapped or held, so reading a
    dataset of any size keeps a process's memory flat (the page cache is the kernel's, not ours).

    Picklable without its open file, so data-loader workers and DDP processes open their own.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = 0
        try:
            with open(self.path, 'rb') as stream:
                major, _ = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(stream)
                self.offset = stream.tell()
        except (OSError, ValueError) as exc:
            raise DatasetError(f'{self.path}: unreadable array ({exc}); convert the bag again') from exc
        if fortran or not shape:
            raise DatasetError(f'{self.path}: not a C-ordered array of rows')
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if self.path.stat().st_size < self.offset + self.row_bytes * self.shape[0]:
            raise DatasetError(f'{self.path}: truncated (shorter than its {self.shape[0]} rows)')

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, '_fd': None, '_pid': 0}

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def row(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        if not 0 <= index < self.shape[0]:
            raise IndexError(f'{self.path}: row {index} of {self.shape[0]}')
        array = np.empty(self.shape[1:], self.dtype) if out is None else out
        view = memoryview(array).cast('B')
        got = os.preadv(self._file(), [view], self.offset + index * self.row_bytes)
        if got != self.row_bytes:
            raise DatasetError(f'{self.path}: row {index} cut short; convert the bag again')
        return array

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        self.close()


def write_rows(path: Path, shape: tuple[int, ...], dtype: Any, rows: Iterable[np.ndarray]) -> None:
    """An ``.npy`` file of ``shape`` written row by row (no whole array in memory), via a temporary
    file of this call's own and a rename: two writers of one file both succeed, a failure leaves
    nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.tmp.npy')
    try:
        with os.fdopen(handle, 'wb') as stream:
            header = {'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)), 'fortran_order': False}
            np.lib.format.write_array_header_1_0(stream, header | {'shape': tuple(shape)})
            written = 0
            for row in rows:
                stream.write(np.ascontiguousarray(row, dtype).tobytes())
                written += 1
            if written != shape[0]:
                raise DatasetError(f'{path}: {written} rows written of {shape[0]}')
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as ``.npy`` at ``path`` via a temporary file and a rename."""
    write_rows(path, array.shape, array.dtype, iter(array))


# --- versions -----------------------------------------------------------------------------------


def version_names(root: Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / VERSIONS).glob('v*.json'))


def read_version(root: Path, name: str) -> dict[str, Any]:
    path = Path(root) / VERSIONS / f'{name}.json'
    if not path.is_file():
        names = version_names(root)
        raise DatasetError(
            f'{root}: no dataset version {name!r} (it has {", ".join(names) or "none"}'
            + ('; it may have been pruned)' if names else ')')
        )
    return read_json(path, 'version file')


def read_bag(root: Path, key: str) -> dict[str, Any]:
    return read_json(Path(root) / BAGS / f'{key}.json', f'record of bag {key}')


def next_version_name(root: Path) -> str:
    names = version_names(root)
    return f'v{int(names[-1][1:]) + 1 if names else 1:04d}'


def _extend_split(
    kept: dict[str, str],
    session_counts: dict[str, Counter[str]],
    classes: Sequence[str],
    settings: dict[str, Any],
) -> dict[str, str]:
    """Sessions of ``kept`` keep their split; the others fill the held-out shares, then train."""
    val_fraction, test_fraction = settings['val_fraction'], settings['test_fraction']
    sessions = sorted(session_counts)
    kept = {s: split for s, split in kept.items() if s in session_counts}
    if not kept:
        return split_sessions(session_counts, classes, val_fraction, test_fraction, settings['seed'])
    new = [s for s in sessions if s not in kept]
    n_val, n_test = split_sizes(len(sessions), val_fraction, test_fraction)
    have = Counter(kept.values())
    random.Random(f'{settings["seed"]}:{",".join(new)}').shuffle(new)
    want_val = max(0, n_val - have['val'])
    want_test = max(0, n_test - have['test'])
    assignment = dict(kept)
    for index, session in enumerate(new):
        assignment[session] = (
            'val' if index < want_val else 'test' if index < want_val + want_test else 'train'
        )
    return assignment


def dataset_digest(frames: list[dict[str, Any]], array_hashes: dict[str, str]) -> str:
    """sha256 over every stored bag's content and every frame's place, session, stamp and label."""
    digest = hashlib.sha256()
    for key in sorted(array_hashes):
        digest.update(f'{key}:{array_hashes[key]}\n'.encode())
    for frame in frames:
        digest.update(
            f'{frame["array"]}:{frame["row"]}:{frame["session"]}:{frame["stamp_ns"]}:{frame["label"]}\n'.encode()
        )
    return digest.hexdigest()


def _frames_of(bags: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    frames = []
    for bag in bags:
        for frame in bag['frames']:
            frames.append({**frame, 'source': bag['origin'], 'bag': bag['bag'], 'array': bag['key']})
    return frames


def _assign(frames: list[dict[str, Any]], split: dict[str, Any]) -> None:
    """Each frame's split and content duplicates, from a version's split record."""
    if split['mode'] == 'by-session':
        for frame in frames:
            frame['split'] = split['sessions'][frame['session']]
    else:
        ordered = sorted(range(len(frames)), key=lambda i: frames[i]['stamp_ns'])
        blocks = split_frames_in_time(len(frames), split['val_fraction'], split['test_fraction'])
        for index, name in zip(ordered, blocks, strict=True):
            frames[index]['split'] = name
    first_seen: dict[str, dict[str, Any]] = {}
    for frame in frames:
        if frame['sha256'] in first_seen:
            first = first_seen[frame['sha256']]
            frame['duplicate_of'] = f'{first["bag"]}@{first["stamp_ns"]}'
        else:
            first_seen[frame['sha256']] = frame


def build_version(
    root: Path,
    name: str,
    bags: Sequence[dict[str, Any]],
    classes: Sequence[str],
    size: Sequence[int] | None,
    split_settings: dict[str, Any],
    previous: dict[str, Any] | None,
    change: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The version record of ``bags`` and its manifest (the record with every frame listed)."""
    frames = _frames_of(bags)
    if not frames:
        raise DatasetError(f'{root}: the version would hold no frames; nothing written')
    session_counts: dict[str, Counter[str]] = {}
    for frame in frames:
        session_counts.setdefault(frame['session'], Counter())[frame['label']] += 1
    split: dict[str, Any] = dict(split_settings)
    if len(session_counts) >= 2:
        kept = previous['split']['sessions'] if previous and previous['split']['mode'] == 'by-session' else {}
        split |= {'mode': 'by-session', 'sessions': _extend_split(kept, session_counts, classes, split)}
    else:
        split |= {'mode': 'single-session-time-blocks', 'sessions': {}}
    _assign(frames, split)
    per_class = {c: sum(counts[c] for counts in session_counts.values()) for c in classes}
    per_session = {s: {c: counts[c] for c in classes} for s, counts in sorted(session_counts.items())}
    per_split: dict[str, dict[str, int]] = {}
    for frame in frames:
        per_split.setdefault(frame['split'], dict.fromkeys(classes, 0))[frame['label']] += 1
    totals = Counter[str]()
    for bag in bags:
        totals.update({k: bag['counts'][k] for k in bag['counts']})
    content_duplicates = sum('duplicate_of' in frame for frame in frames)
    version = {
        'format': FORMAT,
        'name': name,
        'created_unix_s': time.time(),
        'parent': previous['name'] if previous else None,
        'classes': list(classes),
        'size': list(size) if size else None,
        'bags': [bag['key'] for bag in bags],
        'digest': dataset_digest(frames, {bag['key']: bag['array_sha256'] for bag in bags}),
        'frames': len(frames),
        'split': split,
        'counts': {
            'per_class': per_class,
            'per_session': per_session,
            'per_split': per_split,
            **dict(totals),
            'duplicates': totals['duplicates'] + content_duplicates,
        },
        'change': change,
    }
    manifest = version | {
        'frames': frames,
        'bags': [{k: v for k, v in bag.items() if k not in ('frames', 'skipped')} for bag in bags],
        'skipped': [item for bag in bags for item in bag['skipped']],
        'failed_bags': [{'bag': bag['bag'], 'error': bag['error']} for bag in bags if bag['error']],
    }
    return version, manifest


def commit(root: Path, version: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Freeze ``version`` (its file is never written twice), then make it the current manifest."""
    try:
        write_json_atomic(Path(root) / VERSIONS / f'{version["name"]}.json', version, exclusive=True)
    except FileExistsError as exc:
        raise DatasetError(
            f'{root}: version {version["name"]} was written by another command at the same time; '
            'nothing of this one was stored as a version: run it again'
        ) from exc
    write_json_atomic(Path(root) / MANIFEST, manifest)


def materialise(root: Path, version: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a stored version (its record with its bags' frames listed)."""
    bags = [read_bag(root, key) for key in version['bags']]
    frames = _frames_of(bags)
    _assign(frames, version['split'])
    return version | {
        'frames': frames,
        'bags': [{k: v for k, v in bag.items() if k not in ('frames', 'skipped')} for bag in bags],
        'skipped': [item for bag in bags for item in bag['skipped']],
        'failed_bags': [{'bag': bag['bag'], 'error': bag['error']} for bag in bags if bag['error']],
    }


def load_manifest(dataset_dir: str | Path, version: str | None = None) -> dict[str, Any]:
    """The manifest of the current version, or of the named frozen ``version``."""
    root = Path(dataset_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f'{dataset_dir}: no {MANIFEST}; make the dataset with `weld-train convert`')
    if version is None:
        manifest = read_json(path, 'manifest')
    else:
        manifest = materialise(root, read_version(root, version))
    if manifest.get('format') != FORMAT:
        raise DatasetError(
            f'{path}: written by an older weld-train (no versions); convert the sessions into a new folder'
        )
    if not manifest.get('frames'):
        raise DatasetError(f'{path}: the dataset has no frames')
    return manifest


# --- the commands -------------------------------------------------------------------------------


def remove_sessions(dataset_dir: str | Path, sessions: Sequence[str]) -> dict[str, Any]:
    """A new version without ``sessions`` (their bags stay stored for the versions that hold them)."""
    root = Path(dataset_dir)
    load_manifest(root)  # a clear error for a folder that is no dataset, before any lock file
    with changing(root):
        return _remove_sessions(root, sessions)


def _remove_sessions(root: Path, sessions: Sequence[str]) -> dict[str, Any]:
    current = load_manifest(root)
    held = {frame['session'] for frame in current['frames']}
    unknown = sorted(set(sessions) - held)
    if unknown or not sessions:
        raise DatasetError(f'{root}: no session {", ".join(unknown) or "given"} (it has {sorted(held)})')
    bags = [read_bag(root, key) for key in read_version(root, current['name'])['bags']]
    gone = set(sessions)
    mixed = [
        b['key']
        for b in bags
        if {f['session'] for f in b['frames']} & gone and {f['session'] for f in b['frames']} - gone
    ]
    if mixed:
        raise DatasetError(
            f'{root}: bag(s) {", ".join(mixed)} hold these and other sessions; a bag is removed whole'
        )
    kept = [b for b in bags if not {f['session'] for f in b['frames']} & gone]
    removed = [b['key'] for b in bags if b not in kept]
    settings = {k: current['split'][k] for k in ('seed', 'val_fraction', 'test_fraction')}
    version, manifest = build_version(
        root,
        next_version_name(root),
        kept,
        current['classes'],
        current['size'],
        settings,
        current,
        {'removed': removed, 'removed_sessions': sorted(sessions)},
    )
    commit(root, version, manifest)
    return version


def prune(dataset_dir: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """Drop the frozen versions ``names`` (never the current one), then every bag, array and cache
    no remaining version uses. Returns what went and the bytes freed."""
    root = Path(dataset_dir)
    load_manifest(root)
    with changing(root):
        return _prune(root, names)


def _prune(root: Path, names: Sequence[str]) -> dict[str, Any]:
    current = load_manifest(root)['name']
    for name in names:
        read_version(root, name)  # unknown names fail before anything is removed
    if current in names:
        raise DatasetError(f'{root}: {current} is the current version; it cannot be pruned')
    for name in names:
        (root / VERSIONS / f'{name}.json').unlink()
    used = {key for name in version_names(root) for key in read_version(root, name)['bags']}
    freed, dropped = 0, []
    for record in sorted((root / BAGS).glob('*.json')):
        if record.stem in used:
            continue
        arrays = [root / ARRAYS / f'{record.stem}_{kind}.npy' for kind in ('rgb', 'depth')]
        files = [*(f for f in arrays if f.is_file()), record]
        cache = root / CACHE / record.stem
        freed += sum(f.stat().st_size for f in files)
        if cache.is_dir():
            freed += sum(f.stat().st_size for f in cache.iterdir())
            shutil.rmtree(cache)
        for file in files:
            file.unlink()
        dropped.append(record.stem)
    return {'versions': list(names), 'bags': dropped, 'bytes': freed}


def describe(version: dict[str, Any], full: bool = False) -> list[str]:
    """What ``weld-train dataset versions`` prints of a version."""
    date = time.strftime('%Y-%m-%d %H:%M', time.gmtime(version['created_unix_s']))
    counts = version['counts']
    split = version['split']
    change = version.get('change', {})
    changed = ', '.join(f'{k} {len(v) if isinstance(v, list) else v}' for k, v in change.items() if v)
    lines = [
        f'{version["name"]}  {date} UTC  {version["frames"]} pairs, {len(counts["per_session"])} '
        f'sessions, digest {version["digest"][:16]}  ({changed or "no change"})',
        '  per class: ' + ', '.join(f'{k} {v}' for k, v in counts['per_class'].items()),
    ]
    for name, per_class in sorted(counts['per_split'].items()):
        sessions = sorted(s for s, assigned in split['sessions'].items() if assigned == name)
        lines.append(
            f'  {name}: {sum(per_class.values())} pairs'
            + (f' of {", ".join(sessions)}' if sessions else f' ({split["mode"]})')
        )
    if full:
        lines.extend(
            f'  session {s}: ' + ', '.join(f'{k} {v}' for k, v in c.items())
            for s, c in counts['per_session'].items()
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='weld-train dataset', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    versions = commands.add_parser('versions', help='the frozen versions (one with its sessions)')
    versions.add_argument('dataset')
    versions.add_argument('version', nargs='?', default=None, help='show this one in full')
    remove = commands.add_parser('remove', help='a new version without these sessions')
    remove.add_argument('dataset')
    remove.add_argument('sessions', nargs='+')
    pruning = commands.add_parser('prune', help='drop old versions and the arrays only they use')
    pruning.add_argument('dataset')
    pruning.add_argument('versions', nargs='+')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'versions':
            root = Path(args.dataset)
            current = load_manifest(root)['name']
            names = [args.version] if args.version else version_names(root)
            for name in names:
                lines = describe(read_version(root, name), full=bool(args.version))
                print(lines[0] + ('  [current]' if name == current else ''), *lines[1:], sep='\n')
        elif args.command == 'remove':
            version = remove_sessions(args.dataset, args.sessions)
            print('\n'.join(describe(version)))
        else:
            result = prune(args.dataset, args.versions)
            print(
                f'pruned {", ".join(result["versions"])}: {len(result["bags"])} bags no version uses, '
                f'{result["bytes"] / 1e6:.1f} MB freed'
            )
    except WeldError as exc:
        print(f'dataset: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
