"""Evaluation reports: figures arranged faithfully, NaN made JSON-safe, HTML self-contained."""

import json
import math

import pytest

from recsys_assets.lib.reports import build_report, headline_table, write_report


def _model(ndcg: float, revenue: float | None) -> dict:
    return {
        "k": 10, "ndcg": ndcg, "map": ndcg / 2, "recall": 0.1, "hit_rate": 0.5, "mrr": 0.3,
        "precision": 0.05, "coverage": 0.2, "n_users": 3,
        "revenue": {"total": revenue if revenue is not None else math.nan,
                    "available": revenue is not None},
        "at_k": [{"k": 5, "ndcg": ndcg - 0.01}, {"k": 10, "ndcg": ndcg}],
        "segments": {"orders": {"repeat": {"ndcg": ndcg}}, "country": {"uk": {"ndcg": ndcg}}},
        "bootstrap_ndcg": {"mean": ndcg, "p5": ndcg - 0.02, "p95": ndcg + 0.02},
    }  # fmt: skip


def test_best_model_and_json_safe_values():
    report = build_report(
        {"a": _model(0.2, 100.0), "b": _model(0.3, None)}, split_description="test split"
    )
    assert report["best_model"] == "b" and report["k"] == 10
    assert report["models"]["b"]["revenue"]["total"] is None  # NaN -> null
    json.dumps(report, allow_nan=False)  # raises if any NaN slipped through


def test_headline_table_orders_by_ndcg_and_says_when_revenue_is_missing():
    report = build_report({"a": _model(0.2, 1234.0), "b": _model(0.3, None)}, split_description="")
    lines = headline_table(report).splitlines()
    assert lines[1].startswith("b") and lines[1].rstrip().endswith("n/a")
    assert lines[2].startswith("a") and "1,234" in lines[2]
    assert "0.300" in lines[1]


def test_written_report_has_json_and_a_self_contained_page(tmp_path):
    report = build_report({"a": _model(0.25, 10.0)}, split_description="protocol text")
    json_path, html_path = write_report(report, tmp_path / "reports", "v1")
    assert json.loads(json_path.read_text())["models"]["a"]["ndcg"] == pytest.approx(0.25)
    html = html_path.read_text()
    assert "protocol text" in html and "NDCG at K" in html
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined: offline
