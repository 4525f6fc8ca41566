"""The simple models: every stand-alone candidate generator, by name, as the pipeline fits them.

Each one is evaluated beside the ranker, takes part in the choice of the model to promote
(:mod:`recsys_assets.evaluation.selection`) and can be served on its own when it wins
(:func:`recsys_assets.serving.model.build_simple_serving_model`). One table, so that training,
selection and serving build the same model from a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recsys_assets.training import candidates

__all__ = ["SIMPLE_MODELS", "SimpleModel", "make_simple_model"]


@dataclass(frozen=True)
class SimpleModel:
    """How to build one simple model, and what it is, in a sentence."""

    factory: Callable[[], candidates.CandidateGenerator]
    description: str


SIMPLE_MODELS: dict[str, SimpleModel] = {
    "popularity": SimpleModel(
        lambda: candidates.Popularity(half_life_days=30),
        "Time-decayed popularity (30-day half-life): the fallback for anyone.",
    ),
    "repeat_then_popular": SimpleModel(
        candidates.RepeatThenPopular,
        "The customer's own past items by number of orders, then popular items.",
    ),
    "als": SimpleModel(
        lambda: candidates.ImplicitALS(factors=64),
        "Implicit ALS matrix factorisation (64 factors) on orders per customer-item.",
    ),
    "bpr": SimpleModel(
        lambda: candidates.ImplicitBPR(factors=64),
        "Implicit BPR matrix factorisation (64 factors, pairwise ranking loss).",
    ),
    "item_knn": SimpleModel(
        lambda: candidates.ItemKNN(similarity="bm25"),
        "Item-to-item nearest neighbours with BM25 weighting.",
    ),
    "coclustering": SimpleModel(
        lambda: candidates.CoClustering(n_clusters=8),
        "Spectral co-clustering of customers and items; popularity inside the co-cluster.",
    ),
}


def make_simple_model(name: str) -> candidates.CandidateGenerator:
    """A fresh, unfitted simple model by name; a clear error for a name not in the table."""
    try:
        return SIMPLE_MODELS[name].factory()
    except KeyError:
        known = sorted(SIMPLE_MODELS)
        raise ValueError(f"unknown simple model {name!r}; expected one of {known}") from None
