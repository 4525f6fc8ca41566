"""Evaluation: one report over every trained model, kept per version and at a stable path."""

import hashlib
import json

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.defs.training.assets import GENERATORS, TrainedModel
from recsys_assets.evaluation.protocol import Split
from recsys_assets.evaluation.report import build_report, headline_table, write_report

MODEL_INPUTS = {f"{name}_model": dg.AssetIn() for name in [*GENERATORS, "ranker"]}


@dg.asset(
    group_name="evaluation",
    owners=[c.OWNER_DATA],
    tags={"domain": "evaluation"},
    code_version="1",
    ins={"evaluation_split": dg.AssetIn(), **MODEL_INPUTS},
    kinds={"html", "json"},
)
def evaluation_report(evaluation_split: Split, **models: TrainedModel) -> dg.MaterializeResult:
    """NDCG, MAP, recall, hit rate, MRR, coverage and revenue proxy of every model at K on the
    fixed protocol, per segment, as K curves and with bootstrap spreads: an HTML page with plots
    and a JSON of the figures, kept per version under reports/evaluation/, the latest also at
    reports/evaluation.json."""
    # every figure but the per-customer NDCG kept for the promotion gate
    figures = {
        trained.name: {k: v for k, v in trained.metrics.items() if k != "per_user_ndcg"}
        for trained in models.values()
    }
    report = build_report(figures, split_description=evaluation_split.description)
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
