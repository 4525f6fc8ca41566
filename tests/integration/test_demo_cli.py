"""The README's demo command, run as a newcomer would: a subprocess on real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from tests.integration.support import run_cli

pytestmark = pytest.mark.integration


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(tmp_path, *args)


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return _cli(tmp_path, "demo", *args)


def _query(tmp_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_bring_your_own_data_example(example_shop_demo):
    tmp_path, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    assert "example_shop.yaml" in result.stdout
    assert "13,079" in result.stdout  # total raw rows of the example export
    assert _query(
        tmp_path, "select reason, count(*) from events.quarantined_events group by 1"
    ) == [("missing_user", 25)]
    types = dict(
        _query(tmp_path, "select event_type, count(*) from events.validated_events group by 1")
    )
    assert set(types) == {"view", "add_to_cart", "purchase"}
    [(priced,)] = _query(tmp_path, "select count(unit_price) from events.validated_events")
    assert priced == 0  # the export has no prices and none were invented
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    assert "online = offline for" in result.stdout and "(0 mismatches)" in result.stdout
    profile = pd.read_parquet(tmp_path / "feature_repo" / "data" / "customer_profile.parquet")
    assert profile[c.REVENUE_TOTAL].isna().all()  # no prices: no revenue, said as missing
    assert set(profile[c.PRICE_BAND]) == {"unknown"}
    report = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    assert "no prices: revenue metrics unavailable" in report["protocol"]
    assert "last 10%" in report["protocol"]  # 2024 data: the fixed 2011 split date adapts
    assert set(report["models"]) >= {"ranker", "repeat_then_popular", "item_knn", "als"}
    assert not report["models"]["als"]["revenue"]["available"]
    assert (tmp_path / "reports" / "evaluation.html").stat().st_size > 100_000

    lineage = _cli(tmp_path, "lineage", "--partition", "2024-03-01", "--partition", "2024-05-01")
    assert lineage.returncode == 0, lineage.stderr
    march, may = lineage.stdout.splitlines()[1:3]
    assert march.split()[:4] == ["2024-03-01", "6,689", "6,676", "13"]
    assert may.split()[1:4] == ["-", "-", "-"]  # never ingested: the gap shows

    audit = _cli(tmp_path, "audit", "ranker_model")
    assert audit.returncode == 0, audit.stderr
    assert "feature service:  ranker_v2 (registry " in audit.stdout
    # the features the model reads, with the Feast features they come from; no session context
    assert "  orders_total" in audit.stdout and "customer_profile:orders_total" in audit.stdout
    assert "session_context" not in audit.stdout and "hour_of_day" not in audit.stdout
    version = audit.stdout.split("version ", 1)[1].split()[0]
    assert "promoted:         yes, as recsys-ranker:" in audit.stdout  # the release step ran
    assert "2024-03-01" in audit.stdout and "6,676" in audit.stdout  # its input partitions
    mismatch = _cli(tmp_path, "audit", "ranker_model", "--version", "not-" + version)
    assert mismatch.returncode == 2 and f"known versions (newest first): {version}" in (
        mismatch.stderr
    )
    exact = _cli(tmp_path, "audit", "ranker_model", "--version", version)
    assert exact.returncode == 0 and f"version {version}" in exact.stdout


def test_unusable_source_config_is_a_clear_error(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("name: mine\npath: missing.csv\ncolumns: {user_id: u, item_id: i}\n")
    result = _demo(tmp_path, "--data-config", str(config))
    assert result.returncode == 2
    assert "mine.yaml: 'columns' must map the required field(s) ['event_ts']" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)  # a hang guard: the full demo takes 2-6 min on 2 shared cores
def test_full_online_retail_demo(tmp_path):
    result = _demo(tmp_path)
    assert result.returncode == 0, result.stderr
    [(raw,)] = _query(tmp_path, "select count(*) from events.raw_events")
    [(valid,)] = _query(tmp_path, "select count(*) from events.validated_events")
    [(quarantined,)] = _query(tmp_path, "select count(*) from events.quarantined_events")
    assert (raw, valid, quarantined) == (541_909, 391_150, 150_759)
    assert "541,909" in result.stdout and "391,150" in result.stdout
    report = json.loads((tmp_path / "reports" / "evaluation.json").read_text())
    figures = report["models"]
    # The fixed protocol reproduces the reference figures of the simple models.
    assert figures["repeat_then_popular"]["ndcg"] == pytest.approx(0.322, abs=0.005)
    assert figures["item_knn"]["ndcg"] == pytest.approx(0.311, abs=0.005)
    assert figures["als"]["ndcg"] == pytest.approx(0.286, abs=0.005)
    assert figures["repeat_then_popular"]["n_users"] == 1540
    # The production model: the XGBoost ranker clears the project's bar of NDCG@10 >= 0.375
    # (it measured 0.377). The upper bound is a sanity check, not a target: the best variant
    # benchmarked reached 0.382 and the bootstrap p95 is 0.387 (benchmarks/results/ranker.md), so
    # a figure above 0.40 more likely means the features see the test window (a leak) than a
    # better model; find out why before raising it.
    assert 0.375 <= figures["ranker"]["ndcg"] <= 0.40, figures["ranker"]["ndcg"]
    assert report["best_model"] == "ranker"
