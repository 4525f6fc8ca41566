"""Candidate generators: the first stage of the recommender, pure, typed and seeded.

Every generator has the same small interface:

- ``fit(train) -> self`` on purchase events (the canonical columns ``user_id``, ``item_id``,
  ``event_ts``, and ``order_id`` where known); the training catalogue is the distinct items of
  ``train``, and the wall time of the fit is kept in ``fit_seconds``;
- ``recommend(users, n) -> DataFrame`` with columns ``user_id``, ``item_id``, ``score`` and
  ``rank`` (1 = best), at most ``n`` rows per customer, only items of the training catalogue,
  ranked with :func:`recsys_assets.evaluation.metrics.rank_by_score` (ties: ascending item id), so
  the
  output never depends on row order. Items a customer bought before are **not** filtered out.
  Customers unseen in training get the popularity list from the generators that have one
  (:class:`Popularity`, :class:`RepeatThenPopular`, :class:`CoClustering`) and no rows from
  the others.

Interaction weights. A customer-item pair's strength is the number of **distinct orders** of
the customer that contained the item (``n_orders``; repeated lines within an order and the
quantity do not count, so one bulk order of 500 units is one signal, and wholesalers do not
drown everyone else). The matrix models use it as:

- :class:`ImplicitALS`: confidence ``alpha * n_orders`` on bought pairs (implicit's convention:
  the matrix value is the confidence of a preference 1; pairs not bought have preference 0 with
  confidence 1). On UCI (NDCG@10) this gave 0.286, Hu, Koren and Volinsky's
  ``1 + alpha * n_orders`` 0.281 and BM25-weighted counts 0.296
  (``benchmarks/results/baselines.md``);
- :class:`ItemKNN`: ``n_orders`` is the count matrix implicit's BM25 / cosine weighting is
  computed on, and the user's row that neighbours' similarities are summed with;
- :class:`ImplicitBPR`: only whether the pair exists (BPR samples positives, it has no weights).

Every ``implicit`` call runs inside ``threadpoolctl.threadpool_limits(1, "blas")`` (implicit's
own threads are set by ``num_threads``; its BLAS must be single-threaded or it slows down badly).
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import rank_by_score
from recsys_assets.evaluation.protocol import order_keys

__all__ = [
    "OUTPUT_COLUMNS",
    "CandidateGenerator",
    "CoClustering",
    "ImplicitALS",
    "ImplicitBPR",
    "Interactions",
    "ItemKNN",
    "Popularity",
    "RepeatPurchase",
    "RepeatThenPopular",
    "interactions",
]

OUTPUT_COLUMNS: tuple[str, ...] = (c.USER_ID, c.ITEM_ID, c.SCORE, c.RANK)
N_ORDERS = "n_orders"
FIRST_TS = "first_ts"
LAST_TS = "last_ts"
_DAY = pd.Timedelta(days=1)


# --- Shared training data -------------------------------------------------------------------


class Interactions:
    """Training purchases indexed for the generators.

    - ``pairs``: one row per (user_id, item_id, order) with its first timestamp;
    - ``users`` / ``items``: sorted indices (``items`` is the training catalogue);
    - ``matrix``: CSR users x items, float32, value = distinct orders of the pair (``n_orders``);
    - ``start`` / ``end``: first and last training timestamp.
    """

    def __init__(self, train: pd.DataFrame) -> None:
        events = train
        if c.EVENT_TYPE in events.columns:
            events = events.loc[events[c.EVENT_TYPE].fillna(c.PURCHASE) == c.PURCHASE]
        events = events.loc[events[c.USER_ID].notna() & events[c.ITEM_ID].notna()]
        if events.empty:
            raise ValueError("no purchases to fit on")
        frame = pd.DataFrame(
            {
                c.USER_ID: events[c.USER_ID].astype(str).to_numpy(dtype=object),
                c.ITEM_ID: events[c.ITEM_ID].astype(str).to_numpy(dtype=object),
                "order": order_keys(events).to_numpy(dtype=object),
                c.EVENT_TS: events[c.EVENT_TS].to_numpy(),
            }
        )
        self.pairs = (
            frame.groupby([c.USER_ID, c.ITEM_ID, "order"], sort=True)[c.EVENT_TS]
            .min()
            .reset_index()
        )
        self.users = pd.Index(np.sort(frame[c.USER_ID].unique()), name=c.USER_ID)
        self.items = pd.Index(np.sort(frame[c.ITEM_ID].unique()), name=c.ITEM_ID)
        self.start = pd.Timestamp(frame[c.EVENT_TS].min())
        self.end = pd.Timestamp(frame[c.EVENT_TS].max())

        per_pair = self.pairs.groupby([c.USER_ID, c.ITEM_ID], sort=True).agg(
            n_orders=(c.EVENT_TS, "size"),
            first_ts=(c.EVENT_TS, "min"),
            last_ts=(c.EVENT_TS, "max"),
        )
        self.per_pair = per_pair.reset_index()
        rows = self.users.get_indexer(self.per_pair[c.USER_ID])
        cols = self.items.get_indexer(self.per_pair[c.ITEM_ID])
        self.matrix = sp.csr_matrix(
            (self.per_pair[N_ORDERS].to_numpy(dtype=np.float32), (rows, cols)),
            shape=(len(self.users), len(self.items)),
        )

    def user_rows(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(known users, their row numbers) among ``users``, in the given order."""
        wanted = _unique_users(users)
        rows = self.users.get_indexer(wanted)
        known = rows >= 0
        return wanted[known], rows[known]


