"""Training: the evaluation split and one asset per model (each simple model and the ranker).

Each model asset first fits on the purchases before the validation period and scores there
(the figures the model to promote is chosen on, :mod:`recsys_assets.evaluation.selection`),
then fits on the whole training period, recommends for the evaluated customers and records
fit time, test metrics and lineage as metadata. The fitted model is pickled by the
`model_store` IO manager, so the selection, the report and the promotion can load it. The
ranker fits its own candidate generators at each training cutoff.
"""

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.core import pickles
from recsys_assets.core.versioning import data_version
from recsys_assets.defs.ingestion.assets import event_partitions
from recsys_assets.defs.lineage import model_lineage, model_version
from recsys_assets.evaluation.protocol import (
    Split,
    evaluate,
    per_user_ndcg,
    temporal_split,
    validation_split,
)
from recsys_assets.features.store import FEATURE_SERVICE
from recsys_assets.features.tables import returns_from_quarantine
from recsys_assets.ingestion.sources import load_source_spec
from recsys_assets.ingestion.validation import restore_event_dtypes
from recsys_assets.training.baselines import SIMPLE_MODELS
from recsys_assets.training.ranker import Ranker, RankerConfig, feature_lineage, fit_ranker
from recsys_assets.training.reduction import fit_reduced_ranker
from recsys_assets.training.schedule import RankerSchedule, ranker_schedule

TAGS = {"domain": "training"}
CODE_VERSION = "1"
HEADLINE = ("ndcg", "map", "recall", "hit_rate", "mrr", "coverage")


@dg.asset(
    group_name="training",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    code_version=CODE_VERSION,
    io_manager_key="model_store",
    ins={"validated_events": dg.AssetIn()},
    kinds={"pandas"},
)
def evaluation_split(validated_events: pd.DataFrame) -> dg.Output[Split]:
    """The temporal protocol: purchases before the source's ``split_date`` train, from then on
    test (UCI Online Retail: 2011-11-01); customers with purchases in both periods are evaluated
    (docs in evaluation/protocol.py). A source without one, or whose date is outside its data,
    uses its last 10% of time as test, and the description says so. The validation period (the
    test period's length, just before it) is where models are chosen."""
    spec = load_source_spec(get_settings().data_config)
    split = temporal_split(restore_event_dtypes(validated_events), spec.split_date)
    validation = validation_split(split)
    return dg.Output(
        split,
        data_version=dg.DataVersion(data_version(split.train)),
        metadata={
            "description": split.description,
            "train_rows": len(split.train),
            "test_rows": len(split.test),
            "evaluated_customers": len(split.users),
            "catalogue_items": len(split.catalogue),
            "split_ts": str(split.split_ts),
            "has_prices": split.has_prices,
            "train_data_version": data_version(split.train),
            "test_days": round(split.test_days or 0.0, 2),
            "validation": validation.description if validation else "no validation period",
            "validation_customers": len(validation.users) if validation else 0,
            "ranker_schedule": ranker_schedule(split).description,
        },
    )


@dataclass
class TrainedModel:
    """A fitted model with what it was fitted on, how it scored and where it came from."""

    name: str
    model: Any  # a candidates.CandidateGenerator or a ranking.Ranker
    metrics: dict[str, Any]
    train_data_version: str
    lineage: dict[str, Any] = field(default_factory=dict)
    version: str = ""


def validation_figures(recommendations: pd.DataFrame, validation: Split) -> dict[str, Any]:
    """A model's figures on the validation period: NDCG@K and each customer's (the choice)."""
    report = evaluate(recommendations, validation, n_bootstrap=1)
    return {
        "ndcg": float(report["ndcg"]),
        "n_users": int(report["n_users"]),
        "split_ts": str(validation.split_ts),
        "per_user_ndcg": per_user_ndcg(report["per_user"]),
    }


def not_judged(reason: str) -> dict[str, Any]:
    """The validation entry of a model that could not be scored there, and why."""
    return {"ndcg": None, "n_users": 0, "per_user_ndcg": {}, "reason": reason}


