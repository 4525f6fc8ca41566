"""benchmarks/bench_datasets.py in its small mode, run as a user runs it: a subprocess that runs
the demo on two small datasets (the example shop and the generated grocery export), each on its
own scratch state, and writes the results page and the figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATASETS = ("example_shop", "grocery")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One run of the benchmark on the two datasets: (results, page, stdout)."""
    tmp = tmp_path_factory.mktemp("bench_datasets")
    out, figures = tmp / "datasets.md", tmp / "datasets.json"
    command = [sys.executable, "benchmarks/bench_datasets.py", "--small", "--only", *DATASETS]
    command += ["--workdir", str(tmp / "work"), "--out", str(out), "--json", str(figures)]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(figures.read_text()), out.read_text(), result.stdout


@pytest.mark.timeout(1600)  # a hang guard: two demos take 1.5-4 min on 2 shared cores
def test_each_dataset_ran_through_the_pipeline(bench):
    results, _, _ = bench
    assert [r["name"] for r in results] == list(DATASETS)
    for r in results:
        assert r["status"] == "ok", r.get("error")
        assert r["raw_events"] > 0 and r["raw_events_partitions"] > 0
        assert r["validated_events"] + r["quarantined_events"] == r["raw_events"]
        assert r["wall_s"] > 0 and r["peak_mb"] > 100  # the demo holds pandas, Dagster, Feast
        assert set(r["models"]) >= {"ranker", "popularity", "repeat_then_popular", "item_knn"}
        for name, m in r["models"].items():
            assert math.isfinite(m["ndcg"]), name
            assert m["low"] <= m["ndcg"] <= m["high"], (name, m)
            assert m["n_users"] > 0
        chosen = r.get("chosen") or r["promoted_model"]  # selection.chosen, or today's ranker
        assert chosen in r["models"]
        assert r["gate"]["passed"] or r["gate"]["warnings"]  # no champion: nothing to refuse
        assert r["promoted"]["stage"] == "promoted" and r["promoted_model"] in r["models"]
        assert r["aim"] in ("met", "met within its band", "NOT met")
    example, grocery = results
    assert example["raw_events"] == 13_079 and example["quarantined_events"] == 25
    assert example["quarantine_reasons"] == {"missing_user": 25}
    # the generated grocery export: no order, quantity or price; repeated lines of one member,
    # day and item are quarantined as duplicates
    assert set(grocery["quarantine_reasons"]) == {"duplicate"}
    assert "no prices" in grocery["protocol"]


@pytest.mark.timeout(1600)
def test_the_results_page(bench):
    results, page, stdout = bench
    assert page.startswith("# The pipeline on a matrix of datasets")
    assert "benchmarks/bench_datasets.py --small --only example_shop grocery" in page
    assert "Machine: " in page and "CPUs" in page
    assert "| dataset | status | rows read | quarantined |" in page
    for r in results:
        row = next(line for line in page.splitlines() if line.startswith(f"| {r['name']} |"))
        assert f"{r['raw_events']:,}" in row and r["aim"] in row
        assert f"## {r['name']}: " in page
        assert f"- {r['name']}: **{r['aim']}**" in page  # the aim, one line per dataset
        for name, m in r["models"].items():
            assert (
                f"| {name}" in page and f"{m['ndcg']:.3f} [{m['low']:.3f}, {m['high']:.3f}]" in page
            )
    assert "wrote " in stdout
