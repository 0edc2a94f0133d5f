"""``weld-train convert``: recorded sessions -> a dataset folder training reads directly.

    weld-train convert sessions/*.tar.gz -o data/line3       # a new dataset, or new sessions into it

Each bag's labelled frame pairs are decoded once into ``arrays/<key>_rgb.npy`` (N x H x W x 3 uint8
RGB) and ``arrays/<key>_depth.npy`` (N x H x W float32 metres, 0 = no data), so training never
decodes a JPEG or PNG again; its frames (source bag, stamp, label, session, array row, sha256 of
the recorded bytes), camera intrinsics (from its first CameraInfo, in the pixels of the stored
arrays; null when the bag has none) and what was skipped and why go to ``bags/<key>.json``; a new
frozen version of the dataset lists it (training.dataset: layout, versions, removal).

Converting into an existing dataset adds only what it does not hold, recognised by content, not
by name: a bag whose files or frames are stored already is skipped (before decoding, when its
files are the same), and one whose frames clash with stored ones (a session's stamps with other
content or labels, or recorded bytes stored with another label) is refused with the reason. Nothing
stored is rewritten; the class list, size and split settings are the dataset's own.

Bags are read in two passes: the labels first (small), then only the labelled frame pairs are
decoded, so a long unlabelled recording costs reading time but no decoding. Bags are converted in
parallel worker processes. Nothing that can be decoded is lost because a neighbour could not.
"""

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from training.bags import choose_topics, open_reader, opened_sources
from training.dataset import (
    ARRAYS,
    BAGS,
    MANIFEST,
    build_version,
    changing,
    commit,
    load_manifest,
    next_version_name,
    read_bag,
    save_array,
    write_json_atomic,
)
from training.errors import BagError, DatasetError
from weld_core.bag_types import CAMERA_INFO, weld_typestore
from weld_core.classes import DEFAULT_CLASSES, check_class_list
from weld_core.errors import WeldError
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.pairing import DEFAULT_SLOP_NS, FramePairer
from weld_core.stamps import stamp_to_ns

DEFAULT_SPLIT = {'seed': 0, 'val_fraction': 0.15, 'test_fraction': 0.25}


@dataclass
class BagResult:
    origin: str
    bag: str
    key: str
    file_sha256: str = ''
    frames: list[dict[str, Any]] = field(default_factory=list)
    unlabelled: int = 0
    duplicates: int = 0
    relabelled: int = 0
    unpaired: int = 0
    labels_without_frame: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    array_sha256: str = ''
    seconds: float = 0.0
    # fx, fy, cx, cy in the pixels of the stored arrays (None: the bag has no readable CameraInfo)
    intrinsics: dict[str, float] | None = None