def evaluate_generator(name: str, factory, split: Split) -> TrainedModel:
    """Fit on the validation period's training data and score there, then fit on the whole
    training period, recommend the top N for the evaluated customers, evaluate; no rows kept."""
    validation = validation_split(split)
    if validation is None or not len(validation.users):
        checked = not_judged("no customer bought in both the validation period and before it")
    else:
        early = factory().fit(validation.train)
        checked = validation_figures(
            early.recommend(list(validation.users), n=c.CANDIDATES_N), validation
        )
    model = factory().fit(split.train)
    started = time.perf_counter()
    recommendations = model.recommend(list(split.users), n=c.CANDIDATES_N)
    trained = scored_model(
        name, model, recommendations, split,
        fit_seconds=model.fit_seconds, recommend_seconds=time.perf_counter() - started,
        params=model.params(),
    )  # fmt: skip
    trained.metrics["validation"] = checked
    return trained


def scored_model(
    name: str,
    model: Any,
    recommendations: pd.DataFrame,
    split: Split,
    *,
    fit_seconds: float,
    recommend_seconds: float,
    params: dict[str, Any],
) -> TrainedModel:
    """Evaluate a model's recommendations on the split and keep the figures with the model."""
    report = evaluate(recommendations, split)
    # figures, and each customer's NDCG for the gate's paired comparison; no other rows
    report["per_user_ndcg"] = per_user_ndcg(report.pop("per_user"))
    report["fit_seconds"] = fit_seconds
    report["recommend_seconds"] = recommend_seconds
    report["params"] = params
    return TrainedModel(name, model, report, data_version(split.train))


def _model_output(
    context: dg.AssetExecutionContext,
    trained: TrainedModel,
    feature_service: str | None = None,
    features: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dg.Output[TrainedModel]:
    """Attach lineage and a version to the model, and its figures to the materialisation."""
    metrics = trained.metrics
    trained.lineage = model_lineage(
        context.instance,
        event_partitions.get_partition_keys(),
        code_version=context.assets_def.code_versions_by_key.get(context.asset_key),
        params=metrics["params"],
        feature_service=feature_service,
        features=features,
    )
    trained.version = model_version(trained.train_data_version, trained.lineage)
    return dg.Output(
        trained,
        data_version=dg.DataVersion(trained.version),
        metadata={
            "model_version": trained.version,
            "lineage": dg.MetadataValue.json(trained.lineage),
            **{f"{m}@{metrics['k']}": float(metrics[m]) for m in HEADLINE},
            "fit_seconds": round(metrics["fit_seconds"], 3),
            "recommend_seconds": round(metrics["recommend_seconds"], 3),
            "params": dg.MetadataValue.json(metrics["params"]),
            "train_data_version": trained.train_data_version,
            "evaluated_customers": int(metrics["n_users"]),
            **extra,
        },
    )


def _model_asset(name: str, factory, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{name}_model",
        group_name="training",
        owners=[c.OWNER_DATA],
        tags={**TAGS, "model": name},
        code_version=CODE_VERSION,
        io_manager_key="model_store",
        kinds={"python"},
        description=description,
    )
    def _asset(
        context: dg.AssetExecutionContext, evaluation_split: Split
    ) -> dg.Output[TrainedModel]:
        trained = evaluate_generator(name, factory, evaluation_split)
        return _model_output(
            context, trained, validation_ndcg=_validation_ndcg(trained.metrics["validation"])
        )

    return _asset


model_assets = [_model_asset(name, m.factory, m.description) for name, m in SIMPLE_MODELS.items()]


def _validation_ndcg(figures: dict[str, Any]) -> float | str:
    """The validation NDCG for metadata: the number, or why there is none."""
    ndcg = figures.get("ndcg")
    return float(ndcg) if ndcg is not None else f"not judged: {figures.get('reason')}"


def ranker_config_for(split: Split) -> tuple[RankerConfig, RankerSchedule]:
    """The ranker's configuration on ``split``: cutoffs and label window from its time scale."""
    schedule = ranker_schedule(split)
    config = RankerConfig(
        cutoffs=schedule.cutoffs,
        label_days=schedule.label_days,
        ttl_days=tuple(get_settings().features.ttl_days.items()),  # the views' TTL override
    )
    return config, schedule


def ranker_validation(split: Split, returns: pd.DataFrame | None) -> dict[str, Any]:
    """The ranker fitted before the validation period and scored there (a full fit, always:
    its figures choose the model to promote)."""
    validation = validation_split(split)
    if validation is None or not len(validation.users):
        return not_judged("no customer bought in both the validation period and before it")
    config, schedule = ranker_config_for(validation)
    if not config.cutoffs:
        return not_judged(
            f"not enough history before the validation period: {schedule.description}"
        )
    ranker = fit_ranker(validation.train, validation.split_ts, config, returns=returns)
    recommendations = ranker.recommend(
        list(validation.users), n=c.CANDIDATES_N, as_of=validation.split_ts
    )
    return validation_figures(recommendations, validation) | {"schedule": schedule.description}


class RankerRunConfig(dg.Config):
    """How a run fits the ranker (the retraining sensor asks for the warm start)."""

    warm_start: bool = Field(
        default=False,
        description="Warm-start the previous ranker's booster on the cutoffs it has not seen "
        "(training/reduction.py: 2.75-4.3x faster at +0.5% NDCG@10 on UCI); falls back to the full "
        "fit when there is no previous ranker or no new cutoff.",
    )


def previous_ranker(model_dir: Path) -> Ranker | None:
    """The ranker of the last materialisation (the model store's file), if it can be read."""
    path = model_dir / "ranker_model"
    try:
        with path.open("rb") as handle:
            trained = pickles.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError):
        return None
    return trained.model if isinstance(getattr(trained, "model", None), Ranker) else None


