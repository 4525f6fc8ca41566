"""The quality gate in real ``release_job`` runs on the example shop: its paired comparison on
per-customer NDCG decides the promotion, the check says which rule decided and why, and a
refused challenger is never promoted.

Each test copies the stores of the README's demo on the example shop (59 evaluated customers),
records a champion in the copy's BentoML store and runs ``release_job`` there in a subprocess
(BentoML reads ``BENTOML_HOME`` once per process). The challenger is the model the demo chose
on the validation period again, so its per-customer NDCG is known before the run: the
``selected_model`` the demo stored. The champion is the demo's serving model under a new
version, with figures recorded as stated in each test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_assets.core import pickles
from recsys_assets.defs.serving.assets import quality_gate
from recsys_assets.monitoring import loop
from recsys_assets.serving.registry import current_promoted
from tests.conftest import PROJECT_ROOT
from tests.integration.support import cli_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Records the champion the spec describes (the current one under a new version, its metadata
# updated), then runs release_job and writes what the run did to a JSON file.
_RECORD_AND_RELEASE = """
import dataclasses, json, sys
from pathlib import Path
import bentoml
from recsys_assets.runs import prepare_dagster_home, run_job
from recsys_assets.serving.registry import current_promoted, load_promoted, save_promoted

spec = json.loads(Path(sys.argv[1]).read_text())
entry = current_promoted()
stored = bentoml.models.get(entry["tag"])
model = load_promoted(stored.path, dict(stored.info.metadata))
metadata = {k: v for k, v in entry["metadata"].items() if k not in ("sha256", "size_bytes")}
metadata["lineage"] = {**metadata["lineage"], **spec["lineage"]}
metadata["metrics"] = {**metadata["metrics"], **spec["metrics"]}
if "per_user_ndcg" in spec:
    metadata["per_user_ndcg"] = spec["per_user_ndcg"]
save_promoted(dataclasses.replace(model, version=spec["version"]), metadata=metadata)
prepare_dagster_home()
ok, meta, error = run_job("release_job")
Path(sys.argv[2]).write_text(json.dumps({"ok": ok, "meta": meta, "error": error}, default=str))
"""


@pytest.fixture
def shop(example_shop_demo, tmp_path):
    """A copy of the demo's stores: (environment for the command line, workdir)."""
    demo, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    workdir = shutil.copytree(demo, tmp_path / "shop")
    env = {
        **cli_env(workdir),
        "RECSYS_DATA_CONFIG": str(PROJECT_ROOT / "data" / "sources" / "example_shop.yaml"),
        "RECSYS_RELEASE_LEDGER": str(workdir / "releases" / "ledger.jsonl"),
    }
    return env, workdir


def challenger_per_user(workdir: Path) -> dict[str, float]:
    """The per-customer NDCG of the model the demo chose: the challenger's in every run."""
    with (workdir / "models" / "selected_model").open("rb") as handle:
        return pickles.load(handle).trained.metrics["per_user_ndcg"]


