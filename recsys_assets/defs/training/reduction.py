"""Training: the reduced training set for cheap retraining (lib/reduction.py).

Not part of models_job: the benchmark (benchmarks/results/reduction.md) shows the reduced ranker
loses 6% NDCG@10 for a 1.8x speed-up, short of the 3x / 2% bar, so it is not used to train yet.
"""

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd

from recsys_assets import constants as c
from recsys_assets.defs.training.assets import ranker_cutoffs
from recsys_assets.lib.evaluation import Split
from recsys_assets.lib.features import returns_from_quarantine
from recsys_assets.lib.ranking import RankerConfig, feature_columns, training_set
from recsys_assets.lib.reduction import (
    ReductionConfig,
    downsample_negatives,
    quick_importance,
    reduce_history,
    select_features,
)
from recsys_assets.lib.validation import restore_event_dtypes

CODE_VERSION = "1"


@dataclass
class ReducedTrainingSet:
    """Reduced purchase history and the selected ranker features, with how they were chosen."""

    events: pd.DataFrame
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
    """The ranker's training data made small for retraining: the last 120 days of purchases in
    full plus a time-decayed, seeded sample of older orders, without inactive customers or
    same-day duplicates; and the ranker features kept after dropping constant, highly
    correlated (|r| > 0.95) and low-importance ones (a 50-round first fit on the reduced,
    negative-down-sampled training set). Fit with lib.reduction.fit_reduced_ranker."""
    config = ReductionConfig()
    split = evaluation_split
    events, history_report = reduce_history(split.train, split.split_ts, config)
    returns = returns_from_quarantine(restore_event_dtypes(quarantined_events))
    ranker_config = RankerConfig(cutoffs=ranker_cutoffs(split))
    if not ranker_config.cutoffs:
        raise dg.Failure(description="not enough history before the split to train the ranker")
    frame, _ = training_set(events, split.split_ts, ranker_config, returns=returns)
    names = ranker_config.generator_names()
    all_features = feature_columns(names)
    frame = downsample_negatives(
        frame, config.max_negatives, names, strategy=config.negatives, seed=config.seed
    )
    importance = quick_importance(frame, all_features, ranker_config)
    features, feature_report = select_features(frame, all_features, importance, config)
    before, after = history_report["input"], history_report["sample"]
    return dg.Output(
        ReducedTrainingSet(
            events, features, pd.Timestamp(split.split_ts), config, history_report, feature_report
        ),
        metadata={
            "rows_before": before["rows"],
            "rows_after": after["rows"],
            "customers_before": before["customers"],
            "customers_after": after["customers"],
            "items_before": before["items"],
            "items_after": after["items"],
            "features_before": len(all_features),
            "features_after": len(features),
            "training_rows_after_downsampling": len(frame),
            "history_report": dg.MetadataValue.json(history_report),
            "feature_report": dg.MetadataValue.json(feature_report),
            "config": dg.MetadataValue.json(config.__dict__),
        },
    )
