"""Reading recorded sessions without ROS: rosbag2 directories, single bag files and .tar.gz exports.

Topics are found by type and name (raw ``Image`` preferred over ``CompressedImage`` when a bag has
both), so labeler bags and plain ``ros2 bag record`` bags read alike. rosbags decompresses
zstd file- and message-compressed bags itself.
"""

import contextlib
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError

from training.errors import BagError
from weld_core.bag_types import COMPRESSED_IMAGE, DEFECT_LABEL, IMAGE

BAG_SUFFIXES = ('.mcap', '.db3', '.mcap.zstd', '.db3.zstd')


@dataclass(frozen=True)
class BagTopics:
    rgb: str
    depth: str
    labels: str | None


def _is_bag_dir(path: Path) -> bool:
    return (path / 'metadata.yaml').is_file()


def find_bags(source: Path) -> list[Path]:
    """Bag directories under ``source`` (itself if it is one), sorted; BagError when there are none."""
    if _is_bag_dir(source):
        return [source]
    if source.is_dir():
        found = sorted({meta.parent for meta in source.rglob('metadata.yaml')})
        if found:
            return found
        raise BagError(f'{source}: no rosbag2 directory (with metadata.yaml) below it')
    raise BagError(f'{source}: not a bag directory, .tar.gz session or folder of bags')


@contextlib.contextmanager
def opened_sources(sources: list[Path]) -> Iterator[list[tuple[Path, Path]]]:
    """(origin, bag directory) for every source; .tar.gz exports are unpacked into a temp folder.

    A bare .mcap/.db3 file without its metadata.yaml gets a temp bag directory around a link to it.
    """
    temp_dirs: list[Path] = []
    try:
        result: list[tuple[Path, Path]] = []
        for source in sources:
            source = Path(source)
            if not source.exists():
                raise BagError(f'{source}: does not exist')
            name = source.name
            if source.is_file() and (
                name.endswith('.tar.gz') or name.endswith('.tgz') or name.endswith('.tar')
            ):
                temp = Path(tempfile.mkdtemp(prefix='weld-convert-'))
                temp_dirs.append(temp)
                try:
                    with tarfile.open(source) as archive:
                        archive.extractall(temp, filter='data')
                except (tarfile.TarError, OSError) as exc:
                    raise BagError(
                        f'{source}: cannot unpack ({exc}); is it a complete .tar.gz export?'
                    ) from exc
                result.extend((source, bag) for bag in find_bags(temp))
            elif source.is_file() and name.endswith(BAG_SUFFIXES):
                if _is_bag_dir(source.parent):
                    result.append((source, source.parent))
                else:
                    raise BagError(f'{source}: a bag file without its metadata.yaml; give the bag directory')
            else:
                result.extend((bag, bag) for bag in find_bags(source))
        yield result
    finally:
        for temp in temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)


def choose_topics(
    reader: Reader,
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    label_topic: str | None = None,
) -> BagTopics:
    """Pick the colour, depth and label topics of an open bag (explicit names win)."""
    by_topic = {conn.topic: conn.msgtype for conn in reader.connections}

    def pick(explicit: str | None, wanted: str) -> str:
        if explicit:
            if explicit not in by_topic:
                raise BagError(
                    f'{reader.path}: topic {explicit!r} is not in the bag (it has {sorted(by_topic)})'
                )
            return explicit
        candidates = []
        for topic, msgtype in by_topic.items():
            if msgtype not in (IMAGE, COMPRESSED_IMAGE):
                continue
            is_depth = 'depth' in topic.lower()
            if (wanted == 'depth') != is_depth:
                continue
            if msgtype == COMPRESSED_IMAGE and not topic.endswith(('/compressed', '/compressedDepth')):
                continue
            # raw first, then the contract's default names
            candidates.append((msgtype != IMAGE, '/weld/' not in topic, topic))
        if not candidates:
            raise BagError(
                f'{reader.path}: no {wanted} image topic (Image or CompressedImage) among '
                f'{sorted(by_topic)}; name it with --{wanted}-topic'
            )
        return sorted(candidates)[0][2]

    labels = label_topic
    if labels is None:
        found = [topic for topic, msgtype in by_topic.items() if msgtype == DEFECT_LABEL]
        labels = '/weld/labels' if '/weld/labels' in found else (found[0] if found else None)
    elif labels not in by_topic:
        raise BagError(f'{reader.path}: label topic {labels!r} is not in the bag')
    return BagTopics(rgb=pick(rgb_topic, 'rgb'), depth=pick(depth_topic, 'depth'), labels=labels)


def open_reader(bag_dir: Path) -> Reader:
    try:
        reader = Reader(bag_dir)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f'{bag_dir}: rosbags cannot open it ({exc})') from exc
    return reader
