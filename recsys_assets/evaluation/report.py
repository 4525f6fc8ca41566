"""Evaluation reports: one JSON of the figures and one self-contained HTML page with plots.

Every number shown comes from `evaluation.protocol.evaluate` (itself built on
`evaluation.metrics`); this
module only arranges and draws them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys_assets.core.html import Raw, escape, figures_html, page, table

HEADLINE = ("ndcg", "map", "recall", "hit_rate", "mrr", "precision", "coverage")
EDGE_METRICS = ("ndcg", "recall", "hit_rate", "mrr")


def _clean(value: Any) -> Any:
    """JSON-safe values: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def build_report(
    models: dict[str, dict[str, Any]],
    *,
    split_description: str,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's figures: per model metrics at K, metric@K curves, segments, robustness.
    ``selection`` is the choice made on the validation period
    (:meth:`~recsys_assets.evaluation.selection.Selection.as_dict`): the model to promote; the
    ``best_model`` is only the best on the test period, reported after that choice."""
    best = max(models, key=lambda name: models[name]["ndcg"]) if models else None
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": split_description,
        "k": next(iter(models.values()))["k"] if models else None,
        "best_model": best,
        "models": models,
    }
    if selection is not None:
        report["selection"] = selection
    return _clean(report)


def headline_table(report: dict[str, Any]) -> str:
    """A plain-text table of the headline figures per model, best first (for the terminal)."""
    k = report["k"]
    names = sorted(report["models"], key=lambda n: -(report["models"][n]["ndcg"] or 0))
    header = f"{'model':<22}" + "".join(f"{m + '@' + str(k):>12}" for m in HEADLINE[:5])
    header += f"{'coverage':>10}{'revenue':>12}"
    lines = [header]
    for name in names:
        m = report["models"][name]
        revenue = (m.get("revenue") or {}).get("total")
        revenue_text = "n/a" if revenue is None else f"{revenue:,.0f}"
        lines.append(
            f"{name:<22}"
            + "".join(f"{m[key]:>12.3f}" for key in HEADLINE[:5])
            + f"{m['coverage']:>10.3f}{revenue_text:>12}"
        )
    return "\n".join(lines)


def write_report(report: dict[str, Any], directory: Path, name: str) -> tuple[Path, Path]:
    """Write <name>.json and <name>.html into directory; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    html_path = directory / f"{name}.html"
    html_path.write_text(render_html(report))
    return json_path, html_path


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (plotly.js inlined, no network needed) with the report's plots."""
    import plotly.graph_objects as go

    models = report["models"]
    names = sorted(models, key=lambda n: -(models[n]["ndcg"] or 0))
    k = report["k"]
    figures = []

    side_by_side = go.Figure(
        [go.Bar(name=metric, x=names, y=[models[n][metric] for n in names]) for metric in HEADLINE]
    )
    side_by_side.update_layout(title=f"Metrics at K={k} per model", barmode="group")
    figures.append(side_by_side)

    curves = go.Figure()
    for name in names:
        points = models[name].get("at_k") or []
        curves.add_trace(
            go.Scatter(x=[p["k"] for p in points], y=[p["ndcg"] for p in points], name=name)
        )
    curves.update_layout(title="NDCG at K", xaxis_title="K", yaxis_title="NDCG")
    figures.append(curves)

    for segment_kind in ("orders", "country"):
        bars = []
        segments = sorted({s for n in names for s in models[n]["segments"].get(segment_kind, {})})
        for segment in segments:
            values = [
                (models[n]["segments"].get(segment_kind, {}).get(segment) or {}).get("ndcg")
                for n in names
            ]
            bars.append(go.Bar(name=segment, x=names, y=values))
        figure = go.Figure(bars)
        figure.update_layout(title=f"NDCG@{k} by segment ({segment_kind})", barmode="group")
        figures.append(figure)

    spread = go.Figure(
        go.Bar(
            x=names,
            y=[models[n]["bootstrap_ndcg"]["mean"] for n in names],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [
                    models[n]["bootstrap_ndcg"]["p95"] - models[n]["bootstrap_ndcg"]["mean"]
                    for n in names
                ],
                "arrayminus": [
                    models[n]["bootstrap_ndcg"]["mean"] - models[n]["bootstrap_ndcg"]["p5"]
                    for n in names
                ],
            },
        )
    )
    spread.update_layout(title=f"NDCG@{k}: bootstrap mean and 5-95% band over customers")
    figures.append(spread)
    figures.extend(_segment_band_figures(models, names, k))

    headline = table(
        ["model", *(f"{m}@{k}" for m in HEADLINE), "revenue proxy"],
        [(n, *(f"{models[n][m]:.3f}" for m in HEADLINE), _revenue_text(models[n])) for n in names],
    )
    body = (
        f"<p>{escape(report['generated_at'])}</p>"
        f"<p><b>Protocol.</b> {escape(report['protocol'])}</p>"
        f"{_selection_html(report.get('selection'), k)}"
        f"<p><b>Best on the test period:</b> {escape(report['best_model'])}</p>{headline}"
        f"{_edge_case_table(models, names, k)}{figures_html(*figures)}"
    )
    return page("Evaluation report", body, plotly=True)