def interactions(train: pd.DataFrame) -> Interactions:
    """Index training purchases (see :class:`Interactions`)."""
    return Interactions(train)


def _unique_users(users: Sequence[str]) -> np.ndarray:
    return pd.unique(pd.Series(list(users), dtype=object).astype(str)).astype(object)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c.USER_ID: pd.Series(dtype=object),
            c.ITEM_ID: pd.Series(dtype=object),
            c.SCORE: pd.Series(dtype=np.float64),
            c.RANK: pd.Series(dtype=np.int64),
        }
    )


def _ranked(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """Rank (user_id, item_id, score) rows per user and keep the best ``n`` of each."""
    frame = frame.loc[np.isfinite(frame[c.SCORE].to_numpy(dtype=np.float64))]
    if frame.empty:
        return _empty()
    frame = frame.astype({c.USER_ID: object, c.ITEM_ID: object, c.SCORE: np.float64})
    ranked = rank_by_score(frame, col_score=c.SCORE)
    ranked = ranked.loc[ranked[c.RANK] <= n, list(OUTPUT_COLUMNS)]
    return ranked.reset_index(drop=True)


def _tile(users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Every user with the same (items, scores) list."""
    return pd.DataFrame(
        {
            c.USER_ID: np.repeat(users, len(items)),
            c.ITEM_ID: np.tile(items, len(users)),
            c.SCORE: np.tile(scores.astype(np.float64), len(users)),
        }
    )


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` best scores, ties by position (items are sorted by id)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:n]


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


# --- Interface --------------------------------------------------------------------------------


class CandidateGenerator(ABC):
    """``fit(train) -> self``, ``recommend(users, n) -> DataFrame`` (see the module notes)."""

    name: str = "generator"

    def __init__(self) -> None:
        self.fit_seconds: float = math.nan
        self.data: Interactions | None = None

    def fit(self, train: pd.DataFrame) -> Self:
        """Learn from training purchases; records the wall time in ``fit_seconds``."""
        started = time.perf_counter()
        self.data = Interactions(train)
        self._fit(self.data)
        self.fit_seconds = time.perf_counter() - started
        return self

    def recommend(self, users: Sequence[str], n: int = c.CANDIDATES_N) -> pd.DataFrame:
        """The best ``n`` catalogue items per customer: user_id, item_id, score, rank."""
        n = _check_n(n)
        if self.data is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(train) first")
        return self._recommend(self.data, _unique_users(users), n)

    @property
    def catalogue(self) -> np.ndarray:
        if self.data is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self.data.items.to_numpy()

    def params(self) -> dict[str, Any]:
        """The settings that define the generator (for reports)."""
        return {}

    @abstractmethod
    def _fit(self, data: Interactions) -> None: ...

    @abstractmethod
    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame: ...


# --- Non-personalised and history baselines ---------------------------------------------------


class Popularity(CandidateGenerator):
    """Most bought items, optionally time-decayed.

    An item's score is the sum over its (customer, order) purchases of
    ``0.5 ** (age_days / half_life_days)``, with the age measured from the last training event
    (the end of training); ``half_life_days=None`` gives plain counts of distinct orders.
    Everyone, known or not, gets the same list.
    """

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        super().__init__()
        if half_life_days is not None and not half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0 or None, got {half_life_days!r}")
        self.half_life_days = half_life_days
        self.scores: np.ndarray = np.empty(0)

    def params(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}

    def _fit(self, data: Interactions) -> None:
        pairs = data.pairs
        if self.half_life_days is None:
            weight = np.ones(len(pairs))
        else:
            age_days = (data.end - pairs[c.EVENT_TS]) / _DAY
            weight = np.power(0.5, age_days.to_numpy(dtype=np.float64) / self.half_life_days)
        columns = data.items.get_indexer(pairs[c.ITEM_ID])
        self.scores = np.bincount(columns, weights=weight, minlength=len(data.items))

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most popular items and their scores."""
        assert self.data is not None
        best = _top(self.scores, n)
        return self.data.items.to_numpy()[best], self.scores[best]

    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame:
        items, scores = self.top(n)
        return _ranked(_tile(users, items, scores), n)


class RepeatPurchase(CandidateGenerator):
    """The customer's own past items, most re-bought first.

    Score = distinct orders containing the item + the recency of its last purchase as a fraction
    in [0, 1) of the training period, so more orders always wins and, at equal orders, the more
    recently bought item does. ``recency_ties=False`` drops the recency term (ties then go to
    the smaller item id; on UCI this reproduces the older reference figures, NDCG@10 0.312
    instead of 0.322). Customers unseen in training get no rows; a customer's list is as long
    as their history (at most ``n``).
    """

    name = "repeat"

    def __init__(self, recency_ties: bool = True) -> None:
        super().__init__()
        self.recency_ties = recency_ties
        self.history: pd.DataFrame = pd.DataFrame()

    def params(self) -> dict[str, Any]:
        return {"recency_ties": self.recency_ties}

    def _fit(self, data: Interactions) -> None:
        score = data.per_pair[N_ORDERS].to_numpy(np.float64)
        if self.recency_ties:
            span = (data.end - data.start) / _DAY + 1.0  # + 1 day: the fraction stays below 1
            since = (data.per_pair[LAST_TS] - data.start) / _DAY
            score = score + since.to_numpy(np.float64) / span
        self.history = pd.DataFrame(
            {
                c.USER_ID: data.per_pair[c.USER_ID].to_numpy(dtype=object),
                c.ITEM_ID: data.per_pair[c.ITEM_ID].to_numpy(dtype=object),
                c.SCORE: score,
            }
        )

    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame:
        return _ranked(self.history.loc[self.history[c.USER_ID].isin(users)], n)


class RepeatThenPopular(CandidateGenerator):
    """:class:`RepeatPurchase` first, then :class:`Popularity` items not already listed.

    Scores: a repeat item gets ``1 + its repeat score`` (>= 2), a popular one its popularity
    divided by the top popularity (<= 1), so every repeat item ranks above every popular one.
    """

    name = "repeat_then_popular"

    def __init__(self, half_life_days: float | None = None, recency_ties: bool = True) -> None:
        super().__init__()
        self.repeat = RepeatPurchase(recency_ties=recency_ties)
        self.popularity = Popularity(half_life_days=half_life_days)

    def params(self) -> dict[str, Any]:
        return self.popularity.params() | self.repeat.params()

    def _fit(self, data: Interactions) -> None:
        for part in (self.repeat, self.popularity):
            part.data = data
            part._fit(data)

    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame:
        repeat = self.repeat._recommend(data, users, n)[[c.USER_ID, c.ITEM_ID, c.SCORE]]
        repeat[c.SCORE] += 1.0
        # A user lists at most n repeat items, so the top 2n popular ones always fill the rest.
        items, scores = self.popularity.top(2 * n)
        top = scores.max() if len(scores) and scores.max() > 0 else 1.0
        popular = _tile(users, items, scores / top)
        popular = popular.merge(
            repeat[[c.USER_ID, c.ITEM_ID]], on=[c.USER_ID, c.ITEM_ID], how="left", indicator=True
        )
        popular = popular.loc[popular["_merge"] == "left_only", [c.USER_ID, c.ITEM_ID, c.SCORE]]
        return _ranked(pd.concat([repeat, popular], ignore_index=True), n)


# --- implicit models ------------------------------------------------------------------------


class _ImplicitModel(CandidateGenerator):
    """A model of the ``implicit`` library, fitted on a users x items CSR matrix."""

    def __init__(self, seed: int = c.SEED, num_threads: int = 1) -> None:
        super().__init__()
        self.seed = seed
        self.num_threads = num_threads
        self.model: Any = None
        self._user_items: sp.csr_matrix | None = None

    @abstractmethod
    def _make_model(self) -> Any: ...

    def _weights(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """The matrix the model is fitted on, from the distinct-orders counts."""
        return counts

    def _fit(self, data: Interactions) -> None:
        # Import before limiting: threadpoolctl only limits the libraries already loaded.
        import implicit.cpu.als
        import implicit.cpu.bpr
        import implicit.nearest_neighbours  # noqa: F401

        weighted = self._weights(data.matrix).astype(np.float32).tocsr()
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # implicit's BM25 / cosine weighting hands its own COO matrix to its CSR-only kNN.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model = self._make_model()
            self.model.fit(weighted, show_progress=False)
        self._user_items = weighted

    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame:
        known, rows = data.user_rows(users)
        if len(rows) == 0:
            return _empty()
        assert self._user_items is not None
        n_items = len(data.items)
        with threadpool_limits(1, "blas"):
            ids, scores = self.model.recommend(
                rows,
                self._user_items[rows],
                N=min(n, n_items),
                filter_already_liked_items=False,
            )
        ids = np.asarray(ids).reshape(len(rows), -1)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(rows), -1)
        valid = (ids >= 0) & (ids < n_items)  # item-KNN pads short lists with -1
        user_of = np.repeat(known, ids.shape[1]).reshape(ids.shape)
        frame = pd.DataFrame(
            {
                c.USER_ID: user_of[valid],
                c.ITEM_ID: data.items.to_numpy()[ids[valid]],
                c.SCORE: scores[valid],
            }
        )
        return _ranked(frame, n)


class ImplicitALS(_ImplicitModel):
    """Implicit-feedback matrix factorisation (alternating least squares, implicit's CPU code).

    Fitted on the distinct-orders matrix with implicit's ``alpha``: a bought pair has preference
    1 with confidence ``alpha * n_orders``, the others preference 0 with confidence 1. The
    defaults are implicit's (regularization 0.01, alpha 1, 15 iterations) with 64 factors.
    Deterministic for a given ``seed`` (the conjugate-gradient solver works row by row).
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = c.SEED,
        num_threads: int = 1,
    ) -> None:
        super().__init__(seed=seed, num_threads=num_threads)
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "alpha": self.alpha,
            "seed": self.seed,
        }

    def _make_model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.seed,
        )


class ImplicitBPR(_ImplicitModel):
    """Bayesian personalised ranking (implicit's CPU code) on the binary purchase matrix.

    With ``num_threads=1`` (the default) the SGD is sequential, so a ``seed`` fixes the result;
    more threads are faster but not reproducible (lock-free parallel updates).
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = c.SEED,
        num_threads: int = 1,
    ) -> None:
        super().__init__(seed=seed, num_threads=num_threads)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "seed": self.seed,
        }

    def _weights(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        binary = counts.astype(np.float32, copy=True)
        binary.data[:] = 1.0
        return binary

    def _make_model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            num_threads=self.num_threads,
            random_state=self.seed,
        )


class ItemKNN(_ImplicitModel):
    """Item-item nearest neighbours (implicit): ``similarity`` "bm25" or "cosine", ``k``
    neighbours per item.

    A customer's score for an item is the sum, over the items they bought, of ``n_orders`` times
    the item-item similarity. Items with no similarity to anything the customer bought are not
    listed, so a list can be shorter than ``n``. Deterministic (no randomness).
    """

    name = "item_knn"

    def __init__(
        self,
        similarity: str = "bm25",
        k: int = 100,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        num_threads: int = 1,
    ) -> None:
        if similarity not in ("bm25", "cosine"):
            raise ValueError(f"similarity must be 'bm25' or 'cosine', got {similarity!r}")
        super().__init__(num_threads=num_threads)
        self.similarity = similarity
        self.k = k
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.name = f"item_knn_{similarity}"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"similarity": self.similarity, "k": self.k}
        if self.similarity == "bm25":
            params |= {"bm25_k1": self.bm25_k1, "bm25_b": self.bm25_b}
        return params

    def _make_model(self) -> Any:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        if self.similarity == "bm25":
            return BM25Recommender(
                K=self.k, K1=self.bm25_k1, B=self.bm25_b, num_threads=self.num_threads
            )
        return CosineRecommender(K=self.k, num_threads=self.num_threads)


