"""The operations dashboard: one HTML page on how the recommender and its loop are doing.

Pure (no Dagster): :func:`dashboard_figures` gathers, from what the ``ops_dashboard`` asset
reads, the model in service (newest promoted version, its NDCG and p99 latency), the releases,
refusals and rollbacks over time (the loop log), the models awaiting a release manager (a prod
candidate, a clean canary the analyser may not promote), the drift signals of every retraining
decision against their thresholds, MTTD / MTTR / deployment time
(:func:`recsys_assets.monitoring.loop.kpis`),
the traffic per day by model version and variant with its fallback rate (the served log) and the
latest result of every monitor. :func:`write_dashboard` writes them as a self-contained page
(plotly.js inlined, as :func:`recsys_assets.simulation.shoppers.write_report`) that a product
manager can read: plain headings, units, and a sentence where there is nothing to show yet.

Times: loop events (decisions, releases) are on the wall clock; served requests are counted per
day of their feature clock (``as_of``), as the monitors time them, so a replay or a simulation
shows the shopper's days.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.core.html import escape, figures_html, page, table
from recsys_assets.core.jsonable import json_safe
from recsys_assets.monitoring import loop, timeline

# Loop events shown on the releases timeline, with their plain label.
TIMELINE_ROWS = 60  # the newest timeline entries the page lists

RELEASE_KINDS = {
    loop.PROMOTED: "promoted (passed the quality gate)",
    loop.SERVING: "serving (the service answers with it)",
    loop.GATE_REFUSED: "refused by the quality gate",
    loop.CANARY_DECISION: "canary decision",
    loop.CANARY_PROMOTED: "promoted by the canary (every customer)",
    loop.AWAITING_APPROVAL: "awaiting a release manager",
    loop.ROLLED_BACK: "rolled back",
}
# What ends a wait for approval: the model promoted, released or rolled back, or (for a
# canary's challenger) another canary started.
_APPROVAL_ENDS = (loop.PROMOTED, loop.CANARY_PROMOTED, loop.RELEASED, loop.ROLLED_BACK)

# Drift signals of a ``decision`` event -> (the threshold's name in its values, plain label).
DRIFT_SIGNALS = {
    "data_drift_share": ("drift_share", "Share of drifted shopper features"),
    "item_mix_distance": ("item_mix_distance", "Shift in the mix of items bought"),
    "score_ks": ("score_ks", "Shift in the served scores (KS)"),
    "served_item_distance": ("served_item_distance", "Shift in the recommended items"),
    "performance_drop": ("performance_drop", "Relative drop of the live hit rate"),
}

# The monitoring assets, in page order: name -> (what it watches, headline metadata keys).
MONITORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "data_drift_report": (
        "Did shoppers' behaviour change since the model was trained?",
        ("drifted_share", "item_mix_distance", "model_version", "latest_data_ts"),
    ),
    "data_quality_report": (
        "Is the incoming data feed healthy?",
        ("problems", "rows", "quarantined_rows"),
    ),
    "prediction_drift_report": (
        "Do the served recommendations look like the model's first days?",
        ("score_ks", "served_item_distance", "current_fallback_rate", "model_version"),
    ),
    "live_performance": (
        "Do shoppers still buy what we recommend?",
        ("hit_rate", "reference_hit_rate", "performance_drop", "scored_lists"),
    ),
    "mlops_kpis": (
        "How fast the loop detects drift and recovers",
        ("incidents", "open_incidents", "mttd_mean_s", "mttr_mean_s", "deployment_mean_s"),
    ),
    "ab_test_report": (
        "A/B test of the challenger on average order value",
        ("verdict", "aov_lift", "p_value", "srm_mismatch", "champion", "challenger"),
    ),
    "canary_report": (
        "Canary: wait, roll back, widen or promote the challenger?",
        ("action", "current_share", "next_share", "challenger_tag"),
    ),
}

NO_VARIANT = "none"  # served without an A/B variant

# A monitor's outcome (its metadata "outcome") -> the status the page shows.
OUTCOME_STATUS = {loop.PASSED: "ok", loop.FAILED: "over threshold", loop.NOT_JUDGED: "not judged"}


def dashboard_figures(
    loop_events: Sequence[Mapping[str, Any]],
    promoted: Sequence[Mapping[str, Any]],
    served: pd.DataFrame | None,
    monitors: Mapping[str, Mapping[str, Any] | None],
    *,
    environment: str = "",
    generated_at: str | None = None,
    timeline_entries: Sequence[Mapping[str, Any]] = (),
    environments: Sequence[Mapping[str, Any]] = (),
    release_kpis: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the page shows, JSON-serialisable.

    ``loop_events``: the loop log (:meth:`LoopLog.read`); ``promoted``: the registry's promoted
    versions (:func:`~recsys_assets.serving.registry.promoted_versions`, any order);
    ``served``: the served log (:meth:`ServedLog.read`, may be empty or None); ``monitors``:
    monitoring asset name -> its latest materialisation metadata as plain values (None or
    missing: not run yet); ``timeline_entries``:
    :func:`~recsys_assets.monitoring.timeline.timeline`'s
    entries as dictionaries (the newest :data:`TIMELINE_ROWS` are shown); ``environments``: the
    release in service per environment (``environment``, ``model_version``, ``bento_tag``,
    ``released_at``, ``released_by``), in pipeline order; ``release_kpis``:
    :func:`~recsys_assets.release.ledger.release_kpis` (share rolled back, velocity to prod).
    """
    events = sorted((dict(e) for e in loop_events if e.get("ts")), key=lambda e: _ts(e["ts"]))
    figures = loop.kpis(events)
    return _json_safe(
        {
            "environment": environment,
            "generated_at": generated_at or loop.now_utc(),
            "loop_events": len(events),
            "current_model": current_model(promoted),
            "releases": releases(events),
            "awaiting_approval": awaiting_approval(events),
            "drift": drift_history(events),
            "thresholds": latest_thresholds(events),
            "kpis": {k: v for k, v in figures.items() if k not in ("history", "releases")},
            "incidents": figures["history"],
            "deployments": figures["releases"],
            "traffic": traffic(served),
            "monitors": monitor_results(monitors),
            "canary_incidents": [
                {**asdict(i), "mttd_s": i.mttd_s, "mttr_s": i.mttr_s}
                for i in timeline.canary_incidents(events)
            ],
            "timeline": [dict(e) for e in timeline_entries][-TIMELINE_ROWS:],
            "environments": [dict(e) for e in environments],
            "release_kpis": dict(release_kpis or {}),
        }
    )


