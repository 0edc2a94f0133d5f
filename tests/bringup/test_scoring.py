"""Live scoring: results joined with ground truth by stamp, grouped by who answered."""

import math

import pytest

from weld_bringup.scoring import Answerer, LiveScorer, format_table, score_pairs

RULES = Answerer('rules')
MODEL = Answerer('model', 'weld-fusion-v3')


def test_results_and_truth_join_by_stamp_whatever_arrives_first() -> None:
    scorer = LiveScorer()
    scorer.add_result(10, RULES, 'good')
    scorer.add_truth(10, 'good')
    scorer.add_truth(20, 'gap')
    scorer.add_result(20, RULES, 'good')
    scorer.add_result(30, RULES, 'spatter')  # no ground truth: not scored
    (score,) = scorer.scores()
    assert (score.scored, score.correct) == (2, 1)
    assert score.accuracy == 0.5
    assert score.recall_per_class == {'gap': 0.0, 'good': 1.0}
    assert score.macro_recall == 0.5
    assert scorer.unmatched_results() == 1


def test_scores_are_split_by_answerer_and_time_window() -> None:
    scorer = LiveScorer()
    for stamp, truth in enumerate(['good', 'porosity', 'good', 'porosity']):
        scorer.add_truth(stamp, truth)
    scorer.add_result(0, RULES, 'good')
    scorer.add_result(1, RULES, 'good')
    scorer.add_result(2, MODEL, 'good')
    scorer.add_result(3, MODEL, 'porosity')
    by_answerer = {score.answerer: score for score in scorer.scores()}
    assert by_answerer[RULES].macro_recall == 0.5
    assert by_answerer[MODEL].macro_recall == 1.0
    assert scorer.count(MODEL) == 2
    assert scorer.count(MODEL, since_ns=3) == 1
    assert [s.answerer for s in scorer.scores(since_ns=2)] == [MODEL]
    assert [s.answerer for s in scorer.scores(until_ns=2)] == [RULES]


def test_macro_recall_weights_classes_equally() -> None:
    rows = [('good', 'good')] * 8 + [('gap', 'good'), ('gap', 'gap')]
    score = score_pairs(MODEL, rows)
    assert score.accuracy == pytest.approx(0.9)
    assert score.macro_recall == pytest.approx(0.75)
    assert score.confusion == {'good': {'good': 8}, 'gap': {'good': 1, 'gap': 1}}


def test_empty_score_is_nan_not_an_error() -> None:
    score = score_pairs(RULES, [])
    assert math.isnan(score.accuracy) and math.isnan(score.macro_recall)


def test_table_lists_each_answerer_with_its_recalls() -> None:
    table = format_table([score_pairs(MODEL, [('gap', 'gap'), ('good', 'gap')])], ['good', 'gap', 'undercut'])
    header, row = table.splitlines()
    assert header.split()[:2] == ['answered', 'by']
    assert row.split() == ['model', 'weld-fusion-v3', '2', '50.0%', '50.0%', '0%', '100%', '-']
