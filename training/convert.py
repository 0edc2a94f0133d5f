"""``weld-train convert``: recorded sessions -> a dataset folder training reads directly.

Output folder:
- ``arrays/<bag>_rgb.npy`` (N x H x W x 3 uint8 RGB) and ``arrays/<bag>_depth.npy`` (N x H x W
  float32 metres, 0 = no data): decoded once, so training never decodes a JPEG or PNG again;
- ``manifest.json``: one entry per labelled frame pair (source bag, stamp, label, session, split,
  array row), counts per class and per session, what was skipped and why, the split settings,
  each bag's camera intrinsics (from its first CameraInfo, in the pixels of the stored arrays;
  null when the bag has none), and ``digest``: a sha256 over every frame's identity, label and
  recorded bytes.

Bags are read in two passes: the labels first (small), then only the labelled frame pairs are
decoded, so a long unlabelled recording costs reading time but no decoding. Bags are converted in
parallel worker processes. Nothing that can be decoded is lost because a neighbour could not.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from training.bags import choose_topics, open_reader, opened_sources
from training.errors import BagError, DatasetError
from training.splits import split_frames_in_time, split_sessions
from weld_core.bag_types import CAMERA_INFO, weld_typestore
from weld_core.classes import DEFAULT_CLASSES, check_class_list
from weld_core.errors import WeldError
from weld_core.images import depth_m_from_msg, rgb_from_msg
from weld_core.pairing import DEFAULT_SLOP_NS, FramePairer
from weld_core.stamps import stamp_to_ns

MANIFEST = 'manifest.json'
ARRAYS = 'arrays'
MANIFEST_VERSION = 1


@dataclass
class BagResult:
    origin: str
    bag: str
    key: str
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
    frames: int
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
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f'{self.frames} labelled frame pairs -> {self.out_dir} in {self.seconds:.1f} s '
            f'({self.pairs_per_s:.0f} pairs/s); digest {self.digest[:16]}'
        ]
        lines.append('per class: ' + ', '.join(f'{k} {v}' for k, v in self.per_class.items()))
        for session, counts in self.per_session.items():
            lines.append(f'  session {session}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
        for split, counts in self.per_split.items():
            lines.append(f'  split {split}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
        lines.append(
            f'unlabelled {self.unlabelled}, duplicates (stamp or content) {self.duplicates}, '
            f'unpaired {self.unpaired}, '
            f'undecodable/skipped {len(self.skipped)}, failed bags {len(self.failed_bags)} '
            f'(split mode: {self.split_mode})'
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
) -> BagResult:
    """Convert one bag directory; never raises for bad content (it lands in the result)."""
    start = time.perf_counter()
    result = BagResult(origin=origin, bag=bag_dir, key=key)
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
        np.save(Path(arrays_dir) / f'{key}_rgb.npy', arrays['rgb'][:count])
        np.save(Path(arrays_dir) / f'{key}_depth.npy', arrays['depth'][:count])
        digest = hashlib.sha256()
        for frame in result.frames:
            digest.update(frame['sha256'].encode())
        result.array_sha256 = digest.hexdigest()
    result.seconds = time.perf_counter() - start
    return result


def _dataset_digest(frames: list[dict[str, Any]], array_hashes: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(array_hashes):
        digest.update(f'{key}:{array_hashes[key]}\n'.encode())
    for frame in frames:
        digest.update(
            f'{frame["array"]}:{frame["row"]}:{frame["session"]}:{frame["stamp_ns"]}:{frame["label"]}\n'.encode()
        )
    return digest.hexdigest()


def convert(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    size: tuple[int, int] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    seed: int = 0,
    slop_ns: int = DEFAULT_SLOP_NS,
    workers: int | None = None,
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    progress: bool = True,
) -> ConvertReport:
    """Convert bags / .tar.gz sessions into ``out_dir`` (replacing a previous conversion there)."""
    start = time.perf_counter()
    classes = check_class_list(classes)
    if not sources:
        raise BagError('no sources given: pass bag directories, folders of bags or .tar.gz sessions')
    out = Path(out_dir)
    arrays_dir = out / ARRAYS
    arrays_dir.mkdir(parents=True, exist_ok=True)
    for stale in arrays_dir.glob('*.npy'):
        stale.unlink()
    results: list[BagResult] = []
    with opened_sources([Path(s) for s in sources]) as bags:
        used: set[str] = set()
        jobs = [(str(origin), str(bag), _bag_key(bag, used)) for origin, bag in bags]
        workers = min(len(jobs), workers if workers is not None else (os.cpu_count() or 1))
        bar = tqdm(total=len(jobs), desc='convert', unit='bag', disable=not progress, file=sys.stderr)
        args = (str(arrays_dir), classes, size, slop_ns, rgb_topic, depth_topic)
        if workers <= 1:
            for job in jobs:
                results.append(convert_bag(*job, *args))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(convert_bag, *job, *args) for job in jobs]
                for future in futures:
                    results.append(future.result())
                    bar.update(1)
        bar.close()

    frames: list[dict[str, Any]] = []
    for result in results:
        for frame in result.frames:
            frames.append({**frame, 'source': result.origin, 'bag': result.bag, 'array': result.key})
    if not frames:
        problems = '; '.join(r.error or f'{r.bag}: no labelled frame pairs' for r in results)
        raise DatasetError(f'no labelled frame pairs in {", ".join(map(str, sources))}: {problems}')

    first_seen: dict[str, dict[str, Any]] = {}
    content_duplicates = 0
    for frame in frames:
        if frame['sha256'] in first_seen:
            content_duplicates += 1
            frame['duplicate_of'] = (
                f'{first_seen[frame["sha256"]]["bag"]}@{first_seen[frame["sha256"]]["stamp_ns"]}'
            )
        else:
            first_seen[frame['sha256']] = frame
    session_counts: dict[str, Counter[str]] = {}
    for frame in frames:
        session_counts.setdefault(frame['session'], Counter())[frame['label']] += 1
    if len(session_counts) >= 2:
        split_mode = 'by-session'
        assignment = split_sessions(session_counts, classes, val_fraction, test_fraction, seed)
        for frame in frames:
            frame['split'] = assignment[frame['session']]
    else:
        split_mode = 'single-session-time-blocks'
        ordered = sorted(range(len(frames)), key=lambda i: frames[i]['stamp_ns'])
        for index, split in zip(
            ordered, split_frames_in_time(len(frames), val_fraction, test_fraction), strict=True
        ):
            frames[index]['split'] = split

    array_hashes = {r.key: r.array_sha256 for r in results if r.array_sha256}
    digest = _dataset_digest(frames, array_hashes)
    per_class = {name: sum(c[name] for c in session_counts.values()) for name in classes}
    per_session = {s: {name: c[name] for name in classes} for s, c in sorted(session_counts.items())}
    per_split: dict[str, dict[str, int]] = {}
    for frame in frames:
        per_split.setdefault(frame['split'], dict.fromkeys(classes, 0))[frame['label']] += 1
    skipped = [item for r in results for item in r.skipped]
    failed = [{'bag': r.bag, 'error': r.error} for r in results if r.error]
    report = ConvertReport(
        out_dir=out,
        frames=len(frames),
        per_class=per_class,
        per_session=per_session,
        per_split=per_split,
        unlabelled=sum(r.unlabelled for r in results),
        duplicates=sum(r.duplicates for r in results) + content_duplicates,
        unpaired=sum(r.unpaired for r in results),
        skipped=skipped,
        failed_bags=failed,
        digest=digest,
        seconds=time.perf_counter() - start,
        split_mode=split_mode,
    )
    manifest = {
        'version': MANIFEST_VERSION,
        'classes': list(classes),
        'digest': digest,
        'created_unix_s': time.time(),
        'sources': [str(s) for s in sources],
        'size': list(size) if size else None,
        'split': {
            'mode': split_mode,
            'seed': seed,
            'val_fraction': val_fraction,
            'test_fraction': test_fraction,
            'sessions': {s: next(f['split'] for f in frames if f['session'] == s) for s in session_counts}
            if split_mode == 'by-session'
            else {},
        },
        'counts': {
            'per_class': per_class,
            'per_session': per_session,
            'per_split': per_split,
            'unlabelled': report.unlabelled,
            'duplicates': report.duplicates,
            'unpaired': report.unpaired,
            'relabelled': sum(r.relabelled for r in results),
            'labels_without_frame': sum(r.labels_without_frame for r in results),
        },
        'skipped': skipped,
        'failed_bags': failed,
        'bags': [{k: v for k, v in asdict(r).items() if k not in ('frames', 'skipped')} for r in results],
        'frames': frames,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return report


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'size must be HxW, e.g. 240x320, got {text!r}') from exc
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='weld-train convert', description=__doc__.split('\n')[0])
    parser.add_argument('sources', nargs='+', help='bag directories, folders of bags, .tar.gz sessions')
    parser.add_argument('-o', '--out', required=True, help='dataset folder to write')
    parser.add_argument('--classes', default=','.join(DEFAULT_CLASSES), help='comma-separated class list')
    parser.add_argument('--size', type=_parse_size, default=None, help='resize to HxW (default: keep)')
    parser.add_argument('--val-fraction', type=float, default=0.15)
    parser.add_argument('--test-fraction', type=float, default=0.25)
    parser.add_argument('--seed', type=int, default=0)
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
    print(report.summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())