@dg.asset(
    group_name="training",
    owners=[c.OWNER_DATA],
    tags={**TAGS, "model": "ranker"},
    code_version=CODE_VERSION,
    io_manager_key="model_store",
    kinds={"xgboost"},
    ins={"evaluation_split": dg.AssetIn(), "quarantined_events": dg.AssetIn()},
)
def ranker_model(
    context: dg.AssetExecutionContext,
    config: RankerRunConfig,
    evaluation_split: Split,
    quarantined_events: pd.DataFrame,
) -> dg.Output[TrainedModel]:
    """The production model: XGBoost learning-to-rank (rank:ndcg) over the union of candidates
    (repeat, popularity, item-KNN, ALS) with their scores and ranks and point-in-time customer,
    item and customer-item features, trained on several monthly cutoffs before the split with
    next-period purchases as labels (training/ranker.py)."""
    ranker_config, schedule = ranker_config_for(evaluation_split)
    cutoffs = ranker_config.cutoffs
    if not cutoffs:
        raise dg.Failure(
            description="not enough history before the split to train the ranker: it needs at "
            "least two weeks of purchases before its first training cutoff "
            f"({schedule.description})"
        )
    # Returns (cancellations) feed the return-rate features; fit_ranker uses those before the split.
    returns = returns_from_quarantine(restore_event_dtypes(quarantined_events))
    checked = ranker_validation(evaluation_split, returns)
    mode = "full fit"
    previous = previous_ranker(get_settings().model_dir) if config.warm_start else None
    ranker = None
    if config.warm_start and previous is None:
        mode = "full fit (no previous ranker to warm-start)"
    elif previous is not None:
        try:
            ranker = fit_reduced_ranker(
                evaluation_split.train, evaluation_split.split_ts, ranker_config,
                returns=returns, previous=previous,
            )  # fmt: skip
            mode = "warm start"
        except ValueError as error:  # no cutoff after the previous split: nothing new to learn
            mode = f"full fit (warm start not possible: {error})"
    if ranker is None:
        ranker = fit_ranker(
            evaluation_split.train, evaluation_split.split_ts, ranker_config, returns=returns
        )
    context.log.info("ranker: %s", mode)
    started = time.perf_counter()
    recommendations = ranker.recommend(
        list(evaluation_split.users), n=c.CANDIDATES_N, as_of=evaluation_split.split_ts
    )
    trained = scored_model(
        "ranker", ranker, recommendations, evaluation_split,
        fit_seconds=ranker.fit_seconds, recommend_seconds=time.perf_counter() - started,
        params={"cutoffs": list(cutoffs), "label_days": ranker_config.label_days,
                "candidates": [list(x) for x in ranker_config.candidates],
                "xgb_params": dict(ranker_config.xgb_params),
                "rounds": ranker_config.num_boost_round},
    )  # fmt: skip
    trained.metrics["validation"] = checked
    importance = ranker.feature_importance()
    top = dict(sorted(importance.items(), key=lambda kv: -kv[1])[:15])
    return _model_output(
        context,
        trained,
        # the service its stored features are registered under, and what it actually reads
        feature_service=FEATURE_SERVICE,
        features=feature_lineage(ranker.features),
        feature_importance=dg.MetadataValue.json({k: round(v, 4) for k, v in top.items()}),
        training_rows=int(ranker.train_stats.get("rows", 0)),
        training_mode=mode,
        schedule=schedule.description,
        validation_ndcg=_validation_ndcg(checked),
    )
