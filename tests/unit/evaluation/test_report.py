"""Evaluation reports: figures arranged faithfully, NaN made JSON-safe, HTML self-contained."""

import json
import math

import pytest

from recsys_assets.evaluation.report import build_report, headline_table, write_report


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
    assert "Edge cases" not in html  # an old model dict without the robustness keys renders


def _robust_model(ndcg: float) -> dict:
    nan = math.nan
    band = {"mean": ndcg, "std": 0.01, "p5": ndcg - 0.02, "p95": ndcg + 0.02, "n_users": 4}
    empty_band = {"mean": nan, "std": nan, "p5": nan, "p95": nan, "n_users": 0}
    empty = {"ndcg": nan, "recall": nan, "hit_rate": nan, "mrr": nan, "n_users": 0}
    return {
        **_model(ndcg, 5.0),
        "bootstrap_by_segment": {"orders": {"repeat": band, "one_order": empty_band},
                                 "country": {"uk": band}},
        "edge_cases": {
            "one_order": empty,
            "large_basket": {"ndcg": 0.4, "recall": 0.05, "hit_rate": 0.9, "mrr": 0.5,
                             "n_users": 2, "quantile": 0.95, "threshold": 37,
                             "share_of_users": 0.0625},
            "unseen_items": {**empty, "n_pairs": 10, "n_unseen_pairs": 1, "unseen_share": 0.1,
                             "recall_ceiling": 0.875, "recall_ceiling_at_k": 0.5,
                             "pooled_recall_ceiling": 0.9},
        },
    }  # fmt: skip


def test_report_shows_edge_cases_and_segment_bands_and_stays_json_safe(tmp_path):
    report = build_report(
        {"old": _model(0.2, 1.0), "new": _robust_model(0.3)}, split_description=""
    )
    json.dumps(report, allow_nan=False)
    new = report["models"]["new"]
    assert new["edge_cases"]["one_order"]["ndcg"] is None  # empty group: NaN -> null
    assert new["bootstrap_by_segment"]["orders"]["one_order"]["p5"] is None
    assert new["edge_cases"]["large_basket"]["threshold"] == 37
    _, html_path = write_report(report, tmp_path, "robust")
    html = html_path.read_text()
    assert "<h2>Edge cases</h2>" in html and "large_basket" in html and "unseen_items" in html
    assert "&ge; 37 distinct relevant items (p95); 6.2% of customers" in html
    assert "unseen share of relevant pairs 10.0%, recall ceiling 0.875 (at K 0.500)" in html
    assert "<td>n/a</td>" in html  # the empty one-order group
    assert "by segment (orders): bootstrap mean and 5-95% band" in html


def test_the_page_escapes_what_comes_from_data(tmp_path):
    robust = _robust_model(0.3)
    robust["edge_cases"]["<i>group</i>"] = robust["edge_cases"].pop("one_order")
    selection = {
        "chosen": "<b>x</b>",
        "judged": True,
        "rule": "<em>rule</em>",
        "validation": {"<b>x</b>": {"ndcg": 0.3, "low": 0.2, "high": 0.4, "n_users": 3}},
    }
    report = build_report(
        {"<b>x</b>": robust, "a & b": _model(0.2, 1.0)},
        split_description="<script>s</script>",
        selection=selection,
    )
    _, html_path = write_report(report, tmp_path, "escaped")
    html = html_path.read_text()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html  # model names
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in html and "<td>a &amp; b</td>" in html
    assert "<b>Best on the test period:</b> &lt;b&gt;x&lt;/b&gt;" in html
    assert "<em>rule</em>" not in html and "&lt;em&gt;rule&lt;/em&gt;" in html
    assert "chosen on the validation period:</b> &lt;b&gt;x&lt;/b&gt;: " in html
    assert "<script>s</script>" not in html and "&lt;script&gt;s&lt;/script&gt;" in html
    assert "<td>&lt;i&gt;group&lt;/i&gt;</td>" in html  # edge-case groups
    assert "&ge; 37 distinct relevant items" in html  # the notes' own markup stays
