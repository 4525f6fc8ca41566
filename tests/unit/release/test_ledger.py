"""Release bundles: the ledger and its fold, the environment order, the policy, rollback, KPIs."""

import json
import os

import pandas as pd
import pytest

from recsys_assets.access.control import (
    CANARY_ANALYSER,
    CONTROL_KEYS_VAR,
    OPERATOR_KEY_VAR,
    PIPELINE,
    AccessDenied,
    operator_subject,
)
from recsys_assets.access.policy import Subject
from recsys_assets.release import ledger as rel
from recsys_assets.serving.model import ServingModel
from recsys_assets.serving.registry import (
    CANDIDATE,
    PROMOTED,
    ROLLED_BACK,
    current_promoted,
    model_versions,
    save_promoted,
)
from tests.secret_scan import SECRETS

MANAGER = Subject.human("alice", "release_manager")
SRE = Subject.human("bob", "sre")
MANAGER_KEY = SECRETS["control_release_manager"]
EXPIRED_KEY = SECRETS["control_expired"]
CONTROL_KEYS = (
    f"{MANAGER_KEY}:alice:release_manager;"
    f"{EXPIRED_KEY}:mallory:release_manager:2020-01-01T00:00:00Z"
)
LINEAGE = {
    "feature_service": "ranker_v1",
    "feature_registry_version": "reg-7",
    "train_data_version": "train-abc",
    "ranker_version": "rk-1",
    "code_version": "3",
    "partitions": [
        {
            "partition": "2011-01",
            "raw_events.data_version": "r1",
            "validated_events.data_version": "v1",
        }
    ],
}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A ledger, a loop log (the audit log sits beside it) and a BentoML home per environment."""
    homes = {env: tmp_path / "bentoml" / env for env in rel.ORDER}
    for env, home in homes.items():
        monkeypatch.setenv(rel.HOME_VAR_PREFIX + env.upper(), str(home))
    monkeypatch.setenv(rel.LEDGER_VAR, str(tmp_path / "ledger.jsonl"))
    monkeypatch.setenv("RECSYS_LOOP_LOG", str(tmp_path / "loop" / "events.jsonl"))
    return {"homes": homes, "ledger": tmp_path / "ledger.jsonl",
            "audit": tmp_path / "loop" / "control-audit.jsonl"}  # fmt: skip


def tiny_model(version: str) -> ServingModel:
    return ServingModel(
        version=version, booster=None, features=[], candidates=None, catalogue={}, popular=[],
        popular_by_country={}, data_end=pd.Timestamp("2011-12-01", tz="UTC"),
        metrics={"ndcg": 0.31}, lineage=LINEAGE,
    )  # fmt: skip


def pipeline_release(scratch, version: str, environment: str = "dev") -> dict:
    """What the pipeline does in ``environment``: save, build a bento (a stand-in), record."""
    home = scratch["homes"][environment]
    metadata = {"metrics": {"ndcg": 0.31}, "latency": {"p99_ms": 4.2}, "lineage": LINEAGE,
                "data_end": "2011-12-01", "dagster_run_id": f"run-{version}"}  # fmt: skip
    tag = save_promoted(tiny_model(version), metadata=metadata, home=home)
    bento = home / "bentos" / "recommender" / f"{version}-src1"
    bento.mkdir(parents=True)
    (bento / "bento.yaml").write_text(f"models: [{tag}]\n")
    entry = next(v for v in model_versions(home=home) if v["tag"] == tag)
    return rel.record_release(
        environment=environment, bento_tag=f"recommender:{version}-src1", released_by=PIPELINE,
        reason="passed the gate", **rel.bundle_from_registry(entry),
    )  # fmt: skip


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stages(home) -> dict[str, str]:
    return {v["version"]: v["stage"] for v in model_versions(home=home)}


def test_the_pipeline_release_records_the_whole_bundle_once(scratch):
    first = pipeline_release(scratch, "v1")
    assert first["status"] == rel.CURRENT and first["from_environment"] is None
    assert first["feature_service"] == {"name": "ranker_v1", "version": "reg-7"}
    assert first["data_versions"]["train_data_version"] == "train-abc"
    assert first["data_versions"]["partitions"] == {
        "2011-01": {"raw_events": "r1", "validated_events": "v1"}
    }
    assert first["evaluation"]["dagster_run_id"] == "run-v1"
    assert first["evaluation"]["metrics"] == {"ndcg": 0.31}
    assert first["released_by"] == {"id": "dagster-pipeline", "role": "pipeline", "kind": "service"}
    again = rel.record_release(
        environment="dev", model_tag=first["model_tag"], model_version="v1",
        bento_tag=first["bento_tag"], feature_service={}, data_versions={}, evaluation={},
        released_by=PIPELINE, reason="re-run",
    )  # fmt: skip
    assert again["release_id"] == first["release_id"] and len(lines(scratch["ledger"])) == 1


def test_the_fold_gives_the_newest_release_not_rolled_back():
    def release(rid, env):
        return {"event": rel.RELEASE, "release_id": rid, "environment": env}

    records = [release("a", "dev"), release("b", "dev"), release("c", "test"),
               {"event": rel.ROLLED_BACK, "release_id": "b", "by": {"id": "bob"}, "at": "t",
                "reason": "slow", "to_release_id": "a"}]  # fmt: skip
    folded = {r["release_id"]: r for r in rel.fold(records)}
    assert [folded[k]["status"] for k in "abc"] == [rel.CURRENT, rel.ROLLED_BACK, rel.CURRENT]
    assert folded["b"]["rolled_back"]["reason"] == "slow"


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(scratch):
    first = pipeline_release(scratch, "v1")
    with scratch["ledger"].open("a") as handle:
        handle.write('{"event": "release", "release_id": "torn')  # a crashed writer
    assert [r["release_id"] for r in rel.releases()] == [first["release_id"]]
    second = pipeline_release(scratch, "v2")
    assert [r["release_id"] for r in rel.releases("dev")] == [first["release_id"],
                                                              second["release_id"]]  # fmt: skip


def test_a_release_moves_up_one_environment_with_its_model_and_bento(scratch):
    pipeline_release(scratch, "v1")
    done = rel.promote_release(
        "recsys-ranker:v1", from_env="dev", to_env="test", subject=MANAGER, reason="ok in dev"
    )
    test_home = scratch["homes"]["test"]
    assert done["environment"] == "test" and done["from_environment"] == "dev"
    assert done["bento_tag"] == "recommender:v1-src1"
    assert (test_home / "bentos" / "recommender" / "v1-src1" / "bento.yaml").exists()
    (entry,) = model_versions(home=test_home)
    assert entry["stage"] == PROMOTED and entry["labels"]["environment"] == "test"
    assert entry["labels"]["release_id"] == done["release_id"]
    assert entry["metadata"]["sha256"]  # the model's files and checksum came along
    assert rel.current_release("test")["release_id"] == done["release_id"]
    assert rel.current_release("dev")["model_version"] == "v1"  # dev keeps it
    (audit,) = lines(scratch["audit"])
    assert audit["effect"] == "allow" and audit["subject"] == "alice"
    assert audit["resource"]["environment"] == "test"


@pytest.mark.parametrize(
    ("version", "from_env", "to_env", "message"),
    [
        ("v1", "dev", "acceptance", "cannot promote from dev to acceptance"),
        ("v1", "test", "dev", "cannot promote from test to dev"),
        ("v1", "test", "acceptance", "test has no current release"),
        ("v0", "dev", "test", "only the current release of dev may enter test"),
    ],
)
def test_out_of_order_or_unknown_versions_are_refused_and_write_nothing(
    scratch, version, from_env, to_env, message
):
    pipeline_release(scratch, "v1")
    before, registry = scratch["ledger"].read_text(), stages(scratch["homes"][to_env])
    with pytest.raises(rel.ReleaseError, match=message) as raised:
        rel.promote_release(version, from_env=from_env, to_env=to_env, subject=MANAGER,
                            reason="try")  # fmt: skip
    assert from_env in str(raised.value) and to_env in str(raised.value)
    assert scratch["ledger"].read_text() == before
    assert not scratch["audit"].exists()
    assert stages(scratch["homes"][to_env]) == registry


def _up_to_acceptance(scratch) -> None:
    pipeline_release(scratch, "v1")
    for source, target in (("dev", "test"), ("test", "acceptance")):
        rel.promote_release("v1", from_env=source, to_env=target, subject=PIPELINE, reason="ci")


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("pipeline", "deny-pipeline-release-to-prod"),
        ("unknown key", "unauthenticated"),
        ("expired key", "credential expired"),
    ],
)
def test_prod_refuses_the_pipeline_and_bad_keys_with_an_audit_line_only(scratch, who, reason):
    _up_to_acceptance(scratch)
    subject = {
        "pipeline": PIPELINE,
        "unknown key": operator_subject(
            {CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: "not-a-known-key-at-all"}
        ),
        "expired key": operator_subject(
            {CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: EXPIRED_KEY}
        ),
    }[who]
    ledger, audit_lines = scratch["ledger"].read_text(), len(lines(scratch["audit"]))
    with pytest.raises(AccessDenied) as raised:
        rel.promote_release("v1", from_env="acceptance", to_env="prod", subject=subject,
                            reason="ship it")  # fmt: skip
    assert "prod" in str(raised.value) and EXPIRED_KEY not in str(raised.value)
    entries = lines(scratch["audit"])
    assert len(entries) == audit_lines + 1
    assert entries[-1]["effect"] == "deny" and entries[-1]["resource"]["environment"] == "prod"
    assert reason in entries[-1]["reason"] or entries[-1]["rule_id"] == reason
    assert scratch["ledger"].read_text() == ledger and rel.current_release("prod") is None
    assert not scratch["homes"]["prod"].exists()
    assert all(k not in scratch["audit"].read_text() for k in (MANAGER_KEY, EXPIRED_KEY))


def test_a_release_manager_key_reaches_prod(scratch):
    _up_to_acceptance(scratch)
    manager = operator_subject({CONTROL_KEYS_VAR: CONTROL_KEYS, OPERATOR_KEY_VAR: MANAGER_KEY})
    done = rel.promote_release("v1", from_env="acceptance", to_env="prod", subject=manager,
                               reason="approved")  # fmt: skip
    assert done["released_by"] == {"id": "alice", "role": "release_manager", "kind": "human"}
    assert stages(scratch["homes"]["prod"]) == {"v1": PROMOTED}
    with pytest.raises(rel.ReleaseError, match="already the current release of prod"):
        rel.promote_release("v1", from_env="acceptance", to_env="prod", subject=manager,
                            reason="twice")  # fmt: skip


def test_a_rollback_takes_the_whole_bundle_back(scratch):
    pipeline_release(scratch, "v1")
    first = rel.promote_release("v1", from_env="dev", to_env="test", subject=MANAGER, reason="a")
    pipeline_release(scratch, "v2")
    second = rel.promote_release("v2", from_env="dev", to_env="test", subject=MANAGER, reason="b")
    test_home = scratch["homes"]["test"]
    assert current_promoted(home=test_home)["version"] == "v2"
    with pytest.raises(AccessDenied):  # the pipeline has no rollback rule
        rel.rollback_release("test", subject=PIPELINE, reason="no")
    assert rel.current_release("test")["release_id"] == second["release_id"]
    done = rel.rollback_release("test", subject=SRE, reason="p99 over budget")
    assert done["rolled_back"] == [second["release_id"]] and done["rolled_back_versions"] == ["v2"]
    assert done["to"]["release_id"] == first["release_id"]
    assert done["bento_tag"] == "recommender:v1-src1"  # what should be served now
    assert stages(test_home) == {"v1": PROMOTED, "v2": ROLLED_BACK}
    assert current_promoted(home=test_home)["version"] == "v1"
    assert rel.current_release("test")["release_id"] == first["release_id"]
    (back,) = [r for r in rel.releases("test") if r["status"] == rel.ROLLED_BACK]
    assert back["rolled_back"]["by"]["id"] == "bob"
    assert back["rolled_back"]["reason"] == "p99 over budget"
    assert rel.current_release("dev")["model_version"] == "v2"  # other environments untouched
    ledger, audit = scratch["ledger"].read_text(), scratch["audit"].read_text()
    with pytest.raises(rel.ReleaseError, match="nothing to roll back in test"):
        rel.rollback_release("test", subject=SRE, reason="again")
    with pytest.raises(rel.ReleaseError, match="not a release of test"):
        rel.rollback_release("test", subject=SRE, reason="typo", to_release_id="nope")
    assert scratch["ledger"].read_text() == ledger and scratch["audit"].read_text() == audit


def test_rollback_to_an_earlier_release_takes_back_every_later_one(scratch):
    pipeline_release(scratch, "v1")
    pipeline_release(scratch, "v2")
    pipeline_release(scratch, "v3")
    first = rel.releases("dev")[0]
    done = rel.rollback_release("dev", subject=MANAGER, reason="bad week",
                                to_release_id=first["release_id"])  # fmt: skip
    assert done["rolled_back_versions"] == ["v2", "v3"]
    assert [r["status"] for r in rel.releases("dev")] == [rel.CURRENT, rel.ROLLED_BACK,
                                                          rel.ROLLED_BACK]  # fmt: skip
    assert stages(scratch["homes"]["dev"]) == {"v1": PROMOTED, "v2": ROLLED_BACK,
                                               "v3": ROLLED_BACK}  # fmt: skip


def test_candidates_never_count_as_the_champion(tmp_path):
    home = tmp_path / "bentoml"
    save_promoted(tiny_model("old"), home=home)
    save_promoted(tiny_model("new"), stage=CANDIDATE, home=home)
    assert current_promoted(home=home)["version"] == "old"
    assert stages(home) == {"old": PROMOTED, "new": CANDIDATE}
    save_promoted(tiny_model("old"), stage=CANDIDATE, home=home)  # never demoted
    assert stages(home)["old"] == PROMOTED


def test_each_environment_has_its_own_bentoml_home(tmp_path):
    environ = {"RECSYS_ENV": "test", "BENTOML_HOME": str(tmp_path / "own"),
               "RECSYS_BENTOML_HOME_PROD": str(tmp_path / "prod")}  # fmt: skip
    assert rel.environment_home("test", environ) == tmp_path / "own"
    assert rel.environment_home("prod", environ) == tmp_path / "prod"
    assert rel.environment_home("dev", environ).parts[-3:] == ("data", "bentoml", "dev")
    with pytest.raises(rel.ReleaseError, match="not an environment"):
        rel.environment_home("production", environ)


def test_release_kpis_rollback_share_and_velocity():
    def release(rid, env, version, at):
        return {"event": rel.RELEASE, "release_id": rid, "environment": env,
                "model_version": version, "released_at": at}  # fmt: skip

    records = [
        release("d1", "dev", "m1", "2024-01-01T00:10:00+00:00"),
        release("p1", "prod", "m1", "2024-01-01T02:00:00+00:00"),
        release("d2", "dev", "m2", "2024-01-02T00:10:00+00:00"),
        release("p2", "prod", "m2", "2024-01-02T00:40:00+00:00"),
        {"event": rel.ROLLED_BACK, "release_id": "p2", "by": {"id": "bob"}, "at": "x"},
        release("p3", "prod", "m3", "2024-01-03T00:00:00+00:00"),  # never trained in the logs
    ]
    events = [
        {"ts": "2024-01-01T00:00:00+00:00", "kind": "training_finished", "model_version": "m1"},
        {"ts": "2024-01-01T01:00:00+00:00", "kind": "training_finished", "model_version": "m1"},
        {"ts": "2024-01-02T00:00:00+00:00", "kind": "training_finished", "model_version": "m2"},
        {"ts": "2024-01-02T00:05:00+00:00", "kind": "promoted", "model_version": "m2"},
    ]
    figures = rel.release_kpis(records, events)
    rollback = figures["rollback"]
    assert (rollback["releases"], rollback["rolled_back"]) == (5, 1)
    assert rollback["share"] == pytest.approx(0.2)
    assert rollback["by_environment"]["prod"]["share"] == pytest.approx(1 / 3)
    assert rollback["by_environment"]["dev"] == {"releases": 2, "rolled_back": 0, "share": 0.0}
    assert rollback["by_environment"]["test"]["share"] is None
    velocity = figures["velocity"]
    assert [h["velocity_s"] for h in velocity["history"]] == [7200.0, 2400.0, None]
    assert [h["status"] for h in velocity["history"]] == [rel.SUPERSEDED, rel.ROLLED_BACK,
                                                         rel.CURRENT]  # fmt: skip
    assert velocity["count"] == 2 and velocity["mean_s"] == pytest.approx(4800.0)
    assert velocity["latest_s"] == pytest.approx(2400.0)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_the_pipeline_promotes_below_prod_and_leaves_a_candidate_in_prod(
    scratch, monkeypatch, environment
):
    import functools

    import dagster as dg

    from recsys_assets.defs.serving import assets

    home = scratch["homes"][environment]
    monkeypatch.setenv("RECSYS_ENV", environment)
    monkeypatch.setattr(assets, "save_promoted", functools.partial(save_promoted, home=home))
    monkeypatch.setattr(assets, "model_versions", functools.partial(model_versions, home=home))

    @dg.asset(name="challenger_model")
    def challenger() -> ServingModel:
        return tiny_model("v9")

    run = dg.materialize_to_memory([challenger, assets.promoted_model])
    tag = run.output_for_node("promoted_model")
    (materialization,) = run.asset_materializations_for_node("promoted_model")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    release = assets.release_bundle(tag, "recommender:v9-src")
    events = lines(scratch["audit"].parent / "events.jsonl")
    decisions = [(a["action"], a["effect"]) for a in lines(scratch["audit"])]
    if environment == "prod":
        assert metadata["stage"] == CANDIDATE and metadata["awaiting_approval"]
        assert stages(home) == {"v9": CANDIDATE} and current_promoted(home=home) is None
        assert [e["kind"] for e in events] == ["awaiting_approval"]
        assert "deny-pipeline-release-to-prod" in events[0]["reason"]
        assert release is None and rel.releases() == []
        assert decisions == [("promote", "deny")]
    else:
        assert metadata["stage"] == PROMOTED and stages(home) == {"v9": PROMOTED}
        assert [e["kind"] for e in events] == ["promoted"]
        assert release["released_by"]["id"] == "dagster-pipeline"
        assert rel.current_release("dev")["bento_tag"] == "recommender:v9-src"
        assert decisions == [("promote", "allow"), ("deploy", "allow")]


def test_the_releases_asset_shows_the_ledger_and_changes_nothing(scratch):
    import dagster as dg

    from recsys_assets.defs.release.ledger import release_ledger

    first = pipeline_release(scratch, "v1")
    rel.promote_release("v1", from_env="dev", to_env="test", subject=MANAGER, reason="ok")
    before = scratch["ledger"].read_text()
    run = dg.materialize_to_memory([release_ledger])
    (materialization,) = run.asset_materializations_for_node("releases")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["current_dev"] == first["release_id"] and metadata["current_prod"] == "none"
    assert first["release_id"] in metadata["current"] and "| environment |" in metadata["current"]
    assert metadata["history"].count("\n") == 3  # header, rule, two releases
    assert (metadata["releases"], metadata["rolled_back"]) == (2, 0)
    assert scratch["ledger"].read_text() == before


def test_a_challenger_the_canary_promoted_becomes_the_release_with_its_own_bento(scratch):
    pipeline_release(scratch, "v1", "test")  # the champion, released by the pipeline
    home = scratch["homes"]["test"]
    challenger = save_promoted(tiny_model("v2"), stage=CANDIDATE, home=home)
    for age, source_hash in ((100, "new2"), (200, "old1")):  # two builds: the newest counts
        folder = home / "bentos" / "recommender" / f"v2-{source_hash}"
        folder.mkdir(parents=True)
        os.utime(folder, (1_700_000_000 - age, 1_700_000_000 - age))
    assert rel.bento_built_for("v2", home) == "recommender:v2-new2"
    assert rel.bento_built_for("v3", home) is None

    release = rel.release_canary_winner(
        challenger, "test", released_by=CANARY_ANALYSER, reason="promoted by the canary"
    )
    assert (release["model_version"], release["bento_tag"]) == ("v2", "recommender:v2-new2")
    assert release["released_by"]["id"] == "canary-analyser"
    [current] = [r for r in rel.releases() if r["status"] == rel.CURRENT]
    assert current["release_id"] == release["release_id"]  # the ledger follows the serving
    assert (
        rel.release_canary_winner(
            "recsys-ranker:unknown", "test", released_by=CANARY_ANALYSER, reason="r"
        )
        is None
    )