# --- Co-clustering ----------------------------------------------------------------------------


class CoClustering(CandidateGenerator):
    """Spectral co-clustering (scikit-learn ``SpectralCoclustering``) of the purchase matrix.

    The binary users x items matrix is split into ``n_clusters`` co-clusters (a group of users
    with a group of items). A customer in co-cluster ``j`` gets its items first, by how many of
    the group's customers bought each (score ``1 + buyers / top buyers``, in (1, 2]), then every
    other item by its number of buyers overall (score ``buyers / (top buyers + 1)``, below 1).
    Customers unseen in training get the overall list. A baseline, not a strong model.
    """

    name = "coclustering"

    def __init__(self, n_clusters: int = 8, seed: int = c.SEED) -> None:
        super().__init__()
        self.n_clusters = n_clusters
        self.seed = seed
        self.user_clusters: np.ndarray = np.empty(0, dtype=np.int64)
        self.item_clusters: np.ndarray = np.empty(0, dtype=np.int64)
        self.cluster_scores: np.ndarray = np.empty((0, 0))
        self.global_scores: np.ndarray = np.empty(0)

    def params(self) -> dict[str, Any]:
        return {"n_clusters": self.n_clusters, "seed": self.seed}

    def _fit(self, data: Interactions) -> None:
        from sklearn.cluster import SpectralCoclustering

        binary = data.matrix.astype(np.float64, copy=True)
        binary.data[:] = 1.0
        n_clusters = max(1, min(self.n_clusters, *binary.shape))
        with threadpool_limits(1, "blas"):
            model = SpectralCoclustering(n_clusters=n_clusters, random_state=self.seed)
            model.fit(binary)
        self.user_clusters = np.asarray(model.row_labels_, dtype=np.int64)
        self.item_clusters = np.asarray(model.column_labels_, dtype=np.int64)

        buyers = np.asarray(binary.sum(axis=0)).ravel()
        self.global_scores = buyers / (buyers.max() + 1.0)
        membership = sp.csr_matrix(
            (np.ones(binary.shape[0]), (self.user_clusters, np.arange(binary.shape[0]))),
            shape=(n_clusters, binary.shape[0]),
        )
        in_cluster = np.asarray((membership @ binary).todense())  # clusters x items: buyers
        scores = np.tile(self.global_scores, (n_clusters, 1))
        for j in range(n_clusters):
            mine = self.item_clusters == j
            top = in_cluster[j, mine].max() if mine.any() else 0.0
            scores[j, mine] = 1.0 + in_cluster[j, mine] / (top if top > 0 else 1.0)
        self.cluster_scores = scores

    def _recommend(self, data: Interactions, users: np.ndarray, n: int) -> pd.DataFrame:
        rows = data.users.get_indexer(users)
        groups = np.where(rows >= 0, self.user_clusters[np.maximum(rows, 0)], -1)
        items = data.items.to_numpy()
        parts = []
        for group in np.unique(groups):
            scores = self.global_scores if group < 0 else self.cluster_scores[group]
            best = _top(scores, n)
            parts.append(_tile(users[groups == group], items[best], scores[best]))
        if not parts:
            return _empty()
        return _ranked(pd.concat(parts, ignore_index=True), n)