def current_model(promoted: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest promoted version (the one the service loads) and its headline figures."""
    if not promoted:
        return None
    newest = max(
        promoted,
        key=lambda p: str(p.get("created") or (p.get("metadata") or {}).get("promoted_at") or ""),
    )
    metadata = dict(newest.get("metadata") or {})
    metrics = metadata.get("metrics") or {}
    latency = metadata.get("latency") or {}
    return {
        "version": newest.get("version"),
        "tag": newest.get("tag"),
        "promoted_at": metadata.get("promoted_at") or newest.get("created"),
        "ndcg": _number(metrics.get("ndcg")),
        "hit_rate": _number(metrics.get("hit_rate")),
        "latency_p99_ms": _number(latency.get("p99_ms")),
        "data_end": metadata.get("data_end"),
        "environment": (newest.get("labels") or {}).get("environment"),
        "promoted_versions": len(promoted),
    }


def awaiting_approval(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The models that still wait for a release manager, oldest first: the newest
    ``awaiting_approval`` event of each model version (a prod candidate of the pipeline, or a
    clean canary's challenger where the analyser may not promote) that nothing has ended since
    (the version promoted, released or rolled back; for a challenger, another canary started).
    Each with ``ts``, ``model_version``, ``challenger_tag`` (None for a candidate), ``share``,
    ``reason`` (the policy's deny) and ``approve_with`` (the command, when the event names it)."""
    waiting: dict[str, dict[str, Any]] = {}
    for event in events:
        kind, version = event.get("kind"), event.get("model_version")
        if kind == loop.AWAITING_APPROVAL and version:
            waiting[str(version)] = {
                "ts": event["ts"],
                "model_version": str(version),
                "challenger_tag": event.get("challenger_tag"),
                "share": event.get("share"),
                "reason": event.get("reason"),
                "approve_with": event.get("approve_with"),
            }
        elif kind in _APPROVAL_ENDS and version:
            waiting.pop(str(version), None)
        elif kind == loop.CANARY_STARTED:  # a new experiment: the old challenger is not served
            for key in [k for k, w in waiting.items() if w["challenger_tag"]]:
                del waiting[key]
    return sorted(waiting.values(), key=lambda w: _ts(w["ts"]))


def releases(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Promotions, first serving, gate refusals, canary decisions and rollbacks, oldest first."""
    rows = []
    for event in events:
        kind = event.get("kind")
        if kind not in RELEASE_KINDS:
            continue
        if kind == loop.GATE_REFUSED:
            detail = "; ".join(map(str, event.get("reasons") or []))
        elif kind == loop.CANARY_DECISION:
            share = f"share {_fmt(event.get('current_share'))} -> {_fmt(event.get('next_share'))}"
            reasons = "; ".join(map(str, event.get("reasons") or []))
            detail = f"{event.get('action', '?')} ({share})" + (f": {reasons}" if reasons else "")
        elif kind == loop.ROLLED_BACK:
            detail = "; ".join(map(str, event.get("reasons") or [event.get("reason") or ""]))
        elif kind == loop.AWAITING_APPROVAL:
            detail = str(event.get("reason") or "")
            if event.get("approve_with"):
                detail += f"; a release manager approves with `{event['approve_with']}`"
        elif kind == loop.CANARY_PROMOTED:
            detail = f"by {event.get('by') or 'the canary analyser'}"
            detail += f"; {event['release']}" if event.get("release") else ""
        else:
            detail = str(event.get("tag") or event.get("bento") or "")
        version = event.get("model_version") or event.get("challenger_tag")
        rows.append({"ts": event["ts"], "kind": kind, "model_version": version, "detail": detail})
    return rows


def drift_history(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every retraining decision: its drift signals and thresholds, fired or not, and the
    signals it could not judge (``not_judged``: signal -> reason), oldest first."""
    rows = []
    for event in events:
        if event.get("kind") != loop.DECISION:
            continue
        values = event.get("values") or {}
        thresholds = values.get("thresholds") or {}
        row = {
            "ts": event["ts"],
            "fire": bool(event.get("fire")),
            "triggers": list(event.get("triggers") or []),
            "reason": event.get("reason"),
            "not_judged": dict(event.get("not_judged") or {}),
            "latest_data_ts": values.get("latest_data_ts"),
            "model_version": values.get("model_version"),
        }
        for signal, (threshold, _) in DRIFT_SIGNALS.items():
            row[signal] = _number(values.get(signal))
            row[f"{signal}_threshold"] = _number(thresholds.get(threshold))
        rows.append(row)
    return rows


def latest_thresholds(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The thresholds of the newest decision (the environment's settings when it was taken)."""
    for event in reversed(events):
        if event.get("kind") == loop.DECISION:
            return dict((event.get("values") or {}).get("thresholds") or {})
    return {}


def traffic(served: pd.DataFrame | None) -> dict[str, Any]:
    """Requests and fallback rate per day (feature clock), by model version and variant."""
    if served is None or served.empty:
        return {"requests": 0, "fallbacks": 0, "daily": [], "by_version": [], "reasons": {}}
    frame = pd.DataFrame(
        {
            "day": _days(served),
            "model_version": served["model_version"].astype("object").fillna("unknown"),
            "variant": served.get("variant", pd.Series(index=served.index, dtype="object"))
            .astype("object")
            .fillna(NO_VARIANT),
            "fallback": served["fallback_reason"].notna().to_numpy(),
            # in-service time of each request (older lines, from before the field: NaN)
            "latency_ms": pd.to_numeric(
                served.get("latency_ms", pd.Series(index=served.index, dtype="float64")),
                errors="coerce",
            ).to_numpy(),
        }
    )

    def summarise(keys: list[str]) -> list[dict[str, Any]]:
        groups = frame.groupby(keys, sort=True)
        grouped = groups["fallback"].agg(["size", "sum"]).reset_index()
        grouped = grouped.rename(columns={"size": "requests", "sum": "fallbacks"})
        grouped["fallback_rate"] = grouped["fallbacks"] / grouped["requests"]
        latency = groups["latency_ms"]
        grouped["latency_p50_ms"] = latency.quantile(0.5).to_numpy()
        grouped["latency_p99_ms"] = latency.quantile(0.99).to_numpy()
        return grouped.to_dict("records")

    reasons = served["fallback_reason"].dropna().astype(str).value_counts()
    return {
        "requests": len(frame),
        "fallbacks": int(frame["fallback"].sum()),
        "daily": summarise(["day"]),
        "by_version": summarise(["day", "model_version", "variant"]),
        "reasons": {str(k): int(v) for k, v in reasons.items()},
    }


def _days(served: pd.DataFrame) -> pd.Series:
    """The day of each request on its feature clock (``as_of``), else when it was served."""
    wall = pd.to_datetime(served["ts"], utc=True, errors="coerce")
    if "as_of" in served:
        clock = pd.to_datetime(served["as_of"], utc=True, errors="coerce", format="ISO8601")
        wall = clock.fillna(wall)
    return wall.dt.strftime("%Y-%m-%d")


def monitor_results(monitors: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per monitoring asset (the known ones first, in page order): whether it ran, its
    status and its headline figures (every plain figure for an asset not known here).

    A monitor that records its ``outcome`` (``loop.OUTCOMES``) shows it as the status: "ok",
    "over threshold" or "not judged" (then ``reason`` says why: nothing to compare is unknown,
    not ok); other assets show their own ``status`` metadata ("measured" without one)."""
    names = list(MONITORS) + sorted(set(monitors) - set(MONITORS))
    rows = []
    for name in names:
        question, keys = MONITORS.get(name, ("", ()))
        metadata = monitors.get(name)
        if metadata is None:
            rows.append(
                {
                    "asset": name,
                    "question": question,
                    "ran": False,
                    "status": "not run yet",
                    "materialized_at": None,
                    "figures": {},
                }
            )
            continue
        metadata = dict(metadata)
        if not keys:
            keys = tuple(
                k
                for k, v in metadata.items()
                if _scalar(v) and k not in ("materialized_at", "outcome", "reason")
            )
        outcome = metadata.get("outcome") if isinstance(metadata.get("outcome"), str) else None
        rows.append(
            {
                "asset": name,
                "question": question,
                "ran": True,
                "status": OUTCOME_STATUS.get(outcome) or str(metadata.get("status") or "measured"),
                "outcome": outcome,
                "reason": metadata.get("reason") if outcome == loop.NOT_JUDGED else None,
                "materialized_at": metadata.get("materialized_at"),
                "figures": {k: metadata[k] for k in keys if k in metadata and k != "status"},
            }
        )
    return rows


# --- The page ---------------------------------------------------------------------------------

GLOSSARY = (
    (
        "MTTD (mean time to detect)",
        "from the moment drifted data landed to the retraining decision that noticed it",
    ),
    ("MTTR (mean time to recover)", "from that decision to the retrained model answering requests"),
    ("Deployment time", "from a model's training finishing to it answering requests"),
    (
        "Fallback",
        "a request answered without the model (e.g. an unknown customer gets popular "
        "items); a rising fallback rate means fewer shoppers get personal recommendations",
    ),
    (
        f"NDCG@{c.DEFAULT_K}",
        "offline ranking quality on held-out purchases, 0 to 1, higher is better",
    ),
    (
        "Latency p99",
        "99 of 100 recommendation requests are answered within this time (measured before release)",
    ),
    ("Threshold", "the value of a drift signal from which the loop retrains the model"),
)


def write_dashboard(figures: Mapping[str, Any], path: str | Path, *, title: str) -> Path:
    """The dashboard as one self-contained HTML page (plotly.js inlined) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sections = [
        _summary(figures),
        _model_section(figures.get("current_model")),
        _environment_section(figures.get("environments") or []),
        _approval_section(figures.get("awaiting_approval") or []),
        _kpi_section(figures),
        _canary_section(figures.get("canary_incidents") or []),
        _drift_section(figures.get("drift") or []),
        _release_section(figures.get("releases") or []),
        _traffic_section(figures.get("traffic") or {}),
        _monitor_section(figures.get("monitors") or []),
        _timeline_section(figures.get("timeline") or []),
        "<h2>What the words mean</h2><dl>"
        + "".join(f"<dt><b>{escape(a)}</b></dt><dd>{escape(b)}</dd>" for a, b in GLOSSARY)
        + "</dl>",
    ]
    css = (
        "body{max-width:1200px}td,th{text-align:left}"
        ".empty{color:#666;font-style:italic}.alert{color:#b00020}"
    )
    path.write_text(page(title, "".join(sections), plotly=True, css=css), encoding="utf-8")
    return path


def _summary(figures: Mapping[str, Any]) -> str:
    env = figures.get("environment") or "unknown"
    lines = [
        f"Environment: <b>{escape(env)}</b>. "
        f"Generated {escape(_when(figures.get('generated_at')))} (times in UTC)."
    ]
    model = figures.get("current_model")
    requests = (figures.get("traffic") or {}).get("requests", 0)
    if not figures.get("loop_events") and not requests and model is None:
        lines.append(
            "<span class='empty'>Nothing has happened on this installation yet: no model has "
            "been promoted, the loop has logged no event and the service has served no "
            "request.</span>"
        )
    else:
        kpis = figures.get("kpis") or {}
        open_incidents = kpis.get("open_incidents") or 0
        lines.append(
            f"Model in service: <b>{escape(model['version']) if model else 'none yet'}</b>. "
            f"Drift incidents: {kpis.get('incidents', 0)} ({open_incidents} still open). "
            f"Requests served: {requests:,}."
        )
        if open_incidents:
            lines.append(
                "<span class='alert'>A drift incident is open: a retraining was "
                "decided and its model is not serving yet.</span>"
            )
        waiting = figures.get("awaiting_approval") or []
        if waiting:
            names = ", ".join(str(w.get("model_version")) for w in waiting)
            lines.append(
                f"<span class='alert'>Awaiting a release manager: {escape(names)} (see "
                '"Awaiting a release manager" below).</span>'
            )
    return "".join(f"<p>{line}</p>" for line in lines)


def _model_section(model: Mapping[str, Any] | None) -> str:
    head = "<h2>Model in service</h2>"
    if model is None:
        return head + _empty(
            "No model has been promoted yet: the first one comes from the full training pipeline."
        )
    rows = [
        ("Version", model.get("version")),
        ("Promoted at", _when(model.get("promoted_at"))),
        ("Trained on data up to", _when(model.get("data_end"))),
        (
            f"Ranking quality (NDCG@{c.DEFAULT_K}, 0-1, higher is better)",
            _fmt(model.get("ndcg"), 3),
        ),
        ("Hit rate (offline, share of customers)", _pct(model.get("hit_rate"))),
        ("Latency p99 (ms, measured before release)", _fmt(model.get("latency_p99_ms"), 1)),
        ("Versions promoted so far", model.get("promoted_versions")),
    ]
    return head + table(["", "value"], rows)


def _kpi_section(figures: Mapping[str, Any]) -> str:
    kpis = figures.get("kpis") or {}
    head = "<h2>How fast the loop reacts</h2>"
    released = ((figures.get("release_kpis") or {}).get("rollback") or {}).get("releases")
    if not kpis.get("incidents") and not kpis.get("deployments") and not released:
        summary = _empty(
            "No drift incident and no release logged yet, so no MTTD, MTTR or "
            "deployment time to show."
        )
    else:

        def block(name: str) -> dict[str, Any]:
            return kpis.get(name) or {}

        rows = [
            (
                "Drift incidents (still open; refused by the gate)",
                f"{kpis.get('incidents', 0)} ({kpis.get('open_incidents', 0)}; "
                f"{kpis.get('refused_by_gate', 0)})",
            ),
            (
                "MTTD: time to detect (mean / latest)",
                f"{_duration(block('mttd').get('mean_s'))} / "
                f"{_duration(block('mttd').get('latest_s'))}",
            ),
            (
                "MTTR: time to recover (mean / latest)",
                f"{_duration(block('mttr').get('mean_s'))} / "
                f"{_duration(block('mttr').get('latest_s'))}",
            ),
            (
                "Deployment time: trained to serving (mean / latest)",
                f"{_duration(block('deployment').get('mean_s'))} / "
                f"{_duration(block('deployment').get('latest_s'))}",
            ),
            ("Releases that reached the service", kpis.get("deployments", 0)),
            *_release_kpi_rows(figures.get("release_kpis") or {}),
        ]
        summary = table(["", "value"], rows)
    incidents = figures.get("incidents") or []
    if not incidents:
        return head + summary
    plot = _mttr_plot(incidents)
    rows = [
        (
            _when(i.get("detected")),
            ", ".join(i.get("triggers") or []),
            _duration(i.get("mttd_s")),
            _duration(i.get("mttr_s")),
            i.get("model_version") or "",
            "refused by the gate"
            if i.get("refused")
            else ("recovered" if i.get("serving") else "open"),
        )
        for i in incidents
    ]
    return (
        head
        + summary
        + "<h3>Time to recover per incident</h3>"
        + plot
        + table(
            [
                "detected",
                "triggers",
                "time to detect",
                "time to recover",
                "retrained model",
                "outcome",
            ],
            rows,
        )
    )


def _environment_section(rows: list[Mapping[str, Any]]) -> str:
    head = "<h2>Model per environment</h2>"
    if not rows:
        return head + _empty("No release is recorded in any environment yet.")
    return head + table(
        ["environment", "model", "bento", "released", "by"],
        [
            (
                r.get("environment"),
                r.get("model_version") or "none",
                r.get("bento_tag") or "",
                _when(r.get("released_at")),
                r.get("released_by") or "",
            )
            for r in rows
        ],
    )


def _approval_section(rows: list[Mapping[str, Any]]) -> str:
    head = "<h2>Awaiting a release manager</h2>"
    if not rows:
        return head + _empty("No model waits for a release manager's approval.")
    text = (
        "<p>Models the policy lets only a release manager get into this environment (prod): a "
        "candidate that passed the quality gate, or a canary's challenger that is clean at its "
        "last step and keeps its share until someone approves it.</p>"
    )
    return (
        head
        + text
        + table(
            ["since", "model", "canary challenger", "share", "why it waits", "approve with"],
            [
                (
                    _when(r.get("ts")),
                    r.get("model_version") or "",
                    r.get("challenger_tag") or "no (a candidate)",
                    _fmt(r.get("share")) if r.get("share") is not None else "",
                    r.get("reason") or "",
                    r.get("approve_with") or "python -m recsys_assets promote",
                )
                for r in rows
            ],
        )
    )


def _canary_section(incidents: list[Mapping[str, Any]]) -> str:
    head = "<h2>Canary incidents</h2>"
    if not incidents:
        return head + _empty(
            "No challenger has been rolled back by the canary analysis: no canary incident."
        )
    text = (
        "<p>A challenger in a canary that breached a guardrail. Time to detect: from the "
        "challenger going live to the analysis deciding to roll it back; time to recover: from "
        "that decision to the rollback taking effect.</p>"
    )
    return (
        head
        + text
        + table(
            ["challenger", "live since", "detected", "time to detect", "time to recover", "why"],
            [
                (
                    i.get("challenger") or "",
                    _when(i.get("started")),
                    _when(i.get("detected")),
                    _duration(i.get("mttd_s")),
                    _duration(i.get("mttr_s")) if i.get("resolved") else "not resolved",
                    "; ".join(i.get("reasons") or []),
                )
                for i in incidents
            ],
        )
    )


def _timeline_section(entries: list[Mapping[str, Any]]) -> str:
    head = "<h2>Timeline</h2>"
    if not entries:
        return head + _empty("Nothing recorded yet.")
    text = (
        f"<p>The newest {len(entries)} events of the loop, the control plane's and the "
        "service's access decisions and the pipeline's runs, newest first.</p>"
    )
    return (
        head
        + text
        + table(
            ["when", "source", "what", "who", "detail"],
            [
                (
                    e.get("ts", "")[:23].replace("T", " "),
                    e.get("source"),
                    e.get("kind"),
                    e.get("subject") or "",
                    e.get("summary"),
                )
                for e in reversed(entries)
            ],
        )
    )


def _release_kpi_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The release ledger's KPIs as rows: share of releases rolled back, trained -> prod."""
    rollback, velocity = figures.get("rollback") or {}, figures.get("velocity") or {}
    if not rollback.get("releases"):
        return []
    return [
        (
            "Releases rolled back (all environments)",
            f"{rollback.get('rolled_back', 0)} of {rollback['releases']} "
            f"({_pct(rollback.get('share'))})",
        ),
        (
            "Trained to released in prod (mean / latest)",
            f"{_duration(velocity.get('mean_s'))} / {_duration(velocity.get('latest_s'))}",
        ),
    ]


def _drift_section(drift: list[Mapping[str, Any]]) -> str:
    head = "<h2>Drift signals against their thresholds</h2>"
    if not drift:
        return head + _empty(
            "No retraining decision logged yet: the monitors have not measured anything new, "
            "or the retraining sensor has not run."
        )
    fired = [d for d in drift if d.get("fire")]
    text = (
        f"<p>{len(drift)} retraining decisions, {len(fired)} of which retrained the model "
        "(red crosses). A signal above its dashed threshold line triggers a retraining, unless "
        "a guard holds it back (a run in progress, a broken feed, the cooldown).</p>"
    )
    return head + text + _drift_plot(drift)


def _release_section(rows: list[Mapping[str, Any]]) -> str:
    head = "<h2>Releases and rollbacks</h2>"
    if not rows:
        return head + _empty("No model has been promoted, refused or rolled back yet.")
    listing = table(
        ["when", "what happened", "model", "detail"],
        [
            (
                _when(r["ts"]),
                RELEASE_KINDS.get(r["kind"], r["kind"]),
                r.get("model_version") or "",
                r.get("detail") or "",
            )
            for r in rows
        ],
    )
    return head + _release_plot(rows) + listing


def _traffic_section(traffic: Mapping[str, Any]) -> str:
    head = "<h2>Traffic per day</h2>"
    if not traffic.get("requests"):
        return head + _empty(
            "The service has not served any request yet (the served log is empty)."
        )
    rate = traffic["fallbacks"] / traffic["requests"]
    reasons = ", ".join(f"{k}: {v:,}" for k, v in (traffic.get("reasons") or {}).items())
    text = (
        f"<p>{traffic['requests']:,} requests, {_pct(rate)} answered without the model "
        f"(fallback){f' ({escape(reasons)})' if reasons else ''}. Days are the shopper's days "
        "(the clock the recommendations were computed at).</p>"
    )
    rows = [
        (r["day"], r["model_version"], r["variant"], f"{r['requests']:,}", _pct(r["fallback_rate"]),
         _fmt(r.get("latency_p50_ms"), 1), _fmt(r.get("latency_p99_ms"), 1))
        for r in traffic.get("by_version") or []
    ]  # fmt: skip
    header = ["day", "model version", "A/B variant", "requests", "fallback rate",
              "latency p50 (ms)", "latency p99 (ms)"]  # fmt: skip
    return head + text + _traffic_plots(traffic.get("by_version") or []) + table(header, rows)


def _monitor_section(monitors: list[Mapping[str, Any]]) -> str:
    head = "<h2>Latest monitor results</h2>"
    rows = []
    for m in monitors:
        figures = "; ".join(f"{k}: {_figure(k, v)}" for k, v in (m.get("figures") or {}).items())
        status = m["status"]
        if m.get("outcome") == loop.NOT_JUDGED and m.get("reason"):
            status = f"{status}: {m['reason']}"
        rows.append(
            (
                m["asset"],
                m.get("question") or "",
                status,
                _when(m.get("materialized_at")) if m.get("ran") else "",
                figures,
            )
        )
    if not any(m.get("ran") for m in monitors):
        head += _empty("No monitor has run yet (monitoring_job runs when new data lands).")
    unjudged = [m["asset"] for m in monitors if m.get("outcome") == loop.NOT_JUDGED]
    if unjudged:
        head += (
            f"<p class='alert'>Not judged: {escape(', '.join(unjudged))}. These monitors had "
            "nothing to compare (or too little) and could not say whether all is well; their "
            "checks show as warnings, not as passed, and they trigger no retraining.</p>"
        )
    return head + table(["monitor", "question it answers", "status", "last run", "figures"], rows)


# --- Plots ------------------------------------------------------------------------------------


def _drift_plot(drift: list[Mapping[str, Any]]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = [s for s in DRIFT_SIGNALS if any(d.get(s) is not None for d in drift)]
    if not shown:
        return _empty("The decisions carry no measured drift signal yet.")
    figure = make_subplots(
        rows=len(shown),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[DRIFT_SIGNALS[s][1] for s in shown],
    )
    x = [_plot_ts(d["ts"]) for d in drift]
    for row, signal in enumerate(shown, start=1):
        first = row == 1
        figure.add_trace(
            go.Scatter(
                x=x,
                y=[d.get(signal) for d in drift],
                mode="lines+markers",
                name="measured",
                legendgroup="measured",
                showlegend=first,
                line={"color": "#1f77b4"},
                text=[d.get("reason") for d in drift],
                hoverinfo="x+y+text",
            ),
            row=row,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=[d.get(f"{signal}_threshold") for d in drift],
                mode="lines",
                name="threshold",
                legendgroup="threshold",
                showlegend=first,
                line={"dash": "dash", "color": "#ff7f0e"},
            ),
            row=row,
            col=1,
        )
        fired = [d for d in drift if d.get("fire")]
        figure.add_trace(
            go.Scatter(
                x=[_plot_ts(d["ts"]) for d in fired],
                y=[
                    d.get(signal) if d.get(signal) is not None else d.get(f"{signal}_threshold")
                    for d in fired
                ],
                mode="markers",
                name="retraining decided",
                legendgroup="fired",
                showlegend=first,
                marker={"symbol": "x", "size": 12, "color": "#d62728"},
                text=[", ".join(d.get("triggers") or []) for d in fired],
                hoverinfo="x+text",
            ),
            row=row,
            col=1,
        )
    figure.update_layout(
        height=220 * len(shown) + 80,
        xaxis_title=None,
        title="Drift signals at each retraining decision (UTC)",
    )
    return figures_html(figure)


def _release_plot(rows: list[Mapping[str, Any]]) -> str:
    import plotly.graph_objects as go

    figure = go.Figure()
    for kind, label in RELEASE_KINDS.items():
        part = [r for r in rows if r["kind"] == kind]
        if part:
            figure.add_trace(
                go.Scatter(
                    x=[_plot_ts(r["ts"]) for r in part],
                    y=[label] * len(part),
                    mode="markers+text",
                    name=label,
                    text=[r.get("model_version") or "" for r in part],
                    textposition="top center",
                    marker={"size": 12},
                    hovertext=[r.get("detail") or "" for r in part],
                )
            )
    figure.update_layout(
        title="Releases timeline (UTC)", showlegend=False, height=160 + 50 * len(figure.data)
    )
    return figures_html(figure)


def _traffic_plots(rows: list[Mapping[str, Any]]) -> str:
    import plotly.graph_objects as go

    frame = pd.DataFrame(rows)
    by_version = frame.groupby(["day", "model_version"], sort=True)[["requests", "fallbacks"]].sum()
    by_version = by_version.reset_index()
    requests, fallback = go.Figure(), go.Figure()
    for version, part in by_version.groupby("model_version", sort=True):
        requests.add_trace(go.Bar(x=part["day"], y=part["requests"], name=str(version)))
        fallback.add_trace(
            go.Scatter(
                x=part["day"],
                y=part["fallbacks"] / part["requests"] * 100,
                mode="lines+markers",
                name=str(version),
            )
        )
    requests.update_layout(
        barmode="stack",
        title="Requests per day by model version",
        xaxis_title="day",
        yaxis_title="requests",
    )
    fallback.update_layout(
        title="Fallback rate per day by model version",
        xaxis_title="day",
        yaxis_title="% of requests without the model",
    )
    plots = figures_html(requests) + figures_html(fallback)
    if "latency_p99_ms" in frame and frame["latency_p99_ms"].notna().any():
        latency = go.Figure()
        for (version, variant), part in frame.groupby(["model_version", "variant"], sort=True):
            latency.add_trace(
                go.Scatter(
                    x=part["day"],
                    y=part["latency_p99_ms"],
                    mode="lines+markers",
                    name=f"{version} ({variant})",
                )
            )
        latency.update_layout(
            title="Latency p99 per day by model version and variant (in-service time)",
            xaxis_title="day",
            yaxis_title="ms",
        )
        plots += figures_html(latency)
    return plots


def _mttr_plot(incidents: list[Mapping[str, Any]]) -> str:
    import plotly.graph_objects as go

    labels = [f"#{n} {_when(i.get('detected'))}" for n, i in enumerate(incidents, start=1)]
    minutes = [None if i.get("mttr_s") is None else i["mttr_s"] / 60 for i in incidents]
    figure = go.Figure(
        go.Bar(x=labels, y=minutes, text=[_duration(i.get("mttr_s")) for i in incidents])
    )
    figure.update_layout(
        title="Time to recover per incident (open or refused: no bar)",
        xaxis_title="incident (detected at, UTC)",
        yaxis_title="minutes",
    )
    return figures_html(figure)


# --- Formatting -------------------------------------------------------------------------------


def _empty(text: str) -> str:
    return f"<p class='empty'>{escape(text)}</p>"


def _number(value: Any) -> float | None:
    """A finite float, else None (missing, NaN, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, digits: int | None = None) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    return f"{number:.{digits}f}" if digits is not None else f"{number:g}"


def _pct(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.1%}"


def _duration(seconds: Any) -> str:
    """Seconds in the unit a reader takes in at a glance: 24 s, 3.5 min, 2.1 h, 1.5 days."""
    value = _number(seconds)
    if value is None:
        return "n/a"
    if abs(value) < 120:
        return f"{value:.0f} s"
    if abs(value) < 7_200:
        return f"{value / 60:.1f} min"
    if abs(value) < 172_800:
        return f"{value / 3_600:.1f} h"
    return f"{value / 86_400:.1f} days"


def _figure(key: str, value: Any) -> str:
    """A monitor's figure with its unit: seconds as durations, rates and shares as percent."""
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else ("yes" if value else "no")
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "none"
    if key.endswith("_s") and _number(value) is not None:
        return _duration(value)
    if any(part in key for part in ("rate", "share", "drop", "lift")):
        return _pct(value)
    if isinstance(value, float):
        return _fmt(value) if _number(value) is None else f"{value:.4g}"
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:200]
    return str(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, str) and len(value) > 200
    )


def _ts(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _plot_ts(value: Any) -> str:
    """A plotly date axis value: naive UTC, to the millisecond."""
    return _ts(value).tz_localize(None).isoformat(sep=" ", timespec="milliseconds")


def _when(value: Any) -> str:
    """A time for a reader: 2024-03-01 09:30 (UTC); text that is not a time as it is."""
    if value is None or value == "":
        return "n/a"
    try:
        return _ts(value).strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return str(value)


def _json_safe(value: Any) -> Any:
    """JSON-safe: NaN/NA -> None, numpy scalars -> Python, tuples -> lists, times -> ISO."""
    return json_safe(value)
