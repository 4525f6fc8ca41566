"""Monitoring: is the serving model still right for the data that lands?

Four monitors compare a reference with the latest window and carry their own asset check, with
thresholds from ``monitoring`` in the environment's settings (docs/monitoring.md):

- ``data_drift_report``: Evidently data drift over the ranker's input features of the purchase
  lines (reference: the last ``reference_days`` before the serving model's data end; current:
  the latest ``window_days`` landed since; ``"auto"`` days hold ``min_window_lines`` purchase
  lines each), plus the mix of bought items;
- ``data_quality_report``: types, ranges, missing values and sparsity of the current window,
  so that a broken feed is told apart from a real shift in behaviour;
- ``prediction_drift_report``: served scores and recommended items (the service's served log)
  in the serving model's first days against the latest days: a warning before labels arrive;
- ``live_performance``: hit rate of served lists on the purchases that followed them (delayed
  ground truth) in the latest days against the same model's first days.

Each monitor's outcome is ``passed``, ``failed`` or ``not_judged`` (nothing to compare, too
few lists, a figure that cannot be computed): in its metadata (``outcome``, ``not_judged``:
signal -> reason) and its check's (:func:`check_result`). Not judged never passes.

``mlops_kpis`` turns the loop's event log into MTTD, MTTR and deployment velocity.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from recsys_assets.config import get_settings
from recsys_assets.core import constants as c
from recsys_assets.features.tables import returns_from_quarantine
from recsys_assets.ingestion.validation import restore_event_dtypes
from recsys_assets.monitoring import loop
from recsys_assets.monitoring import monitors as monitoring
from recsys_assets.release import ledger as releases
from recsys_assets.serving.registry import current_promoted
from recsys_assets.serving.served_log import ServedLog, served_log_path

TAGS = {"domain": "monitoring"}
CODE_VERSION = "1"
EVENTS_IN = {"validated_events": dg.AssetIn(), "quarantined_events": dg.AssetIn()}


def monitoring_asset(check: str, description: str, **kwargs):
    """A monitor: group, owner, tags and code version, with one check of the same asset."""

    def decorate(fn):
        return dg.asset(
            name=fn.__name__,
            group_name="monitoring",
            owners=[c.OWNER_DATA],
            tags=TAGS,
            code_version=CODE_VERSION,
            check_specs=[dg.AssetCheckSpec(check, asset=fn.__name__, description=description)],
            **kwargs,
        )(fn)

    return decorate


def reports_dir() -> Path:
    path = get_settings().reports_dir / "monitoring"
    path.mkdir(parents=True, exist_ok=True)
    return path


def serving_model() -> dict[str, Any] | None:
    """The serving model (newest promoted): version, data end and offline figures."""
    champion = current_promoted()
    if champion is None:
        return None
    metadata = champion["metadata"]
    return {
        "version": champion["version"],
        "data_end": metadata.get("data_end"),
        "metrics": metadata.get("metrics", {}),
    }


# Monitor asset -> its check and its signals as the retraining decision names them (triggers;
# data quality is a guard): a monitor that cannot judge marks its signals not judged.
MONITOR_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "data_drift_report": ("data_drift", ("data_drift", "item_mix")),
    "data_quality_report": ("data_quality", ("data_quality",)),
    "prediction_drift_report": ("prediction_drift", ("prediction_drift",)),
    "live_performance": ("performance", ("performance",)),
}
MONITOR_SIGNALS = {name: signals for name, (_, signals) in MONITOR_CHECKS.items()}
NOT_JUDGED_STATUS = "not judged"  # a monitor's metadata "status" when it could not judge


def check_result(
    check: str,
    outcome: str,
    description: str,
    *,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dg.AssetCheckResult:
    """A monitor's check result (always WARN severity) for ``outcome`` (``loop.OUTCOMES``).

    Not judged is reported as ``passed=False`` at WARN severity, with metadata ``outcome:
    not_judged`` and the ``reason``. Dagster's check result is only passed or failed, and passed
    shows green: it says the data was checked and found within bounds, which a monitor with
    nothing to compare cannot say. WARN shows amber, not red, and never blocks (these checks
    are not blocking, nothing downstream waits on them), so an empty window stops nothing; the
    ``outcome`` metadata tells a not-judged check from a real failure for the dashboard, the
    pipeline metrics and whoever reads the check.
    """
    if outcome not in loop.OUTCOMES:
        raise ValueError(f"unknown monitor outcome {outcome!r}; known: {list(loop.OUTCOMES)}")
    extra = {"outcome": outcome, **({"reason": reason} if reason else {}), **(metadata or {})}
    return dg.AssetCheckResult(
        check_name=check,
        passed=outcome == loop.PASSED,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=extra,
    )


def outcome_of(failed: bool, not_judged: dict[str, str]) -> str:
    """Failed when a judged figure is over its threshold, else not judged when any figure could
    not be judged, else passed."""
    if failed:
        return loop.FAILED
    return loop.NOT_JUDGED if not_judged else loop.PASSED


def outcome_metadata(outcome: str, not_judged: dict[str, str]) -> dict[str, Any]:
    """The monitor's outcome for its materialisation: ``outcome``, ``not_judged`` (signal ->
    reason, read by the retraining sensor) and, when not judged, ``reason``."""
    metadata: dict[str, Any] = {
        "outcome": outcome,
        "not_judged": dg.MetadataValue.json(dict(not_judged)),
    }
    if not_judged:
        metadata["reason"] = "; ".join(dict.fromkeys(not_judged.values()))
    return metadata


def skipped(check: str, why: str, **metadata: Any) -> dg.MaterializeResult:
    """A monitor with nothing to compare: says why, and its check is not judged (passed=False,
    WARN, ``outcome: not_judged``; :func:`check_result`), never a pass."""
    signals = next(signals for name, signals in MONITOR_CHECKS.values() if name == check)
    not_judged = dict.fromkeys(signals, why)
    return dg.MaterializeResult(
        metadata={
            "status": NOT_JUDGED_STATUS,
            **outcome_metadata(loop.NOT_JUDGED, not_judged),
            **metadata,
        },
        check_results=[check_result(check, loop.NOT_JUDGED, f"not judged: {why}", reason=why)],
    )


@dataclass(frozen=True)
class Landed:
    """The landed events (typed), their returns, the serving model and the windows to compare
    (None: no model yet, or no data after its data end)."""

    events: pd.DataFrame
    returns: pd.DataFrame
    model: dict[str, Any] | None
    windows: loop.Windows | None

    @classmethod
    def load(cls, validated_events: pd.DataFrame, quarantined_events: pd.DataFrame) -> "Landed":
        events = restore_event_dtypes(validated_events)
        model = serving_model()
        windows = None
        if model is not None and model.get("data_end") and not events.empty:
            settings = get_settings().monitoring
            windows = loop.monitoring_windows(
                events[c.EVENT_TS].max(),
                model["data_end"],
                reference_days=settings.reference_days,
                window_days=settings.window_days,
                purchase_ts=events.loc[events[c.EVENT_TYPE] == c.PURCHASE, c.EVENT_TS],
                min_lines=settings.min_window_lines,
            )
        returns = returns_from_quarantine(restore_event_dtypes(quarantined_events))
        return cls(events, returns, model, windows)

    @property
    def why_not(self) -> str:
        return "no promoted model yet" if self.model is None else "no data since its data end"

    def features(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The ranker's input features of the purchase lines in ``[start, end)``."""
        return monitoring.window_features(self.events, start, end, returns=self.returns)


