"""Choosing the model to promote on the validation period: hand-checked cases."""

from __future__ import annotations

import pytest

from recsys_assets.evaluation.selection import RANKER, select_model, validation_summary


def _scores(values: list[float]) -> dict[str, float]:
    return {f"u{i}": v for i, v in enumerate(values)}


def test_summary_is_the_mean_with_a_band_around_it():
    summary = validation_summary(_scores([0.0, 0.5, 1.0]))
    assert summary["ndcg"] == pytest.approx(0.5)
    assert summary["n_users"] == 3
    assert 0.0 <= summary["low"] <= summary["ndcg"] <= summary["high"] <= 1.0


def test_the_ranker_is_kept_when_it_scores_highest():
    selection = select_model(
        {RANKER: _scores([0.6, 0.4, 0.5]), "popularity": _scores([0.2, 0.3, 0.4])}
    )
    assert selection.chosen == RANKER and selection.judged
    assert selection.best_baseline == "popularity"
    assert selection.validation["popularity"]["ndcg"] == pytest.approx(0.3)
    assert selection.paired is None


def test_a_simple_model_that_wins_beyond_noise_is_chosen():
    # popularity beats the ranker on every one of 40 customers: the paired interval is > 0
    ranker = _scores([0.2 + 0.01 * (i % 5) for i in range(40)])
    popularity = {u: v + 0.1 for u, v in ranker.items()}
    selection = select_model({RANKER: ranker, "popularity": popularity, "als": ranker})
    assert selection.chosen == "popularity" and selection.judged
    assert selection.paired["low"] > 0
    assert "beyond noise" in selection.rule


def test_a_lead_within_noise_keeps_the_ranker():
    # popularity is ahead on average (0.55 vs 0.5) but loses on half the customers
    ranker = _scores([1.0, 0.0] * 10)
    popularity = _scores([0.1, 1.0] * 10)
    selection = select_model({RANKER: ranker, "popularity": popularity})
    assert selection.validation["popularity"]["ndcg"] == pytest.approx(0.55)
    assert selection.chosen == RANKER
    assert selection.paired["low"] <= 0 < selection.paired["high"]
    assert "within noise" in selection.rule


def test_the_best_simple_model_wins_ties_by_name():
    selection = select_model({RANKER: _scores([0.9]), "b": _scores([0.5]), "a": _scores([0.5])})
    assert selection.best_baseline == "a"


def test_a_ranker_that_could_not_be_scored_gives_way_to_the_best_simple_model():
    selection = select_model(
        {RANKER: None, "popularity": _scores([0.3]), "als": _scores([0.2])},
        reasons={RANKER: "not enough history"},
    )
    assert selection.chosen == "popularity" and selection.judged
    assert selection.validation[RANKER]["ndcg"] is None
    assert selection.validation[RANKER]["reason"] == "not enough history"
    assert "not enough history" in selection.rule


def test_nothing_scored_is_not_judged_and_says_so():
    selection = select_model({RANKER: {}, "popularity": None})
    assert selection.chosen == RANKER
    assert selection.judged is False
    assert selection.rule.startswith("not judged")
    assert selection.best_baseline is None