def _selection_html(selection: dict[str, Any] | None, k: Any) -> str:
    """The choice made on the validation period, before any test figure: model, rule, table."""
    if not selection:
        return "<p><b>Model to promote:</b> not recorded in this report</p>"
    judged = "" if selection.get("judged") else " (not judged)"
    rows = [
        (
            name,
            _number(figures.get("ndcg"), ".4f"),
            f"{_number(figures.get('low'), '.4f')} to {_number(figures.get('high'), '.4f')}",
            figures.get("n_users", 0),
            figures.get("reason", ""),
        )
        for name, figures in sorted(
            selection.get("validation", {}).items(), key=lambda kv: -(kv[1].get("ndcg") or 0)
        )
    ]
    validation = table(
        ["model", f"validation NDCG@{k}", "5-95% band", "customers", "not scored because"], rows
    )
    return (
        f"<p><b>Model to promote, chosen on the validation period:</b> "
        f"{escape(selection['chosen'])}{judged}: {escape(selection['rule'])}</p>{validation}"
    )


def _number(value: Any, spec: str = ".3f") -> str:
    """A figure for the page; missing (None, NaN: an empty group) reads ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _segment_band_figures(models: dict[str, Any], names: list[str], k: Any) -> list[Any]:
    """Per segment kind, the bootstrap mean NDCG and its 5-95% band per model and segment.

    Models without ``bootstrap_by_segment`` (older reports) are left out; no figure without any.
    """
    import plotly.graph_objects as go

    having = [n for n in names if models[n].get("bootstrap_by_segment")]
    figures = []
    for segment_kind in ("orders", "country"):
        bands = {n: models[n]["bootstrap_by_segment"].get(segment_kind) or {} for n in having}
        segments = sorted({s for n in having for s in bands[n]})
        if not segments:
            continue
        bars = []
        for segment in segments:
            spreads = [bands[n].get(segment) or {} for n in having]
            mean = [s.get("mean") for s in spreads]
            up = [_gap(s.get("p95"), s.get("mean")) for s in spreads]
            down = [_gap(s.get("mean"), s.get("p5")) for s in spreads]
            hover = [f"n_users={s.get('n_users', 0)}" for s in spreads]
            error = {"type": "data", "symmetric": False, "array": up, "arrayminus": down}
            bars.append(go.Bar(name=segment, x=having, y=mean, error_y=error, hovertext=hover))
        figure = go.Figure(bars)
        figure.update_layout(
            title=f"NDCG@{k} by segment ({segment_kind}): bootstrap mean and 5-95% band",
            barmode="group",
        )
        figures.append(figure)
    return figures


def _gap(high: Any, low: Any) -> float | None:
    if high is None or low is None or math.isnan(high) or math.isnan(low):
        return None
    return high - low


def _edge_case_table(models: dict[str, Any], names: list[str], k: Any) -> str:
    """The edge-case figures (``edge_cases`` of ``evaluate``) as one table; empty without any."""
    rows = [
        (
            name,
            case,
            *(_number(figures.get(m)) for m in EDGE_METRICS),
            _number(figures.get("n_users"), ","),
            _edge_note(case, figures),
        )
        for name in names
        for case, figures in (models[name].get("edge_cases") or {}).items()
    ]
    if not rows:
        return ""
    header = ["model", "group", *(f"{m}@{k}" for m in EDGE_METRICS), "customers", "notes"]
    return "<h2>Edge cases</h2>" + table(header, rows)


def _edge_note(case: str, figures: dict[str, Any]) -> str:
    """The notes cell of an edge case: HTML made of figures and fixed words only."""
    if case == "one_order":
        return "exactly one training order"
    if case == "large_basket":
        return Raw(
            f"&ge; {_number(figures.get('threshold'), ',')} distinct relevant items "
            f"(p{100 * (figures.get('quantile') or 0):.0f}); "
            f"{_number(figures.get('share_of_users'), '.1%')} of customers"
        )
    if case == "unseen_items":
        return (
            "customers with a relevant item not in the training catalogue; unseen share of "
            f"relevant pairs {_number(figures.get('unseen_share'), '.1%')}, recall ceiling "
            f"{_number(figures.get('recall_ceiling'))} (at K "
            f"{_number(figures.get('recall_ceiling_at_k'))})"
        )
    return ""


def _revenue_text(metrics: dict[str, Any]) -> str:
    revenue = metrics.get("revenue") or {}
    if not revenue.get("available", False):
        return "n/a (no prices)"
    return f"{revenue['total']:,.0f}"
