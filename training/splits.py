"""Train/val/test splits grouped by session: no session contributes frames to two splits.

Sessions (not frames) are assigned, reproducibly from a seed, choosing among random assignments
the one whose held-out class mix is closest to the whole set's (stratified where the number of
sessions allows). With a single session there is nothing to group by: the frames are then split
in contiguous time blocks and the manifest says so (``split_mode``), because neighbouring frames
of one scan are near-copies and a random frame split would overstate accuracy.
"""

import random
from collections import Counter
from collections.abc import Mapping, Sequence

SPLITS = ('train', 'val', 'test')


def _distribution(counts: Counter[str], classes: Sequence[str]) -> list[float]:
    total = sum(counts[name] for name in classes) or 1
    return [counts[name] / total for name in classes]


def split_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``count`` sessions go to validation and to test (at least one training session)."""
    n_val = max(1, round(count * val_fraction)) if val_fraction > 0 and count >= 2 else 0
    n_test = max(1, round(count * test_fraction)) if test_fraction > 0 and count >= 3 else 0
    while n_val + n_test >= count and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def split_sessions(
    session_counts: Mapping[str, Counter[str]],
    classes: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    tries: int = 500,
) -> dict[str, str]:
    """session -> 'train' | 'val' | 'test'."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f'bad split fractions val={val_fraction} test={test_fraction}')
    sessions = sorted(session_counts)
    n_val, n_test = split_sizes(len(sessions), val_fraction, test_fraction)
    overall = Counter[str]()
    for counts in session_counts.values():
        overall.update(counts)
    target = _distribution(overall, classes)
    rng = random.Random(seed)
    best: tuple[float, list[str]] = (float('inf'), sessions[:])
    for _ in range(max(1, tries)):
        order = sessions[:]
        rng.shuffle(order)
        score = 0.0
        for part in (order[:n_val], order[n_val : n_val + n_test]):
            if not part:
                continue
            merged = Counter[str]()
            for session in part:
                merged.update(session_counts[session])
            dist = _distribution(merged, classes)
            score += sum(abs(a - b) for a, b in zip(dist, target, strict=True))
            score += sum(1.0 for name in classes if overall[name] and not merged[name])
        if score < best[0] - 1e-12:
            best = (score, order)
    order = best[1]
    assignment = {session: 'train' for session in sessions}
    assignment.update({session: 'val' for session in order[:n_val]})
    assignment.update({session: 'test' for session in order[n_val : n_val + n_test]})
    return assignment


def split_frames_in_time(count: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Single-session fallback: contiguous blocks train | val | test in recording order."""
    n_test = round(count * test_fraction)
    n_val = round(count * val_fraction)
    n_train = max(count - n_val - n_test, 0)
    return ['train'] * n_train + ['val'] * n_val + ['test'] * (count - n_train - n_val)
