"""Evaluation: the model chosen on the validation period, and one report over every trained
model, kept per version and at a stable path."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.defs.training.assets import TrainedModel
from recsys_assets.evaluation.protocol import Split
from recsys_assets.evaluation.report import build_report, headline_table, write_report
from recsys_assets.evaluation.selection import RANKER, Selection, select_model
from recsys_assets.training.baselines import SIMPLE_MODELS

MODEL_INPUTS = {f"{name}_model": dg.AssetIn() for name in [*SIMPLE_MODELS, RANKER]}


@dataclass
class SelectedModel:
    """The model chosen to be made servable, the grounds, and the baseline the gate holds it to:
    the best simple model by validation NDCG, with its test figures (``name``, ``ndcg``,
    ``per_user_ndcg``), None without one."""

    trained: TrainedModel
    selection: Selection
    baseline: dict[str, Any] | None


def choose(models: dict[str, TrainedModel]) -> SelectedModel:
    """:func:`~recsys_assets.evaluation.selection.select_model` over the models' validation
    figures; the test figures are not looked at."""
    by_name = {trained.name: trained for trained in models.values()}
    validation = {name: t.metrics.get("validation") or {} for name, t in by_name.items()}
    selection = select_model(
        {name: figures.get("per_user_ndcg") for name, figures in validation.items()},
        reasons={name: figures.get("reason", "") for name, figures in validation.items()},
    )
    baseline = None
    if selection.best_baseline is not None:
        metrics = by_name[selection.best_baseline].metrics
        baseline = {
            "name": selection.best_baseline,
            "ndcg": metrics["ndcg"],
            "per_user_ndcg": metrics.get("per_user_ndcg", {}),
        }
    return SelectedModel(by_name[selection.chosen], selection, baseline)


@dg.asset(
    group_name="evaluation",
    owners=[c.OWNER_DATA],
    tags={"domain": "evaluation"},
    code_version="1",
    io_manager_key="model_store",
    ins=MODEL_INPUTS,
    kinds={"python"},
)
def selected_model(**models: TrainedModel) -> dg.Output[SelectedModel]:
    """The model to make servable, chosen on the validation period among the ranker and every
    simple model (evaluation/selection.py: the ranker unless a simple model beats it beyond
    noise), and the best simple model the gate holds it to. Test figures are reported, never
    used to choose."""
    selected = choose(models)
    selection = selected.selection
    chosen = selected.trained
    return dg.Output(
        selected,
        data_version=dg.DataVersion(chosen.version),
        metadata={
            "chosen": selection.chosen,
            "judged": selection.judged,
            "rule": selection.rule,
            "best_baseline": selection.best_baseline or "none",
            "validation": dg.MetadataValue.json(selection.validation),
            "paired": dg.MetadataValue.json(selection.paired or {}),
            "model_version": chosen.version,
            f"test_ndcg@{c.DEFAULT_K}": float(chosen.metrics["ndcg"]),
        },
    )


@dg.asset(
    group_name="evaluation",
    owners=[c.OWNER_DATA],
    tags={"domain": "evaluation"},
    code_version="1",
    ins={"evaluation_split": dg.AssetIn(), "selected_model": dg.AssetIn(), **MODEL_INPUTS},
    kinds={"html", "json"},
)
def evaluation_report(
    evaluation_split: Split, selected_model: SelectedModel, **models: TrainedModel
) -> dg.MaterializeResult:
    """NDCG, MAP, recall, hit rate, MRR, coverage and revenue proxy of every model at K on the
    fixed protocol, per segment, as K curves and with bootstrap spreads, after the choice made
    on the validation period (which the report states first): an HTML page with plots and a
    JSON of the figures, kept per version under reports/evaluation/, the latest also at
    reports/evaluation.json."""
    # every figure but the per-customer NDCG kept for the promotion gate
    figures = {
        trained.name: {k: v for k, v in trained.metrics.items() if k != "per_user_ndcg"}
        for trained in models.values()
    }
    for model_figures in figures.values():
        validation = model_figures.get("validation")
        if isinstance(validation, dict):
            model_figures["validation"] = {
                k: v for k, v in validation.items() if k != "per_user_ndcg"
            }
    report = build_report(
        figures,
        split_description=evaluation_split.description,
        selection=selected_model.selection.as_dict(),
    )
    version = report_version(report)
    reports_dir = get_settings().reports_dir
    json_path, html_path = write_report(report, reports_dir / "evaluation", version)
    latest_json, _ = write_report(report, reports_dir, "evaluation")
    best = report["best_model"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "report": dg.MetadataValue.url(html_path.as_uri()),
            "report_path": dg.MetadataValue.path(str(html_path)),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "latest_json": dg.MetadataValue.path(str(latest_json)),
            "best_model": best,
            f"best_ndcg@{report['k']}": report["models"][best]["ndcg"],
            "selected_model": selected_model.selection.chosen,
            "selection_rule": selected_model.selection.rule,
            "headline": dg.MetadataValue.md(f"```\n{headline_table(report)}\n```"),
        },
    )


TIMINGS = ("fit_seconds", "recommend_seconds")


def report_version(report: dict) -> str:
    """A version for the report from its figures: not its timestamp, not wall times."""
    figures = {k: v for k, v in report.items() if k not in ("generated_at", "models")}
    figures["models"] = {
        name: {k: v for k, v in metrics.items() if k not in TIMINGS}
        for name, metrics in report["models"].items()
    }
    return hashlib.sha256(json.dumps(figures, sort_keys=True).encode()).hexdigest()[:16]
