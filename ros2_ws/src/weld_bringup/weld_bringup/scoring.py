"""Live results against the simulator's ground truth, joined by frame-pair stamp (ROS-free).

The camera's sim source publishes the true class of every pair on ``/weld/sim/ground_truth`` and the
inference node one DefectResult per pair it handles, both stamped with the pair's stamp. Either may
arrive first, so both are kept by stamp and joined when a score is asked for. Results are grouped
by who answered: the rules, or the model with a given model_id.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answerer:
    """Who produced a result: ``source`` is 'model' or 'rules'; ``model_id`` is '' for the rules."""

    source: str
    model_id: str = ''

    def __str__(self) -> str:
        return f'model {self.model_id}' if self.source == 'model' else self.source


@dataclass(frozen=True)
class Score:
    answerer: Answerer
    scored: int  # results whose ground truth is known
    correct: int
    recall_per_class: dict[str, float]  # only classes that occurred in the ground truth
    confusion: dict[str, dict[str, int]]  # truth -> predicted -> count

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else float('nan')

    @property
    def macro_recall(self) -> float:
        recalls = list(self.recall_per_class.values())
        return sum(recalls) / len(recalls) if recalls else float('nan')

    def as_dict(self) -> dict[str, object]:
        return {
            'source': self.answerer.source,
            'model_id': self.answerer.model_id,
            'results_scored': self.scored,
            'correct': self.correct,
            'accuracy': self.accuracy,
            'macro_recall': self.macro_recall,
            'recall_per_class': dict(self.recall_per_class),
            'confusion': {truth: dict(row) for truth, row in self.confusion.items()},
        }


@dataclass
class LiveScorer:
    """Collects ground truth and results by stamp; :meth:`scores` joins them."""

    truth: dict[int, str] = field(default_factory=dict)
    results: dict[int, tuple[Answerer, str]] = field(default_factory=dict)

    def add_truth(self, stamp_ns: int, label: str) -> None:
        self.truth[int(stamp_ns)] = label

    def add_result(self, stamp_ns: int, answerer: Answerer, label: str) -> None:
        self.results[int(stamp_ns)] = (answerer, label)

    def unmatched_results(self, since_ns: int = 0) -> int:
        """Results at or after ``since_ns`` with no ground truth (yet)."""
        return sum(1 for stamp in self.results if stamp >= since_ns and stamp not in self.truth)

    def count(self, answerer: Answerer, since_ns: int = 0) -> int:
        """Scorable results of one answerer at or after ``since_ns``."""
        return sum(
            1
            for stamp, (who, _) in self.results.items()
            if who == answerer and stamp >= since_ns and stamp in self.truth
        )

    def scores(self, since_ns: int = 0, until_ns: int | None = None) -> list[Score]:
        """One score per answerer over results stamped in [since_ns, until_ns)."""
        pairs: dict[Answerer, list[tuple[str, str]]] = defaultdict(list)
        for stamp, (answerer, predicted) in self.results.items():
            if stamp < since_ns or (until_ns is not None and stamp >= until_ns) or stamp not in self.truth:
                continue
            pairs[answerer].append((self.truth[stamp], predicted))
        return [
            score_pairs(answerer, rows) for answerer, rows in sorted(pairs.items(), key=lambda kv: str(kv[0]))
        ]


def score_pairs(answerer: Answerer, rows: Iterable[tuple[str, str]]) -> Score:
    """(truth, predicted) rows -> accuracy, per-class recall and a confusion table."""
    confusion: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    scored = correct = 0
    for truth, predicted in rows:
        confusion[truth][predicted] += 1
        scored += 1
        correct += truth == predicted
    recall = {truth: row.get(truth, 0) / sum(row.values()) for truth, row in sorted(confusion.items())}
    return Score(answerer, scored, correct, recall, {t: dict(r) for t, r in confusion.items()})


def format_table(scores: Sequence[Score], classes: Sequence[str]) -> str:
    """A fixed-width text table: one row per answerer, accuracy, macro-recall and per-class recall."""
    header = ['answered by', 'results', 'accuracy', 'macro-recall', *(f'R {name}' for name in classes)]
    lines = [header]
    for score in scores:
        per_class = [
            f'{score.recall_per_class[name]:.0%}' if name in score.recall_per_class else '-'
            for name in classes
        ]
        lines.append(
            [
                str(score.answerer),
                str(score.scored),
                f'{score.accuracy:.1%}',
                f'{score.macro_recall:.1%}',
                *per_class,
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return '\n'.join(
        '  '.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in lines
    )
