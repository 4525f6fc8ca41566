"""Training: the reduced training set for cheap retraining (training/reduction.py).

Not part of models_job (yet). The retraining recipe it prepares (benchmarks/results/reduction.md,
UCI, 2-core machine) keeps the full history and, given the previous production model, builds only
the newest cutoff from that model's serving generators, keeps 30 random negatives per query
(dropped before the feature join) and warm-starts the previous booster with 100 rounds at eta
0.05 (training.reduction.fit_reduced_ranker(previous=...)). Measured against the full retraining
(53 and 47 s): NDCG@10 0.3790 vs 0.3772 (+0.5%), 4.3x and 2.75x faster in wall time in the two
decisive runs (6.1x and 4.0x in CPU time; wall times on the shared machine are noisy). With a
booster from scratch instead (100 rounds at eta 0.15, 20 selected features, closed cutoffs
reused): -1.4%, 2.2-3.8x; with nothing from the previous model: -1.4%, 1.8x. Reducing the
history (recent window + decayed sample) costs 5-7% NDCG@10 and is off by default.
"""

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.defs.training.assets import ranker_config_for
from recsys_assets.evaluation.protocol import Split
from recsys_assets.features.tables import returns_from_quarantine
from recsys_assets.ingestion.validation import restore_event_dtypes
from recsys_assets.training.ranker import LABEL, QID, feature_columns, train_purchases
from recsys_assets.training.reduction import (
    ReductionConfig,
    quick_importance,
    reduce_history,
    reduced_training_frame,
    select_features,
)

CODE_VERSION = "2"


@dataclass
class ReducedTrainingSet:
    """The ranker's down-sampled training frame (every cutoff, 30 random negatives per query),
    the selected features, and how they were chosen. ``events`` is the reduced history when
    ``config.history`` is on, else ``None`` (the split's training events are used as they are)."""

    events: pd.DataFrame | None
    frame: pd.DataFrame
    features: list[str]
    split_ts: pd.Timestamp
    config: ReductionConfig
    history_report: dict[str, dict[str, int]] = field(default_factory=dict)
    feature_report: dict[str, Any] = field(default_factory=dict)


@dg.asset(
    group_name="training",
    owners=[c.OWNER_DATA],
    tags={"domain": "training"},
    code_version=CODE_VERSION,
    io_manager_key="model_store",
    kinds={"pandas"},
    ins={"evaluation_split": dg.AssetIn(), "quarantined_events": dg.AssetIn()},
)
def reduced_training_set(
    evaluation_split: Split, quarantined_events: pd.DataFrame
) -> dg.Output[ReducedTrainingSet]:
    """The ranker's training data made small for retraining, with the ReductionConfig defaults:
    the full purchase history (the history reduction is off: it costs 5-7% NDCG@10), every
    positive and 30 random negatives per query (dropped before the point-in-time join), and the
    ranker features kept after dropping constant, highly correlated (|r| > 0.95) and
    low-importance ones (top 20 by total gain of a 50-round first fit on the down-sampled set).

    Standalone it builds every cutoff from scratch (the benchmark's "scratch": 1.8x, -1.4%
    NDCG@10 when trained on it); the measured 2.75-4.3x at +0.5% needs the previous production
    model: training.reduction.fit_reduced_ranker(previous=...) then builds only the newest cutoff
    from
    that model's generators and warm-starts its booster (benchmarks/results/reduction.md)."""
    config = ReductionConfig()
    split = evaluation_split
    events = split.train
    history_report: dict[str, dict[str, int]] = {}
    if config.history:
        events, history_report = reduce_history(split.train, split.split_ts, config)
    returns = returns_from_quarantine(restore_event_dtypes(quarantined_events))
    ranker_config, _ = ranker_config_for(split)
    if not ranker_config.cutoffs:
        raise dg.Failure(description="not enough history before the split to train the ranker")
    rows: dict[str, int] = {}
    frame, _ = reduced_training_frame(
        events,
        split.split_ts,
        ranker_config,
        max_negatives=config.max_negatives,
        negatives=config.negatives,
        seed=config.seed,
        returns=returns,
        report=rows,
    )
    all_features = feature_columns(ranker_config.generator_names())
    importance = quick_importance(frame, all_features, ranker_config)
    features, feature_report = select_features(frame, all_features, importance, config)
    purchases = train_purchases(split.train, split.split_ts)
    full = {
        "rows": len(purchases),
        "customers": int(purchases[c.USER_ID].nunique()),
        "items": int(purchases[c.ITEM_ID].nunique()),
    }
    before = history_report.get("input", full)
    after = history_report.get("sample", full)
    keys = {c.USER_ID, c.ITEM_ID, c.FEATURE_TS, LABEL, QID, *features}
    kept = frame[[col for col in frame.columns if col in keys]]
    return dg.Output(
        ReducedTrainingSet(
            events if config.history else None,
            kept,
            features,
            pd.Timestamp(split.split_ts),
            config,
            history_report,
            feature_report,
        ),
        metadata={
            "history_reduced": config.history,
            "rows_before": before["rows"],
            "rows_after": after["rows"],
            "customers_before": before["customers"],
            "customers_after": after["customers"],
            "items_before": before["items"],
            "items_after": after["items"],
            "training_rows_before": rows["candidate_rows"],
            "training_rows_after": rows["training_rows"],
            "features_before": len(all_features),
            "features_after": len(features),
            "history_report": dg.MetadataValue.json(history_report),
            "feature_report": dg.MetadataValue.json(feature_report),
            "config": dg.MetadataValue.json(config.__dict__),
        },
    )