@dataclass
class ConvertReport:
    out_dir: Path
    version: str  # the dataset's version after this conversion
    frames: int  # frame pairs of that version
    added_frames: int
    added: list[str]  # keys of the bags stored by this conversion
    skipped_bags: list[dict[str, str]]  # held already (same files or frames): bag, reason
    refused: list[dict[str, str]]  # frames clash with stored ones: bag, reason
    per_class: dict[str, int]
    per_session: dict[str, dict[str, int]]
    per_split: dict[str, dict[str, int]]
    unlabelled: int
    duplicates: int
    unpaired: int
    skipped: list[dict[str, Any]]
    failed_bags: list[dict[str, str]]
    digest: str
    seconds: float
    split_mode: str

    @property
    def pairs_per_s(self) -> float:
        return self.added_frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f'{self.added_frames} labelled frame pairs added ({len(self.added)} bags) -> {self.out_dir} '
            f'in {self.seconds:.1f} s ({self.pairs_per_s:.0f} pairs/s); version {self.version}: '
            f'{self.frames} pairs, digest {self.digest[:16]}'
        ]
        lines.extend(f'  skipped {item["bag"]}: {item["reason"]}' for item in self.skipped_bags)
        lines.extend(f'  refused {item["bag"]}: {item["reason"]}' for item in self.refused)
        lines.append('per class: ' + ', '.join(f'{k} {v}' for k, v in self.per_class.items()))
        for session, counts in self.per_session.items():
            lines.append(f'  session {session}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
        for split, counts in self.per_split.items():
            lines.append(f'  split {split}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
        lines.append(
            f'of the added bags: unlabelled {self.unlabelled}, duplicates (stamp or content) '
            f'{self.duplicates}, unpaired {self.unpaired}, undecodable/skipped {len(self.skipped)}, '
            f'failed bags {len(self.failed_bags)} (split mode: {self.split_mode})'
        )
        reasons = Counter(item['reason'].split(':')[0] for item in self.skipped)
        lines.extend(f'  skipped {n}x: {reason}' for reason, n in reasons.most_common(10))
        lines.extend(f'  bag {item["bag"]}: {item["error"]}' for item in self.failed_bags)
        return '\n'.join(lines)


def _bag_key(bag_dir: Path, used: set[str]) -> str:
    base = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in bag_dir.name) or 'bag'
    key, index = base, 1
    while key in used:
        index += 1
        key = f'{base}_{index}'
    used.add(key)
    return key


def _resize(
    rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    if size is None or rgb.shape[:2] == size:
        return rgb, depth
    height, width = size
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth


def _first_camera_info(reader: Any, store: Any, rgb_topic: str) -> Any | None:
    """The first CameraInfo of the colour camera (the one beside ``rgb_topic`` preferred), or None."""
    conns = [c for c in reader.connections if c.msgtype == CAMERA_INFO]
    if not conns:
        return None
    namespace = rgb_topic.rsplit('/image', 1)[0]
    conns.sort(key=lambda c: not c.topic.startswith(namespace + '/'))
    try:
        for conn, _, raw in reader.messages(connections=conns[:1]):
            return store.deserialize_cdr(raw, conn.msgtype)
    except Exception:  # a damaged CameraInfo costs the intrinsics, never the frames
        return None
    return None


def _array_intrinsics(
    info: Any, source_shape: tuple[int, ...], array_shape: tuple[int, ...]
) -> dict[str, float] | None:
    """fx, fy, cx, cy of ``info`` in the pixels of the stored arrays (scaled if they were resized).

    ``info``'s own width and height say which image its K belongs to; when unset (0), the decoded
    frames' ``source_shape``.
    """
    k = [float(v) for v in info.k]
    if len(k) != 9 or not all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        return None
    base_height, base_width = (info.height, info.width) if info.width and info.height else source_shape[:2]
    sx, sy = array_shape[1] / base_width, array_shape[0] / base_height
    # pixel centres map as (x + 0.5) * s - 0.5 under a resize
    return {
        'fx': k[0] * sx,
        'fy': k[4] * sy,
        'cx': (k[2] + 0.5) * sx - 0.5,
        'cy': (k[5] + 0.5) * sy - 0.5,
    }


def convert_bag(
    origin: str,
    bag_dir: str,
    key: str,
    arrays_dir: str,
    classes: Sequence[str],
    size: tuple[int, int] | None,
    slop_ns: int,
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    file_sha256: str = '',
) -> BagResult:
    """Convert one bag directory; never raises for bad content (it lands in the result)."""
    start = time.perf_counter()
    result = BagResult(origin=origin, bag=bag_dir, key=key, file_sha256=file_sha256)
    store = weld_typestore()
    labels: dict[int, tuple[str, str]] = {}
    arrays: dict[str, np.ndarray] = {}
    decoded_shape: list[int] = []
    try:
        reader = open_reader(Path(bag_dir))
    except BagError as exc:
        result.error = str(exc)
        return result
    try:
        topics = choose_topics(reader, rgb_topic, depth_topic)
        if topics.labels is None:
            raise BagError(
                f'{bag_dir}: no DefectLabel topic: nothing to train on (label it with weld_labeler)'
            )
        label_conns = [c for c in reader.connections if c.topic == topics.labels]
        try:
            for conn, _, raw in reader.messages(connections=label_conns):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                stamp = stamp_to_ns(msg.header.stamp)
                label = str(msg.label)
                if label not in classes:
                    result.skipped.append(
                        {
                            'source': bag_dir,
                            'stamp_ns': stamp,
                            'reason': f'label not in the class list: {label!r}',
                        }
                    )
                    continue
                if stamp in labels and labels[stamp][0] != label:
                    result.relabelled += 1
                labels[stamp] = (label, str(msg.session_id))
        except Exception as exc:  # rosbags raises many types on a damaged file; keep what was read
            result.error = f'labels unreadable after {len(labels)}: {type(exc).__name__}: {exc}'
        pairer: FramePairer[Any] = FramePairer(slop_ns=slop_ns, max_pending=50)
        seen: set[int] = set()
        image_conns = [c for c in reader.connections if c.topic in (topics.rgb, topics.depth)]

        def take(pair_stamp: int, rgb_item: tuple[Any, bytes], depth_item: tuple[Any, bytes]) -> None:
            (rgb_msg, rgb_raw), (depth_msg, depth_raw) = rgb_item, depth_item
            if pair_stamp in seen:
                result.duplicates += 1
                return
            seen.add(pair_stamp)
            if pair_stamp not in labels:
                result.unlabelled += 1
                return
            try:
                rgb = rgb_from_msg(rgb_msg)
                depth = depth_m_from_msg(depth_msg)
                if depth.shape != rgb.shape[:2]:
                    raise DatasetError(f'depth {depth.shape} not registered to rgb {rgb.shape[:2]}')
                source_shape = depth.shape
                rgb, depth = _resize(rgb, depth, size)
            except WeldError as exc:
                result.skipped.append(
                    {'source': bag_dir, 'stamp_ns': pair_stamp, 'reason': f'undecodable: {exc}'}
                )
                return
            if not arrays:
                # one row per label at most: filled in place, no list of frames and no final stack
                arrays['rgb'] = np.empty((len(labels), *rgb.shape), np.uint8)
                arrays['depth'] = np.empty((len(labels), *depth.shape), np.float32)
                decoded_shape.extend(source_shape)  # before any resize: the intrinsics' scale
            if rgb.shape != arrays['rgb'].shape[1:]:
                result.skipped.append(
                    {
                        'source': bag_dir,
                        'stamp_ns': pair_stamp,
                        'reason': f"size differs from the bag's first frame: {rgb.shape}",
                    }
                )
                return
            label, session = labels[pair_stamp]
            row = len(result.frames)
            arrays['rgb'][row] = rgb
            arrays['depth'][row] = depth
            # the digest covers the recorded bytes (decoding is deterministic): far less to hash
            content = hashlib.sha256(rgb_raw)
            content.update(depth_raw)
            result.frames.append(
                {
                    'stamp_ns': pair_stamp,
                    'label': label,
                    'session': session or Path(bag_dir).name,
                    'row': row,
                    'sha256': content.hexdigest(),
                }
            )

        try:
            for conn, _, raw in reader.messages(connections=image_conns):
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    stamp = stamp_to_ns(msg.header.stamp)
                except Exception as exc:  # a damaged message: skip it, keep reading
                    result.skipped.append(
                        {
                            'source': bag_dir,
                            'stamp_ns': None,
                            'reason': f'undeserialisable {conn.topic}: {type(exc).__name__}',
                        }
                    )
                    continue
                adder = pairer.add_rgb if conn.topic == topics.rgb else pairer.add_depth
                for pair in adder(stamp, (msg, bytes(raw))):
                    take(pair.stamp_ns, pair.rgb, pair.depth)
        except Exception as exc:  # truncated or corrupt file: keep everything decoded so far
            result.error = (
                f'read stopped after {len(result.frames)} labelled pairs: {type(exc).__name__}: {exc}'
            )
        pending_rgb, pending_depth = pairer.pending
        result.unpaired = pairer.stats.dropped + pending_rgb + pending_depth
        result.labels_without_frame = len(set(labels) - seen)
        if arrays:
            info = _first_camera_info(reader, store, topics.rgb)
            if info is not None:
                result.intrinsics = _array_intrinsics(info, tuple(decoded_shape), arrays['rgb'].shape[1:])
    except BagError as exc:
        result.error = str(exc)
    finally:
        reader.close()
    if result.frames:
        count = len(result.frames)
        save_array(Path(arrays_dir) / f'{key}_rgb.npy', arrays['rgb'][:count])
        save_array(Path(arrays_dir) / f'{key}_depth.npy', arrays['depth'][:count])
        digest = hashlib.sha256()
        for frame in result.frames:
            digest.update(frame['sha256'].encode())
        result.array_sha256 = digest.hexdigest()
    result.seconds = time.perf_counter() - start
    return result


def _files_sha256(bag_dir: Path) -> str:
    """sha256 of a bag directory's files (names and bytes): the same recording, skipped undecoded."""
    digest = hashlib.sha256()
    for path in sorted(p for p in bag_dir.rglob('*') if p.is_file()):
        digest.update(f'{path.relative_to(bag_dir)}\n'.encode())
        with open(path, 'rb') as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _bag_record(result: BagResult) -> dict[str, Any]:
    """What ``bags/<key>.json`` keeps of a converted bag; ``digest`` covers every frame's session,
    stamp, label and recorded bytes (the same content from another recording form digests the same)."""
    digest = hashlib.sha256()
    for frame in sorted(result.frames, key=lambda f: (f['session'], f['stamp_ns'])):
        digest.update(f'{frame["session"]}:{frame["stamp_ns"]}:{frame["label"]}:{frame["sha256"]}\n'.encode())
    counts = {
        name: getattr(result, name)
        for name in ('unlabelled', 'duplicates', 'relabelled', 'unpaired', 'labels_without_frame')
    }
    return {
        'key': result.key,
        'origin': result.origin,
        'bag': result.bag,
        'digest': digest.hexdigest(),
        'file_sha256': result.file_sha256,
        'array_sha256': result.array_sha256,
        'intrinsics': result.intrinsics,
        'counts': counts,
        'seconds': round(result.seconds, 2),
        'error': result.error,
        'skipped': result.skipped,
        'frames': result.frames,
    }


def _conflict(
    record: dict[str, Any],
    identities: dict[tuple[str, int], str],
    contents: dict[str, tuple[str, str]],
) -> str | None:
    """Why ``record`` cannot join frames already held (None: it can)."""
    for frame in record['frames']:
        held = identities.get((frame['session'], frame['stamp_ns']))
        if held is not None:
            return (
                f'session {frame["session"]} at stamp {frame["stamp_ns"]} is stored from bag {held} with '
                'other content or labels (relabelled or re-recorded?): remove the stored session first '
                f'(weld-train dataset remove DATASET {frame["session"]}) to replace it'
            )
        label, key = contents.get(frame['sha256'], (frame['label'], ''))
        if label != frame['label']:
            return (
                f'the frame at stamp {frame["stamp_ns"]} has the recorded bytes of a frame of bag {key} '
                f'labelled {label!r}, here {frame["label"]!r}: one of the two labels is wrong'
            )
    return None


def _settings(
    previous: dict[str, Any] | None,
    classes: Sequence[str],
    size: tuple[int, int] | None,
    split: dict[str, float | int | None],
) -> tuple[tuple[int, int] | None, dict[str, Any]]:
    """The size and split settings to convert with: a new dataset's from the arguments (defaults for
    None), an existing one's own (an argument that differs is refused: nothing is stored twice)."""
    if previous is None:
        return size, {k: DEFAULT_SPLIT[k] if v is None else v for k, v in split.items()}
    stored_size = tuple(previous['size']) if previous['size'] else None
    stored_split = {k: previous['split'][k] for k in DEFAULT_SPLIT}
    differs = []
    if list(classes) != list(previous['classes']):
        differs.append(f'classes {",".join(previous["classes"])}')
    if size is not None and tuple(size) != stored_size:
        differs.append(f'size {stored_size}')
    differs += [f'{k} {stored_split[k]}' for k, v in split.items() if v is not None and v != stored_split[k]]
    if differs:
        raise DatasetError(
            f'{previous["root"]}: the dataset was made with {", ".join(differs)}; convert with its settings, '
            'or into a new folder'
        )
    return stored_size, stored_split


def convert(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    size: tuple[int, int] | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
    slop_ns: int = DEFAULT_SLOP_NS,
    workers: int | None = None,
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    progress: bool = True,
) -> ConvertReport:
    """Convert bags / .tar.gz sessions into the dataset ``out_dir`` (made if new): the bags it does
    not hold are added as a new version. ``size`` and the split settings (None: the dataset's own;
    for a new one: keep the recorded size, 0.15, 0.25, 0) must match an existing dataset's."""
    start = time.perf_counter()
    classes = check_class_list(classes)
    if not sources:
        raise BagError('no sources given: pass bag directories, folders of bags or .tar.gz sessions')
    root = Path(out_dir)
    with changing(root):
        return _convert_into(
            root,
            sources,
            classes,
            size,
            val_fraction,
            test_fraction,
            seed,
            slop_ns,
            workers,
            rgb_topic,
            depth_topic,
            progress,
            start,
        )


def _convert_into(
    root: Path,
    sources: Sequence[str | Path],
    classes: tuple[str, ...],
    size: tuple[int, int] | None,
    val_fraction: float | None,
    test_fraction: float | None,
    seed: int | None,
    slop_ns: int,
    workers: int | None,
    rgb_topic: str | None,
    depth_topic: str | None,
    progress: bool,
    start: float,
) -> ConvertReport:
    previous = load_manifest(root) | {'root': str(root)} if (root / MANIFEST).is_file() else None
    size, split = _settings(
        previous, classes, size, {'seed': seed, 'val_fraction': val_fraction, 'test_fraction': test_fraction}
    )
    stored = [read_bag(root, bag['key']) for bag in previous['bags']] if previous else []
    arrays_dir = root / ARRAYS
    arrays_dir.mkdir(parents=True, exist_ok=True)
    held_files = {bag['file_sha256']: bag['key'] for bag in stored}
    held_digests = {bag['digest']: bag['key'] for bag in stored}
    skipped_bags: list[dict[str, str]] = []
    results: list[BagResult] = []
    with opened_sources([Path(s) for s in sources]) as bags:
        # keys of every bag this folder holds or held, pruned or not: a key names one content forever
        used = {p.stem for p in (root / BAGS).glob('*.json')}
        used |= {p.name.rsplit('_', 1)[0] for p in arrays_dir.glob('*.npy')}
        jobs = []
        for origin, bag in bags:
            files = _files_sha256(bag)
            if files in held_files:
                skipped_bags.append({'bag': str(bag), 'reason': f'stored already as {held_files[files]}'})
                continue
            held_files[files] = f'{bag} (given twice)'
            jobs.append((str(origin), str(bag), _bag_key(bag, used), files))
        workers = max(1, min(len(jobs), workers if workers is not None else (os.cpu_count() or 1)))
        bar = tqdm(total=len(jobs), desc='convert', unit='bag', disable=not progress, file=sys.stderr)
        args = (str(arrays_dir), classes, size, slop_ns, rgb_topic, depth_topic)
        if workers <= 1:
            for *job, files in jobs:
                results.append(convert_bag(*job, *args, file_sha256=files))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(convert_bag, *job, *args, file_sha256=files) for *job, files in jobs]
                for future in futures:
                    results.append(future.result())
                    bar.update(1)
        bar.close()

    identities = {(f['session'], f['stamp_ns']): f['array'] for f in (previous or {}).get('frames', [])}
    contents = {f['sha256']: (f['label'], f['array']) for f in (previous or {}).get('frames', [])}
    added: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    for result in results:
        if not result.frames:
            continue
        record = _bag_record(result)
        reason = None
        if record['digest'] in held_digests:
            skipped_bags.append(
                {'bag': result.bag, 'reason': f'stored already as {held_digests[record["digest"]]}'}
            )
        else:
            reason = _conflict(record, identities, contents)
            if reason is None:
                added.append(record)
                held_digests[record['digest']] = record['key']
                for frame in record['frames']:
                    identities[(frame['session'], frame['stamp_ns'])] = record['key']
                    contents.setdefault(frame['sha256'], (frame['label'], record['key']))
                continue
            refused.append({'bag': result.bag, 'reason': reason})
        for kind in ('rgb', 'depth'):  # never stored: its fresh arrays go
            (arrays_dir / f'{result.key}_{kind}.npy').unlink(missing_ok=True)
    if previous is None and not added:
        problems = '; '.join(
            [r.error or f'{r.bag}: no labelled frame pairs' for r in results if not r.frames]
            + [f'{item["bag"]}: {item["reason"]}' for item in refused]
        )
        raise DatasetError(f'no labelled frame pairs in {", ".join(map(str, sources))}: {problems}')
    if added:
        for record in added:
            write_json_atomic(root / BAGS / f'{record["key"]}.json', record, exclusive=True)
        version, manifest = build_version(
            root,
            next_version_name(root),
            stored + added,
            classes,
            size,
            split,
            previous,
            {
                'added': [r['key'] for r in added],
                'added_sessions': sorted({f['session'] for r in added for f in r['frames']}),
                'skipped': [item['bag'] for item in skipped_bags],
                'refused': [item['bag'] for item in refused],
            },
        )
        commit(root, version, manifest)
    else:
        manifest = previous  # type: ignore[assignment]
    counts = manifest['counts']
    keys = {r['key'] for r in added}
    copies = sum('duplicate_of' in f and f['array'] in keys for f in manifest['frames'])
    return ConvertReport(
        out_dir=root,
        version=manifest['name'],
        frames=len(manifest['frames']),
        added_frames=sum(len(r['frames']) for r in added),
        added=[r['key'] for r in added],
        skipped_bags=skipped_bags,
        refused=refused,
        per_class=counts['per_class'],
        per_session=counts['per_session'],
        per_split=counts['per_split'],
        unlabelled=sum(r.unlabelled for r in results),
        duplicates=sum(r.duplicates for r in results) + copies,
        unpaired=sum(r.unpaired for r in results),
        skipped=[item for r in results for item in r.skipped],
        failed_bags=[{'bag': r.bag, 'error': r.error} for r in results if r.error],
        digest=manifest['digest'],
        seconds=time.perf_counter() - start,
        split_mode=manifest['split']['mode'],
    )


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'size must be HxW, e.g. 240x320, got {text!r}') from exc
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='weld-train convert', description=__doc__.split('\n')[0])
    parser.add_argument('sources', nargs='+', help='bag directories, folders of bags, .tar.gz sessions')
    parser.add_argument('-o', '--out', required=True, help='dataset folder to make or add to')
    parser.add_argument('--classes', default=','.join(DEFAULT_CLASSES), help='comma-separated class list')
    parser.add_argument(
        '--size', type=_parse_size, default=None, help="resize to HxW (default: the dataset's, or keep)"
    )
    parser.add_argument('--val-fraction', type=float, default=None, help="(default: the dataset's, or 0.15)")
    parser.add_argument('--test-fraction', type=float, default=None, help="(default: the dataset's, or 0.25)")
    parser.add_argument('--seed', type=int, default=None, help="split seed (default: the dataset's, or 0)")
    parser.add_argument('--slop-ms', type=float, default=DEFAULT_SLOP_NS / 1e6, help='rgb/depth pairing slop')
    parser.add_argument('--workers', type=int, default=None, help='worker processes (default: CPU count)')
    parser.add_argument('--rgb-topic', default=None)
    parser.add_argument('--depth-topic', default=None)
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = convert(
            args.sources,
            args.out,
            classes=[c.strip() for c in args.classes.split(',') if c.strip()],
            size=args.size,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            slop_ns=int(args.slop_ms * 1e6),
            workers=args.workers,
            rgb_topic=args.rgb_topic,
            depth_topic=args.depth_topic,
            progress=not args.quiet,
        )
    except WeldError as exc:
        print(f'convert: {exc}', file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: files are written under temporary names
        print(f'convert: {exc}; the dataset in {args.out} is as it was before', file=sys.stderr)
        return 2
    print(report.summary())
    if report.refused:
        print(
            f'convert: {len(report.refused)} bag(s) refused (above); nothing stored was changed',
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
