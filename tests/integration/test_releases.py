"""A release bundle moves dev -> test -> acceptance -> prod from the command line, under the
control-plane policy, and is rolled back in prod: the ledger, the audit log and each
environment's BentoML store tell the same story."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from recsys_assets.access.control import CONTROL_KEYS_VAR, OPERATOR_KEY_VAR, PIPELINE, AccessDenied
from recsys_assets.monitoring import loop
from recsys_assets.release import ledger as rel
from recsys_assets.serving.model import ServingModel
from recsys_assets.serving.registry import (
    PROMOTED,
    ROLLED_BACK,
    load_promoted,
    model_store,
    model_versions,
    save_promoted,
)
from tests.conftest import PROJECT_ROOT
from tests.secret_scan import SECRETS

pytestmark = pytest.mark.slow

MANAGER_KEY = SECRETS["control_release_manager"]
SRE_KEY = SECRETS["control_sre"]
CONTROL_KEYS = f"{MANAGER_KEY}:alice:release_manager;{SRE_KEY}:bob:sre"
TRAINED_AGO = pd.Timedelta(hours=1)  # training finished this long before the model is saved
LINEAGE = {"feature_service": "ranker_v1", "feature_registry_version": "reg-1",
           "train_data_version": "train-1", "ranker_version": "rk-1"}  # fmt: skip


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Scratch stores for every environment, a ledger, a loop log; the same settings for this
    process (which plays the pipeline in dev) and for the command line."""
    settings = {
        rel.LEDGER_VAR: str(tmp_path / "releases" / "ledger.jsonl"),
        "RECSYS_LOOP_LOG": str(tmp_path / "loop" / "events.jsonl"),
        CONTROL_KEYS_VAR: CONTROL_KEYS,
        **{rel.HOME_VAR_PREFIX + env.upper(): str(tmp_path / env) for env in rel.ORDER},
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, **settings, "BENTOML_DO_NOT_TRACK": "true"}
    for name in ("BENTOML_HOME", "RECSYS_MODEL_TAG", OPERATOR_KEY_VAR):
        env.pop(name, None)
    return env, tmp_path


def released_in_dev(version: str) -> None:
    """What release_job does in dev: a promoted model, its bento, the release by the pipeline."""
    home = rel.environment_home("dev")
    model = ServingModel(
        version=version, booster=None, features=[], candidates=None, catalogue={}, popular=[],
        popular_by_country={}, data_end=pd.Timestamp("2011-12-01", tz="UTC"),
        metrics={"ndcg": 0.3}, lineage=LINEAGE,
    )  # fmt: skip
    metadata = {"metrics": {"ndcg": 0.3}, "lineage": LINEAGE, "dagster_run_id": f"run-{version}"}
    tag = save_promoted(model, metadata=metadata, home=home)
    bento = home / "bentos" / "recommender" / f"{version}-src"
    bento.mkdir(parents=True)
    (bento / "bento.yaml").write_text(f"models: [{tag}]\n")
    loop.LoopLog(os.environ["RECSYS_LOOP_LOG"]).append(
        loop.TRAINING_FINISHED,
        model_version=version,
        ts=(pd.Timestamp.now(tz="UTC") - TRAINED_AGO).isoformat(),
    )
    bundle = rel.bundle_from_registry(next(v for v in model_versions(home=home) if v["tag"] == tag))
    rel.record_release(environment="dev", bento_tag=f"recommender:{version}-src",
                       released_by=PIPELINE, reason="passed the gate", **{k: bundle[k] for k in (
                           "model_tag", "model_version", "feature_service", "data_versions",
                           "evaluation")})  # fmt: skip