def record_and_release(env: dict[str, str], workdir: Path, spec: dict) -> dict:
    (workdir / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-c", _RECORD_AND_RELEASE, str(workdir / "spec.json"),
         str(workdir / "run.json")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((workdir / "run.json").read_text())


def relative(ours: dict[str, float], theirs: dict[str, float]) -> float:
    users = sorted(ours)
    return sum(ours[u] for u in users) / sum(theirs[u] for u in users) - 1.0


def test_the_demo_recorded_the_per_customer_figures_of_its_promoted_model(shop):
    """What promoted_model saved in the demo's run: the next gate's pairs."""
    _, workdir = shop
    champion = current_promoted(home=workdir / "bentoml")
    assert champion["metadata"]["per_user_ndcg"] == pytest.approx(challenger_per_user(workdir))
    assert len(champion["metadata"]["per_user_ndcg"]) == 59


def test_a_challenger_worse_beyond_noise_is_refused_and_not_promoted(shop):
    """The champion is recorded on the same split (same training data) with per-customer NDCG
    0.2 higher than the challenger's on every customer (at most 1): worse on every pair, so
    every bootstrap resample says so. The point rule would refuse it as well; the check must
    show that the paired rule did, with its figures."""
    assert next(iter(quality_gate.check_specs)).blocking  # what keeps promoted_model from running
    env, workdir = shop
    ours = challenger_per_user(workdir)
    theirs = {u: min(1.0, v + 0.2) for u, v in ours.items()}
    expected = relative(ours, theirs)  # about -0.41
    run = record_and_release(env, workdir, {
        "version": "better-champion", "lineage": {}, "per_user_ndcg": theirs,
        "metrics": {"ndcg": float(np.mean(list(theirs.values())))},
    })  # fmt: skip

    gate = run["meta"]["check:quality_gate"]
    assert not run["ok"] and not gate["passed"]
    assert gate["champion_basis"] == "recorded, same split"
    (reason,) = gate["reasons"]
    assert reason.startswith(f"ndcg is {expected:+.1%} against the champion on the same 59 ")
    assert reason.endswith("worse than -2% beyond doubt")
    assert gate["ndcg_rule"] == "paired"
    assert gate["ndcg_rule_why"] == "both carry per-customer NDCG on the same 59 customers"
    paired = gate["paired"]
    assert paired == gate["figures"]["paired"]
    assert paired["n_users"] == 59 and paired["n_resamples"] == 1000
    assert paired["relative"] == pytest.approx(expected, abs=1e-4)
    assert paired["low"] <= paired["relative"] <= paired["high"] < -0.02
    # Blocked: nothing downstream of the check ran, the champion stays.
    assert "challenger_model" in run["meta"]
    assert "promoted_model" not in run["meta"] and "bento" not in run["meta"]
    assert current_promoted(home=workdir / "bentoml")["version"] == "better-champion"
    (refused,) = loop.LoopLog(env["RECSYS_LOOP_LOG"]).read([loop.GATE_REFUSED])
    assert refused["reasons"] == [reason]


def test_a_challenger_within_the_noise_passes_where_the_point_rule_refused(shop):
    """The champion is recorded on the same split with the challenger's own per-customer NDCG
    moved one customer along (as good a model, right on other customers) and one customer the
    challenger missed found (0 -> 1): 1/59 more NDCG on average, the challenger 6% worse in
    point figures. On 59 customers that is well within chance: the paired interval reaches
    above -2%, so it passes, while the point rule (floor 0.98 x the champion's NDCG) refused
    it."""
    env, workdir = shop
    ours = challenger_per_user(workdir)
    users = sorted(ours)
    theirs = {u: ours[users[(i + 1) % len(users)]] for i, u in enumerate(users)}
    missed = next(u for u in users if theirs[u] == 0.0)
    theirs[missed] = 1.0
    champion_ndcg = float(np.mean(list(theirs.values())))
    challenger_ndcg = float(np.mean(list(ours.values())))
    assert challenger_ndcg < 0.98 * champion_ndcg  # the point rule's refusal
    run = record_and_release(env, workdir, {
        "version": "lucky-champion", "lineage": {}, "per_user_ndcg": theirs,
        "metrics": {"ndcg": champion_ndcg},
    })  # fmt: skip

    gate = run["meta"]["check:quality_gate"]
    assert gate["reasons"] == [], gate["reasons"]
    assert gate["ndcg_rule"] == "paired" and gate["champion_basis"] == "recorded, same split"
    paired = gate["paired"]
    assert paired["n_users"] == 59
    assert paired["relative"] == pytest.approx(relative(ours, theirs), abs=1e-4)  # about -0.06
    assert paired["low"] < -0.02 < paired["high"]
    assert run["ok"], run["error"]
    challenger = run["meta"]["challenger_model"]["model_version"]
    assert run["meta"]["promoted_model"]["tag"] == f"recsys-ranker:{challenger}"
    assert "bento" in run["meta"]


def test_a_champion_from_other_data_is_paired_on_this_split(shop):
    """The champion is recorded on other training data (NDCG 0.9 there), so its booster is
    re-evaluated on the challenger's split: it is the demo's booster, so on the same 59
    customers it scores what the challenger scores, and the paired rule decides on them."""
    env, workdir = shop
    run = record_and_release(env, workdir, {
        "version": "older-champion", "lineage": {"train_data_version": "other-data"},
        "metrics": {"ndcg": 0.9},
    })  # fmt: skip

    gate = run["meta"]["check:quality_gate"]
    assert gate["champion_basis"] == "re-evaluated on this split"
    # the demo's own booster: it scores on this split what the challenger scored
    ours = challenger_per_user(workdir)
    assert gate["figures"]["champion_ndcg"] == pytest.approx(np.mean(list(ours.values())), abs=1e-9)
    paired = gate["figures"].get("paired")  # the re-evaluated champion's per-customer figures
    assert paired is not None and paired["n_users"] == 59
    assert paired["relative"] == pytest.approx(0.0, abs=1e-9)
    assert gate["ndcg_rule"] == "paired"
    assert run["ok"] and gate["reasons"] == []
