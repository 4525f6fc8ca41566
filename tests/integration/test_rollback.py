"""One-command rollback in the registry (BentoML model store), from the command line, by an
operator the control-plane policy allows (an environment with no release in the ledger)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from recsys_assets.core import constants as c
from tests.conftest import PROJECT_ROOT
from tests.integration.support import cli_env
from tests.secret_scan import SECRETS

pytestmark = pytest.mark.slow

SRE_KEY = SECRETS["control_sre"]

# Saves copies of the demo's promoted model under new versions (the store is fixed per process).
_SAVE_VERSIONS = """
import dataclasses, sys
import bentoml
from recsys_assets.serving.registry import load_promoted, save_promoted
stored = bentoml.models.get(sys.argv[1])
model = load_promoted(stored.path, dict(stored.info.metadata))
for suffix in ("-b", "-c"):
    print(save_promoted(dataclasses.replace(model, version=model.version + suffix)))
"""


@pytest.fixture
def store(example_shop_demo, tmp_path):
    """A copy of the demo's store with three promoted versions: (env, first, second, third)."""
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    first = re.search(r"promoted: recsys-ranker:(\w+)", result.stdout).group(1)
    home = shutil.copytree(workdir / "bentoml", tmp_path / "bentoml")
    env = {**cli_env(workdir), "BENTOML_HOME": str(home),
           "RECSYS_LOOP_LOG": str(tmp_path / "loop.jsonl"),
           "RECSYS_RELEASE_LEDGER": str(tmp_path / "ledger.jsonl"),  # no release: registry only
           "RECSYS_CONTROL_KEYS": f"{SRE_KEY}:bob:sre", "RECSYS_OPERATOR_KEY": SRE_KEY}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_VERSIONS, f"{c.SERVING_MODEL_NAME}:{first}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return env, first, first + "-b", first + "-c"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys_assets", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def stages(env: dict[str, str]) -> dict[str, str]:
    listed = cli(env, "models")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[2:]]
    return {row[0]: row[1] for row in rows}


def test_rollback_returns_to_the_previous_version_and_records_it(store, tmp_path):
    env, first, second, third = store
    assert stages(env) == {first: "promoted", second: "promoted", third: "promoted"}
    done = cli(env, "rollback", "--reason", "p99 over budget at peak")
    assert done.returncode == 0, done.stderr
    assert f"champion is {c.SERVING_MODEL_NAME}:{second} again" in done.stdout
    assert stages(env) == {first: "promoted", second: "promoted", third: "rolled_back"}
    (event,) = [json.loads(line) for line in (tmp_path / "loop.jsonl").read_text().splitlines()]
    assert event["kind"] == "rolled_back" and event["model_version"] == second
    assert event["rolled_back"] == [third] and event["reason"] == "p99 over budget at peak"
    assert event["by"] == "bob"
    (audit,) = [json.loads(line) for line in (tmp_path / "control-audit.jsonl").read_text()
                .splitlines()]  # fmt: skip
    assert (audit["subject"], audit["action"], audit["effect"]) == ("bob", "rollback", "allow")


def test_rollback_to_any_earlier_version_then_nothing_left(store):
    env, first, second, third = store
    assert cli(env, "rollback", "--to", first, "--reason", "back to the first").returncode == 0
    assert stages(env) == {first: "promoted", second: "rolled_back", third: "rolled_back"}
    again = cli(env, "rollback", "--reason", "once more")
    assert again.returncode == 2
    assert "is the only promoted version: nothing earlier to roll back to" in again.stderr


def test_rollback_to_an_unknown_version_changes_nothing(store):
    env = store[0]
    done = cli(env, "rollback", "--to", "nope", "--reason", "typo")
    assert done.returncode == 2
    assert "'nope' is not a promoted version" in done.stderr
    assert set(stages(env).values()) == {"promoted"}


def test_rollback_without_a_valid_operator_key_is_denied_and_changes_nothing(store, tmp_path):
    env = {**store[0], "RECSYS_OPERATOR_KEY": "not-a-known-key-at-all"}
    done = cli(env, "rollback", "--reason", "who am I")
    assert done.returncode == 3
    assert "may not rollback in test" in done.stderr and "not-a-known-key" not in done.stderr
    assert set(stages(env).values()) == {"promoted"}
    assert not (tmp_path / "loop.jsonl").exists()