def cli(env: dict[str, str], *args: str, key: str | None = MANAGER_KEY, in_env: str = "dev"):
    env = {**env, "RECSYS_ENV": in_env, **({OPERATOR_KEY_VAR: key} if key else {})}
    return subprocess.run(
        [sys.executable, "-m", "recsys_assets", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def promote(env, version: str, source: str, target: str, **kwargs):
    return cli(env, "promote", version, "--from", source, "--to", target, "--reason",
               f"{version} good in {source}", **kwargs)  # fmt: skip


def test_a_release_goes_up_to_prod_and_is_rolled_back_there(world):
    env, tmp_path = world
    released_in_dev("v1")
    assert promote(env, "v1", "dev", "test").returncode == 0
    skipped = promote(env, "v1", "test", "prod")
    assert skipped.returncode == 2
    assert "cannot promote from test to prod" in skipped.stderr
    assert promote(env, "v1", "test", "acceptance").returncode == 0
    with pytest.raises(AccessDenied, match="dagster-pipeline may not promote in prod"):
        rel.promote_release("v1", from_env="acceptance", to_env="prod", subject=PIPELINE,
                            reason="the pipeline tries")  # fmt: skip
    nobody = promote(env, "v1", "acceptance", "prod", key="not-a-known-key-at-all")
    assert nobody.returncode == 3 and "nobody" in nobody.stderr
    assert "not-a-known-key-at-all" not in nobody.stderr
    assert model_versions(home=tmp_path / "prod") == []  # the denies changed nothing
    shipped = promote(env, "v1", "acceptance", "prod")
    assert shipped.returncode == 0, shipped.stderr
    assert "released recsys-ranker:v1 from acceptance to prod" in shipped.stdout

    released_in_dev("v2")  # the next model: the pipeline below prod, a person into prod
    for source, target in (("dev", "test"), ("test", "acceptance")):
        rel.promote_release("v2", from_env=source, to_env=target, subject=PIPELINE, reason="ci")
    assert promote(env, "v2", "acceptance", "prod").returncode == 0

    back = cli(env, "rollback", "--reason", "conversion down", key=SRE_KEY, in_env="prod")
    assert back.returncode == 0, back.stderr
    assert "serve its bento: recommender:v1-src" in back.stdout
    again = cli(env, "rollback", "--reason", "once more", key=SRE_KEY, in_env="prod")
    assert again.returncode == 2 and "nothing to roll back in prod" in again.stderr

    # The ledger: v1 serves in prod again, v2 still serves below it.
    listed = cli(env, "releases", "--json", key=None)
    assert listed.returncode == 0, listed.stderr
    ledger = json.loads(listed.stdout)
    current = {row["environment"]: row["model_version"] for row in ledger["current"]}
    assert current == {"dev": "v2", "test": "v2", "acceptance": "v2", "prod": "v1"}
    prod = [r for r in ledger["releases"] if r["environment"] == "prod"]
    assert [(r["model_version"], r["status"]) for r in prod] == [("v1", "current"),
                                                                 ("v2", "rolled_back")]  # fmt: skip
    assert prod[0]["from_environment"] == "acceptance"
    assert prod[0]["released_by"] == {"id": "alice", "role": "release_manager", "kind": "human"}
    assert prod[1]["rolled_back"]["by"]["id"] == "bob"
    assert prod[0]["feature_service"] == {"name": "ranker_v1", "version": "reg-1"}
    assert prod[0]["evaluation"]["dagster_run_id"] == "run-v1"
    kpis = ledger["kpis"]
    assert (kpis["rollback"]["releases"], kpis["rollback"]["rolled_back"]) == (8, 1)
    assert [h["model_version"] for h in kpis["velocity"]["history"]] == ["v1", "v2"]
    assert all(3600 < h["velocity_s"] < 3600 + 600 for h in kpis["velocity"]["history"])
    table = cli(env, "releases", "--env", "prod", key=None)
    assert table.returncode == 0 and "rolled back 1 of 2 releases" in table.stdout

    # The audit log: every decision, no key.
    audit_path = tmp_path / "loop" / "control-audit.jsonl"
    audit = [json.loads(line) for line in audit_path.read_text().splitlines()]
    prod_decisions = [(a["subject"], a["action"], a["effect"]) for a in audit
                      if a["resource"]["environment"] == "prod"]  # fmt: skip
    assert prod_decisions == [
        ("dagster-pipeline", "promote", "deny"), (None, "promote", "deny"),
        ("alice", "promote", "allow"), ("alice", "promote", "allow"),
        ("bob", "rollback", "allow"),
    ]  # fmt: skip
    assert MANAGER_KEY not in audit_path.read_text() and SRE_KEY not in audit_path.read_text()

    # Each environment's store: the models came along with their checksums.
    stages = {env_name: {v["version"]: v["stage"] for v in model_versions(home=tmp_path / env_name)}
              for env_name in rel.ORDER}  # fmt: skip
    assert stages["prod"] == {"v1": PROMOTED, "v2": ROLLED_BACK}
    assert stages["acceptance"] == stages["test"] == {"v1": PROMOTED, "v2": PROMOTED}
    assert (tmp_path / "prod" / "bentos" / "recommender" / "v1-src" / "bento.yaml").exists()
    stored = model_store(tmp_path / "prod").get("recsys-ranker:v1")
    assert load_promoted(stored.path, dict(stored.info.metadata)).version == "v1"
    listed_models = cli(env, "models", key=None, in_env="prod")
    assert listed_models.returncode == 0, listed_models.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listed_models.stdout.splitlines()[2:]}
    assert rows["v2"][0] == ROLLED_BACK and "promoted" in rows["v2"]  # promoted below prod
    events = loop.LoopLog(env["RECSYS_LOOP_LOG"]).read([loop.RELEASED, loop.ROLLED_BACK])
    assert [e["kind"] for e in events] == [loop.RELEASED] * 4 + [loop.ROLLED_BACK]