def _between(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    ts = events[c.EVENT_TS]
    return events.loc[(ts >= start) & (ts < end)]


# Columns left out of the drift comparison: they move with time by construction (totals, ages,
# the calendar of a window shorter than a week), so they would always "drift".
NOT_STATIONARY = (
    "orders_total", "units_total", "revenue_total", "customer_tenure_days", "item_age_days",
    "day_of_week", "hour_of_day",
)  # fmt: skip


@monitoring_asset(
    "data_drift",
    "Share of drifted ranker features and the bought-item mix within their thresholds",
    ins=EVENTS_IN,
    kinds={"evidently"},
)
def data_drift_report(
    validated_events: pd.DataFrame, quarantined_events: pd.DataFrame
) -> dg.MaterializeResult:
    """Evidently data drift of the ranker's input features (per purchase line, point in time)
    between the serving model's reference window and the latest landed days, and the
    Jensen-Shannon distance of the bought items; HTML report under reports/monitoring/."""
    settings = get_settings().monitoring
    landed = Landed.load(validated_events, quarantined_events)
    events, model, windows = landed.events, landed.model, landed.windows
    if windows is None or model is None:
        return skipped("data_drift", landed.why_not)
    reference = landed.features(windows.reference_start, windows.reference_end)
    current = landed.features(windows.current_start, windows.current_end)
    if reference.empty or current.empty:
        return skipped("data_drift", "no purchases in one of the windows", **windows.as_metadata())
    columns = [name for name in reference.columns if name not in NOT_STATIONARY]
    drift = monitoring.data_drift(
        reference,
        current,
        columns=columns,
        max_rows=settings.sample_rows,
        drift_share=settings.drift_share,
    )
    purchases = events.loc[events[c.EVENT_TYPE] == c.PURCHASE]
    mix = monitoring.item_mix_shift(
        _between(purchases, windows.reference_start, windows.reference_end)[c.ITEM_ID],
        _between(purchases, windows.current_start, windows.current_end)[c.ITEM_ID],
    )
    html = reports_dir() / "data_drift.html"
    drift.save_html(html)
    drifted = [name for name, col in drift.columns.items() if col["drifted"]]
    not_judged: dict[str, str] = {}
    if not drift.judged:
        not_judged["data_drift"] = "no drifted share came out of the comparison"
    if not mix.judged:
        not_judged["item_mix"] = str(mix.reason)
    outcome = outcome_of(
        (drift.judged and drift.drifted_share >= settings.drift_share)
        or (mix.judged and mix.excess >= settings.item_mix_distance),
        not_judged,
    )
    share_text = (
        f"{drift.drifted_share:.0%} of features drifted (threshold {settings.drift_share:.0%})"
        if drift.judged
        else f"feature drift not judged: {not_judged['data_drift']}"
    )
    mix_text = (
        f"item mix distance {mix.excess:.3f} (threshold {settings.item_mix_distance})"
        if mix.judged
        else f"item mix not judged: {mix.reason}"
    )
    return dg.MaterializeResult(
        metadata={
            "status": NOT_JUDGED_STATUS if outcome == loop.NOT_JUDGED else "measured",
            **outcome_metadata(outcome, not_judged),
            "model_version": model["version"],
            "drifted_share": float(drift.drifted_share),
            "item_mix_distance": mix.excess,
            "item_mix_js": mix.distance,
            "item_mix_js_expected": mix.expected,
            "item_mix_pvalue": mix.pvalue,
            "drifted_features": dg.MetadataValue.json(drifted),
            "feature_scores": dg.MetadataValue.json(
                {name: round(float(col["score"]), 4) for name, col in drift.columns.items()}
            ),
            "reference_rows": drift.n_reference,
            "current_rows": drift.n_current,
            "latest_data_ts": str(events[c.EVENT_TS].max()),
            "report": dg.MetadataValue.path(str(html)),
            **windows.as_metadata(),
        },
        check_results=[
            check_result(
                "data_drift",
                outcome,
                f"{share_text}, {mix_text}",
                reason="; ".join(not_judged.values()) or None,
                metadata={"drifted_features": dg.MetadataValue.json(drifted)},
            )
        ],
    )


@monitoring_asset(
    "data_quality",
    "Types, ranges and missing values of the latest window within bounds",
    ins=EVENTS_IN,
    kinds={"evidently"},
)
def data_quality_report(
    validated_events: pd.DataFrame, quarantined_events: pd.DataFrame
) -> dg.MaterializeResult:
    """Data quality of the latest window's ranker inputs (Evidently's data summary): a broken
    upstream feed shows here as quality problems, a shift in behaviour only as drift."""
    settings = get_settings().monitoring
    landed = Landed.load(validated_events, quarantined_events)
    windows = landed.windows
    if windows is None:
        return skipped("data_quality", landed.why_not)
    current = landed.features(windows.current_start, windows.current_end)
    if current.empty:
        return skipped("data_quality", "no purchases in the latest window")
    quality = monitoring.data_quality(
        current,
        max_missing_share=settings.max_missing_share,
        missing_ok=monitoring.MISSING_BY_DESIGN,
        max_rows=settings.sample_rows,
    )
    html = reports_dir() / "data_quality.html"
    quality.save_html(html)
    quarantined = restore_event_dtypes(quarantined_events)
    quarantined = _between(quarantined, windows.current_start, windows.current_end)
    outcome = loop.PASSED if quality.ok else loop.FAILED
    return dg.MaterializeResult(
        metadata={
            "status": "measured",
            **outcome_metadata(outcome, {}),
            "problems": dg.MetadataValue.json(list(quality.problems)),
            "rows": len(current),
            "quarantined_rows": len(quarantined),
            "report": dg.MetadataValue.path(str(html)),
            **windows.as_metadata(),
        },
        check_results=[
            check_result("data_quality", outcome, "; ".join(quality.problems) or "no problems")
        ],
    )


def served_lists(model_version: str) -> pd.DataFrame:
    """The serving model's served lists, timed by their feature clock (``as_of``): the wall
    time of a replay or a simulation is not the shopper's time."""
    settings = get_settings()
    served = ServedLog(served_log_path(settings.feedback_log)).read()
    served = served.loc[served["model_version"] == model_version].copy()
    served["ts"] = pd.to_datetime(served["as_of"], utc=True, format="ISO8601")
    return served.sort_values("ts", kind="stable").reset_index(drop=True)


def first_and_latest(
    served: pd.DataFrame, days: float | str, min_lists: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lists of the model's first ``days`` of serving and of the latest ``days``; the
    second is empty while the two would overlap. ``"auto"`` days: the fewest whole days in
    which both hold ``min_lists`` lists (:func:`.loop.served_window_days`)."""
    if served.empty:
        return served, served
    if days == loop.AUTO:
        days = loop.served_window_days(served["ts"], min_lists)
    span = pd.Timedelta(days=float(days))
    first = served.loc[served["ts"] < served["ts"].min() + span]
    latest = served.loc[served["ts"] > served["ts"].max() - span]
    if latest["ts"].min() < first["ts"].max() + pd.Timedelta(seconds=1):
        return first, served.iloc[0:0]
    return first, latest


@monitoring_asset(
    "prediction_drift",
    "Served scores and recommended items close to the model's first days",
    kinds={"bentoml"},
)
def prediction_drift_report() -> dg.MaterializeResult:
    """Distribution of the served scores (KS) and of the recommended items (Jensen-Shannon)
    in the latest ``window_days`` against the serving model's first ``window_days``."""
    settings = get_settings().monitoring
    model = serving_model()
    if model is None:
        return skipped("prediction_drift", "no promoted model yet")
    reference, current = first_and_latest(
        served_lists(model["version"]), settings.window_days, settings.min_lists
    )
    if reference.empty or current.empty:
        return skipped(
            "prediction_drift",
            "not enough serving history: the first and the latest window overlap",
            lists=len(reference),
        )
    drift = monitoring.prediction_drift(
        reference,
        current,
        k=c.DEFAULT_K,
        score_threshold=settings.score_ks,
        item_threshold=settings.served_item_distance,
    )
    figures = {
        "score_ks": float(drift.ks_statistic),
        "score_ks_pvalue": float(drift.ks_pvalue),
        "score_wasserstein_normed": float(drift.wasserstein_normed),
        "served_item_distance": float(drift.js_distance),
        "reference_fallback_rate": float(drift.fallback_rate_reference),
        "current_fallback_rate": float(drift.fallback_rate_current),
    }
    not_judged = {} if drift.judged else {"prediction_drift": str(drift.reason)}
    outcome = outcome_of(drift.drifted, not_judged)
    description = (
        f"served scores KS {figures['score_ks']:.3f} (threshold {settings.score_ks}), "
        f"recommended items JS {figures['served_item_distance']:.3f} "
        f"(threshold {settings.served_item_distance})"
    )
    if outcome == loop.NOT_JUDGED:
        description = f"not judged: {drift.reason} ({description})"
    return dg.MaterializeResult(
        metadata={
            "status": NOT_JUDGED_STATUS if outcome == loop.NOT_JUDGED else "measured",
            **outcome_metadata(outcome, not_judged),
            "model_version": model["version"],
            **figures,
            "reference_lists": drift.n_reference,
            "current_lists": drift.n_current,
        },
        check_results=[check_result("prediction_drift", outcome, description, reason=drift.reason)],
    )


@monitoring_asset(
    "performance",
    "Live hit rate of served lists not fallen too far below the model's first days",
    ins={"validated_events": dg.AssetIn()},
)
def live_performance(validated_events: pd.DataFrame) -> dg.MaterializeResult:
    """Delayed ground truth: the share of served lists followed by a purchase of a listed item
    within ``label_horizon_days``, latest days against the model's first days (the offline
    hit rate is shown beside it, but is not comparable: other horizon, other customers)."""
    settings = get_settings().monitoring
    model = serving_model()
    if model is None:
        return skipped("performance", "no promoted model yet")
    events = restore_event_dtypes(validated_events)
    purchases = events.loc[events[c.EVENT_TYPE] == c.PURCHASE, [c.USER_ID, c.ITEM_ID, c.EVENT_TS]]
    served = served_lists(model["version"])
    if not purchases.empty:  # lists whose horizon has passed on the landed data
        horizon_end = purchases[c.EVENT_TS].max().tz_localize("UTC")
        served = served.loc[
            served["ts"] + pd.Timedelta(days=settings.label_horizon_days) <= horizon_end
        ]
    reference, current = first_and_latest(served, settings.window_days, settings.min_lists)
    if reference.empty or current.empty:
        return skipped(
            "performance", "not enough scored lists: the first and latest window overlap"
        )
    kwargs = {"k": c.DEFAULT_K, "horizon_days": settings.label_horizon_days}
    before = monitoring.delayed_performance(reference, purchases, **kwargs)
    now = monitoring.delayed_performance(current, purchases, **kwargs)
    # among lists whose customer bought anything in the horizon: how often a listed item
    drop = monitoring.performance_drop(
        now["hit_rate_with_purchase"], before["hit_rate_with_purchase"]
    )
    scored = int(now["lists_with_purchase"])
    why = None
    if not before["judged"]:
        why = f"the model's first days: {before['reason']}"
    elif not now["judged"]:
        why = f"the latest days: {now['reason']}"
    elif not drop.judged:
        why = f"hit rate drop: {drop.reason}"
    elif scored < settings.min_lists:  # too few to tell a drop from chance
        why = f"{scored} lists with a purchase, at least {settings.min_lists} needed"
    not_judged = {} if why is None else {"performance": why}
    outcome = outcome_of(why is None and drop.drop >= settings.performance_drop, not_judged)
    description = (
        f"hit rate {now['hit_rate_with_purchase']:.3f} vs "
        f"{before['hit_rate_with_purchase']:.3f} in the model's first days: {drop.drop:+.0%} "
        f"drop (threshold {settings.performance_drop:.0%}, {scored} lists with a purchase, at "
        f"least {settings.min_lists} needed)"
    )
    if why is not None:
        description = f"not judged: {why} ({description})"
    return dg.MaterializeResult(
        metadata={
            "status": NOT_JUDGED_STATUS if outcome == loop.NOT_JUDGED else "measured",
            **outcome_metadata(outcome, not_judged),
            "model_version": model["version"],
            "hit_rate": float(now["hit_rate_with_purchase"]),
            "reference_hit_rate": float(before["hit_rate_with_purchase"]),
            "offline_hit_rate": float(model["metrics"].get("hit_rate", np.nan)),
            "hit_rate_all_lists": float(now["hit_rate"]),
            "performance_drop": float(drop.drop),
            "scored_lists": scored,
            "reference_lists": int(before["lists_with_purchase"]),
            "precision": float(now["precision"]),
        },
        check_results=[check_result("performance", outcome, description, reason=why)],
    )


MONITORS = (data_drift_report, data_quality_report, prediction_drift_report, live_performance)


@dg.asset(
    group_name="monitoring",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    code_version=CODE_VERSION,
    deps=[m.key for m in MONITORS],
)
def mlops_kpis() -> dg.MaterializeResult:
    """MTTD (first drifted data landed -> detection), MTTR (detection -> the retrained model
    serving) and deployment velocity (training finished -> serving), from the loop's event log,
    with every incident and release as history; from the release ledger, the share of releases
    rolled back and the velocity to prod (training finished -> released in prod, from every
    environment's loop log); JSON under reports/monitoring/."""
    figures = loop.kpis(loop.LoopLog(get_settings().loop_log).read())
    figures["releases_ledger"] = releases.release_kpis(
        releases.read_ledger(), releases.loop_events_of_every_environment()
    )
    path = reports_dir() / "kpis.json"
    path.write_text(json.dumps(figures, indent=2, default=str))

    def seconds(block: dict[str, Any], key: str) -> float:
        value = block[key]
        return float("nan") if value is None else round(float(value), 1)

    history = pd.DataFrame(figures["history"])
    columns = ["detected", "triggers", "evaluations", "mttd_s", "mttr_s", "deployment_s",
               "model_version"]  # fmt: skip
    rollback = figures["releases_ledger"]["rollback"]
    to_prod = figures["releases_ledger"]["velocity"]
    return dg.MaterializeResult(
        metadata={
            "incidents": figures["incidents"],
            "open_incidents": figures["open_incidents"],
            "mttd_mean_s": seconds(figures["mttd"], "mean_s"),
            "mttd_latest_s": seconds(figures["mttd"], "latest_s"),
            "evaluations_to_detect": dg.MetadataValue.json(figures["evaluations_to_detect"]),
            "mttr_mean_s": seconds(figures["mttr"], "mean_s"),
            "mttr_latest_s": seconds(figures["mttr"], "latest_s"),
            "deployment_mean_s": seconds(figures["deployment"], "mean_s"),
            "deployments": figures["deployments"],
            "history": dg.MetadataValue.md(
                history[columns].to_markdown(index=False) if len(history) else "no incident yet"
            ),
            "releases": rollback["releases"],
            "releases_rolled_back": rollback["rolled_back"],
            "rolled_back_share": float("nan") if rollback["share"] is None else rollback["share"],
            "velocity_to_prod_mean_s": seconds(to_prod, "mean_s"),
            "prod_releases": to_prod["count"],
            "path": dg.MetadataValue.path(str(path)),
        }
    )
