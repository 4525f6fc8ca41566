"""The bento the demo built, served by `bentoml serve` on a free port, called over HTTP."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recsys_assets.core import constants as c
from recsys_assets.features.store import STORED_VIEWS, FeatureRepo
from recsys_assets.ingestion.feedback import FeedbackLog, to_canonical_events
from recsys_assets.release.kubernetes import check, render
from recsys_assets.serving.model import FeastOnlineReader, ServingModel
from recsys_assets.serving.registry import load_promoted, model_versions
from recsys_assets.serving.served_log import SERVED_LOG_VAR, ServedLog
from recsys_assets.training.ranker import RAW_FEATURES, Ranker
from tests.conftest import PROJECT_ROOT
from tests.integration.support import cli_env, free_port, served

pytestmark = pytest.mark.integration

BENTOML = str(Path(sys.executable).parent / "bentoml")
SERVICE = "bentos.recommender.service:Recommender"


def _call(port: int, path: str, body: object | bytes | None = None) -> tuple[int, dict | str]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.fixture(scope="module")
def served_log_file(tmp_path_factory) -> Path:
    """Where the served bento writes its served log (RECSYS_SERVED_LOG; made by the service)."""
    return tmp_path_factory.mktemp("served_log") / "logs" / "served.jsonl"


@pytest.fixture(scope="module")
def service(example_shop_demo, served_log_file):
    """The built bento served with the demo's stores: (port, workdir, bento tag)."""
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    bento_tag = re.search(r"bento: (recommender:[\w-]+)", result.stdout).group(1)
    port = free_port()
    command = [BENTOML, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    env = {**cli_env(workdir), SERVED_LOG_VAR: str(served_log_file)}
    with served(command, port, env, workdir / "serve.log"):
        yield port, workdir, bento_tag


def test_recommend_known_and_unknown_customers(service):
    port, workdir, bento_tag = service
    profile = pd.read_parquet(workdir / "feature_repo" / "data" / "customer_profile.parquet")
    customer = str(profile[c.USER_ID].iloc[0])
    status, body = _call(port, "/recommend", {"customer_id": customer, "k": 5})
    assert status == 200, body
    assert not body["fallback"] and len(body["items"]) == 5
    assert bento_tag.split(":")[1].startswith(body["model_version"] + "-")
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and len(body["request_id"]) == 32
    assert all(isinstance(item["name"], str) for item in body["items"])  # export has no names
    first = body["items"][0]["item_id"]
    status, again = _call(port, "/recommend", {"customer_id": customer, "exclude": [first]})
    assert status == 200 and first not in [i["item_id"] for i in again["items"]]

    status, cold = _call(
        port, "/recommend", {"customer_id": "never-seen", "k": 3, "context": {"device": "app"}}
    )
    assert status == 200 and cold["fallback"] and cold["fallback_reason"] == "unknown_customer"
    assert len(cold["items"]) == 3


def test_customer_features_are_the_online_profile_row(service):
    port, workdir, _ = service
    (customer,) = _customers(workdir, 1)
    status, body = _call(port, "/customer_features", {"customer_id": customer})
    assert status == 200, body
    assert body["customer_id"] == customer and body["found"] is True
    assert body["features"] and all(isinstance(k, str) for k in body["features"])
    status, body = _call(port, "/customer_features", {"customer_id": "never-seen"})
    assert status == 200 and body == {"customer_id": "never-seen", "found": False, "features": {}}
    status, body = _call(port, "/customer_features", {"customer_id": "  "})
    assert status == 400 and "customer_id" in str(body)


@dataclasses.dataclass
class _OverServedCandidates(Ranker):
    """The offline ranker (:meth:`Ranker.score`: features from Feast's offline store by the
    point-in-time join, ``derive_features``, the booster on a DMatrix) with the served model's
    booster, over the served model's precomputed candidates."""

    served: ServingModel | None = None

    def candidates(self, users):
        frames = []
        for user in users:
            items, scores = self.served.candidates.lookup(user)
            frame = pd.DataFrame(scores, columns=self.served.candidates.columns)
            frames.append(frame.assign(**{c.USER_ID: user, c.ITEM_ID: items}))
        return pd.concat(frames, ignore_index=True)


def _same(a, b) -> bool:
    """Two feature values equal: both missing (None, NaN), equal strings or close numbers."""

    def missing(value) -> bool:
        return value is None or (not isinstance(value, str) and bool(pd.isna(value)))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def test_served_features_and_scores_are_feasts_and_the_offline_rankers(service):
    """What the service reads and scores, not only its shape: for sampled customers, the
    profile /customer_features returns and what the service's reader reads equal Feast's online
    and offline (point-in-time) values at the end of the materialised range, and /recommend's
    scores at that moment equal the offline ranker's."""
    port, workdir, bento_tag = service
    version = bento_tag.split(":")[1].split("-")[0]
    [stored] = [v for v in model_versions(home=workdir / "bentoml") if v["version"] == version]
    model = load_promoted(stored["path"], stored["metadata"])  # the model the service loaded
    repo = FeatureRepo(workdir / "feature_repo")
    store = repo.store()  # the store the service reads (the test environment's, SQLite)
    end = max(pd.read_parquet(repo.table_path(v))[c.FEATURE_TS].max() for v in STORED_VIEWS)
    end = pd.Timestamp(end).tz_convert("UTC")  # online_features materialised up to here
    known = sorted(model.candidates.offsets)
    customers = [str(u) for u in np.random.default_rng(c.SEED).choice(known, 6, replace=False)]

    profile_refs = [f"customer_profile:{name}" for name in c.CUSTOMER_FEATURES]
    online = store.get_online_features(
        features=profile_refs, entity_rows=[{c.USER_ID: u} for u in customers]
    ).to_df()
    offline = store.get_historical_features(
        entity_df=pd.DataFrame({c.USER_ID: customers, c.FEATURE_TS: end}), features=profile_refs
    ).to_df()
    for customer in customers:
        status, body = _call(port, "/customer_features", {"customer_id": customer})
        assert status == 200 and body["found"], body
        served = body["features"]
        assert set(served) == set(c.CUSTOMER_FEATURES) and served[c.ORDERS_TOTAL] >= 1, served
        sdk = online.loc[online[c.USER_ID] == customer].iloc[0]
        pit = offline.loc[offline[c.USER_ID] == customer].iloc[0]
        for name in c.CUSTOMER_FEATURES:
            assert _same(served[name], sdk[name]), (customer, name, served[name], sdk[name])
            assert _same(served[name], pit[name]), (customer, name, served[name], pit[name])

    offline_ranker = _OverServedCandidates(
        config=model.ranker_config,
        generators={},
        tables={},
        booster=model.booster,
        features=list(model.features),
        split_ts=end,
        served=model,
    )
    scored = offline_ranker.score(customers, as_of=end, store=store)
    reader = FeastOnlineReader(store, list(model.catalogue))  # the service's reader
    for customer in customers:
        expected = scored.loc[scored[c.USER_ID] == customer].set_index(c.ITEM_ID)
        items, _ = model.candidates.lookup(customer)
        read = reader.read(customer, items, end, model.candidates.bought_mask(customer))
        for name in RAW_FEATURES:  # the reader's values are the offline store's, per candidate
            for item, value in zip(items, read[name], strict=True):
                assert _same(value, expected.at[item, name]), (customer, item, name, value)

        status, body = _call(
            port,
            "/recommend",
            {"customer_id": customer, "k": c.MAX_K, "context": {"timestamp": end.isoformat()}},
        )
        assert status == 200 and not body["fallback"], body
        assert pd.Timestamp(body["as_of"]) == end
        got = {item["item_id"]: item["score"] for item in body["items"]}
        assert len(got) == min(c.MAX_K, len(expected))
        for item, score in got.items():
            assert score == pytest.approx(expected.at[item, c.SCORE], abs=1e-6), (customer, item)
        left_out = expected.loc[~expected.index.isin(list(got)), c.SCORE]
        assert left_out.empty or left_out.max() <= min(got.values()) + 1e-6  # the top k


def test_served_log_holds_one_record_per_successful_request(service, served_log_file):
    port, workdir, _ = service
    log = ServedLog(served_log_file)
    assert served_log_file.exists()  # opened (and created) when the worker started
    before = len(log.read())
    profile = pd.read_parquet(workdir / "feature_repo" / "data" / "customer_profile.parquet")
    customers = [str(customer) for customer in profile[c.USER_ID].iloc[:3]]
    bodies = [
        *({"customer_id": customer, "k": 4} for customer in customers),
        {"customer_id": "never-seen", "k": 2, "context": {"country": "France"}},
        {"customer_id": customers[0], "k": 0},  # refused (400): nothing served, nothing logged
        {"customer_id": customers[1], "exclude_bought_within_days": 30},
    ]
    started = pd.Timestamp.now(tz="UTC")
    answers = []
    for body in bodies:
        status, answer = _call(port, "/recommend", body)
        if body.get("k") != 0:
            assert status == 200, answer
            answers.append(answer)
        else:
            assert status == 400
    finished = pd.Timestamp.now(tz="UTC")

    frame, skipped = log.read_with_report()
    assert skipped == 0
    new = frame.iloc[before:].reset_index(drop=True)
    assert len(new) == len(answers) == 5  # one worker: in the order the requests were answered
    for (_, row), answer in zip(new.iterrows(), answers, strict=True):
        assert row["request_id"] == answer["request_id"]
        assert row["customer_id"] == answer["customer_id"]
        assert row["model_version"] == answer["model_version"]
        assert row["items"] == [item["item_id"] for item in answer["items"]]
        assert row["scores"] == [item["score"] for item in answer["items"]]
        assert row["as_of"] == answer["as_of"]
        assert row["variant"] == answer["variant"] == "champion"  # no challenger configured
        if answer["fallback"]:
            assert row["fallback_reason"] == answer["fallback_reason"]
        else:
            assert pd.isna(row["fallback_reason"])
        assert started <= row["ts"] <= finished
    assert new["fallback_reason"].tolist()[3] == "unknown_customer"
    since = log.read(since=started)
    assert since["request_id"].tolist() == [answer["request_id"] for answer in answers]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "1", "k": 0}, "k"),
        ({"customer_id": "1", "k": c.MAX_K + 1}, "k"),
        ({"customer_id": "1", "k": "ten"}, "k"),
        ({"customer_id": "1", "colour": "red"}, "colour"),
        ({"customer_id": ""}, "customer_id"),
        ({"k": 3}, "customer_id"),
        ({"customer_id": "1", "context": {"timestamp": "yesterday"}}, "timestamp"),
        (b'{"customer_id": ', None),
        (b"[1, 2]", None),
    ],
)
def test_client_errors_are_4xx_naming_the_field(service, body, field):
    port, _, _ = service
    status, answer = _call(port, "/recommend", body)
    assert 400 <= status < 500, answer
    if field is not None:
        assert field in json.dumps(answer["detail"])


def test_feedback_is_appended_durably_and_reads_back_as_events(service):
    port, workdir, _ = service
    events = [
        {"request_id": "r1", "customer_id": "u1", "item_id": "i1", "type": "impression"},
        {"request_id": "r1", "customer_id": "u1", "item_id": "i1", "type": "click"},
        {
            "request_id": "r1", "customer_id": "u1", "item_id": "i1", "type": "purchase",
            "quantity": 2, "unit_price": 3.5, "order_id": "o1", "order_value": 7.0,
        },
    ]  # fmt: skip
    status, body = _call(port, "/feedback", {"events": events})
    assert status == 200 and body == {"accepted": 3}
    status, bad = _call(port, "/feedback", {"events": [{**events[0], "type": "like"}]})
    assert status == 400 and "type" in json.dumps(bad["detail"])
    assert _call(port, "/feedback", {"events": []})[0] == 400
    log = FeedbackLog(workdir / "feedback" / "feedback.jsonl").read()
    assert log["feedback_type"].tolist()[-3:] == ["impression", "click", "purchase"]
    canonical, counts = to_canonical_events(log)
    assert counts["impression"] >= 1 and c.PURCHASE in set(canonical[c.EVENT_TYPE])


def test_health_and_metrics(service):
    port, _, _ = service
    assert _call(port, c.LIVENESS_PATH)[0] == 200
    assert _call(port, c.READINESS_PATH)[0] == 200
    _, metrics = _call(port, c.METRICS_PATH)
    assert "recsys_recommend_latency_seconds_bucket" in metrics
    assert 'recsys_fallbacks_total{reason="unknown_customer",variant="champion"}' in metrics
    assert 'recsys_feedback_events_total{type="purchase"}' in metrics
    assert re.search(r"^recsys_canary_share 0\.0$", metrics, re.MULTILINE), metrics
    assert 'variant="champion"' in metrics and 'variant="challenger"' not in metrics


def test_bento_carries_a_dockerfile_that_the_manifests_agree_with(service):
    _, workdir, bento_tag = service
    name, version = bento_tag.split(":")
    model_version = version.split("-")[0]
    bento_dir = workdir / "bentoml" / "bentos" / name / version
    assert (bento_dir / "env" / "docker" / "Dockerfile").exists()
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["name"] == c.BENTO_NAME
    assert [m["tag"] for m in info["services"][0]["models"]] == [f"recsys-ranker:{model_version}"]
    assert not (bento_dir / "src" / "data").exists()  # the stores never go into a bento
    manifests = render("prod", image_tag=version)
    assert (
        check(
            manifests,
            port=c.SERVICE_PORT,
            liveness=c.LIVENESS_PATH,
            readiness=c.READINESS_PATH,
            image_name=info["name"],
            image_tag=version,
        )
        == []
    )


def test_a_served_log_that_cannot_be_written_never_fails_a_request(example_shop_demo, tmp_path):
    workdir, _ = example_shop_demo
    blocked = tmp_path / "served.jsonl"
    blocked.mkdir()  # a folder where the file should be: every open fails with EISDIR
    env = {**cli_env(workdir), SERVED_LOG_VAR: str(blocked)}
    port = free_port()
    command = [BENTOML, "serve", SERVICE, "--port", str(port)]
    log = tmp_path / "serve.log"
    with served(command, port, env, log):
        for _ in range(3):
            status, answer = _call(port, "/recommend", {"customer_id": "never-seen", "k": 2})
            assert status == 200 and len(answer["items"]) == 2, answer
        _, metrics = _call(port, c.METRICS_PATH)
    # The open in the worker's __init__, then one retry per request; a warning only once.
    errors = re.search(r'recsys_served_log_errors_total\{kind="EISDIR"\} ([\d.]+)', metrics)
    assert errors is not None and float(errors.group(1)) == 4, metrics
    assert log.read_text().count("cannot write (EISDIR") == 1


def test_missing_model_refuses_to_start_with_a_clear_message(example_shop_demo):
    workdir, _ = example_shop_demo
    env = {**cli_env(workdir), "RECSYS_MODEL_TAG": "recsys-ranker:doesnotexist"}
    command = [BENTOML, "serve", SERVICE, "--port", str(free_port())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "recsys-ranker:doesnotexist could not be found" in done.stdout + done.stderr


def test_corrupt_model_is_never_ready(example_shop_demo, tmp_path):
    workdir, _ = example_shop_demo
    home = shutil.copytree(workdir / "bentoml", tmp_path / "bentoml")
    [model_file] = (home / "models" / "recsys-ranker").glob("*/serving_model.pkl")
    model_file.write_bytes(model_file.read_bytes()[:1000])  # a torn copy
    env = {**cli_env(workdir), "BENTOML_HOME": str(home)}
    port = free_port()
    command = [BENTOML, "serve", SERVICE, "--port", str(port)]
    log = tmp_path / "serve.log"
    with served(command, port, env, log, ready=False):
        assert _call(port, c.READINESS_PATH)[0] == 503
        assert _call(port, "/recommend", {"customer_id": "1"})[0] == 503
    assert "not ready: model file" in log.read_text() and "is corrupt" in log.read_text()


# --- Canary: a champion and a challenger in one service ----------------------------------------

# Saves a second promoted model (the champion's content under another version) into the store of
# BENTOML_HOME: run in a subprocess, since BentoML fixes its store when it is first used.
_SAVE_CHALLENGER = """
import dataclasses, sys
import bentoml
from recsys_assets.serving.registry import load_promoted, save_promoted
stored = bentoml.models.get(sys.argv[1])
model = load_promoted(stored.path, dict(stored.info.metadata))
print(save_promoted(dataclasses.replace(model, version=model.version + "-b")))
"""


@pytest.fixture(scope="module")
def canary_store(example_shop_demo, tmp_path_factory):
    """A copy of the demo's BentoML store holding a second promoted model (the challenger):
    (workdir, home, bento tag, champion version, challenger version). A copy, so that the other
    tests' store keeps a single model (``latest``, and the corrupt-model test, rely on it)."""
    workdir, result = example_shop_demo
    assert result.returncode == 0, result.stderr
    bento_tag = re.search(r"bento: (recommender:[\w-]+)", result.stdout).group(1)
    champion = bento_tag.split(":")[1].split("-")[0]
    home = shutil.copytree(workdir / "bentoml", tmp_path_factory.mktemp("canary") / "bentoml")
    env = {**cli_env(workdir), "BENTOML_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_CHALLENGER, f"{c.SERVING_MODEL_NAME}:{champion}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    challenger = done.stdout.strip().splitlines()[-1].split(":")[1]
    assert challenger == champion + "-b"
    return workdir, home, bento_tag, champion, challenger


def _canary_env(workdir: Path, home: Path, champion: str, challenger_tag: str, share: str):
    return {
        **cli_env(workdir),
        "BENTOML_HOME": str(home),
        # pinned: "latest" would now be the challenger, the newest model in this store
        "RECSYS_MODEL_TAG": f"{c.SERVING_MODEL_NAME}:{champion}",
        "RECSYS_CHALLENGER_TAG": challenger_tag,
        "RECSYS_CANARY_SHARE": share,
    }


@pytest.fixture(scope="module")
def canary_service(canary_store, tmp_path_factory):
    """The bento served with a challenger for half the customers:
    (port, workdir, champion version, challenger version, served log, feedback log)."""
    workdir, home, bento_tag, champion, challenger = canary_store
    logs = tmp_path_factory.mktemp("canary_logs")
    env = {
        **_canary_env(workdir, home, champion, f"{c.SERVING_MODEL_NAME}:{challenger}", "0.5"),
        SERVED_LOG_VAR: str(logs / "served.jsonl"),
        "RECSYS_FEEDBACK_LOG": str(logs / "feedback.jsonl"),
    }
    port = free_port()
    command = [BENTOML, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    with served(command, port, env, logs / "serve.log"):
        yield port, workdir, champion, challenger, logs / "served.jsonl", logs / "feedback.jsonl"


def _customers(workdir: Path, n: int) -> list[str]:
    profile = pd.read_parquet(workdir / "feature_repo" / "data" / "customer_profile.parquet")
    return [str(customer) for customer in profile[c.USER_ID].drop_duplicates().iloc[:n]]


def test_canary_routes_each_customer_stickily_to_one_model(canary_service):
    port, workdir, champion, challenger, served_log, _ = canary_service
    version_of = {"champion": champion, "challenger": challenger}
    customers = _customers(workdir, 60)
    assert len(customers) == 60
    answers = []
    for customer in customers:
        status, answer = _call(port, "/recommend", {"customer_id": customer, "k": 3})
        assert status == 200, answer
        assert answer["model_version"] == version_of[answer["variant"]], answer
        answers.append(answer)
    variants = [answer["variant"] for answer in answers]
    assert set(variants) == {"champion", "challenger"}  # P(one-sided) = 2 * 0.5**60
    for customer, first in zip(customers[:5], answers[:5], strict=True):
        for _ in range(5):
            _, again = _call(port, "/recommend", {"customer_id": customer, "k": 3})
            assert (again["variant"], again["model_version"]) == (
                first["variant"],
                first["model_version"],
            )
    log = ServedLog(served_log).read().set_index("request_id")
    for answer in answers:
        row = log.loc[answer["request_id"]]
        assert row["variant"] == answer["variant"]
        assert row["model_version"] == answer["model_version"]
    _, metrics = _call(port, c.METRICS_PATH)
    assert re.search(r"^recsys_canary_share 0\.5$", metrics, re.MULTILINE), metrics
    assert re.search(
        r'recsys_recommend_latency_seconds_count\{[^}]*variant="challenger"[^}]*\} [1-9]', metrics
    ), metrics


def test_canary_feedback_carries_the_variant_the_client_sends(canary_service):
    port, _, champion, challenger, _, feedback_log = canary_service
    base = {"request_id": "r1", "customer_id": "u1", "item_id": "i1", "type": "click"}
    events = [{**base, "variant": "challenger"}, {**base, "variant": "champion"}, base]
    status, body = _call(port, "/feedback", {"events": events})
    assert status == 200 and body == {"accepted": 3}
    assert _call(port, "/feedback", {"events": [{**base, "variant": "treatment"}]})[0] == 400
    log = FeedbackLog(feedback_log).read()
    assert log["variant"].tolist()[-3:] == ["challenger", "champion", pd.NA]
    assert log["model_version"].tolist()[-3:] == [challenger, champion, champion]


def test_a_missing_challenger_is_never_ready(canary_store, tmp_path):
    workdir, home, bento_tag, champion, _ = canary_store
    missing = f"{c.SERVING_MODEL_NAME}:doesnotexist"
    env = {
        **_canary_env(workdir, home, champion, missing, "0.5"),
        SERVED_LOG_VAR: str(tmp_path / "served.jsonl"),
    }
    port = free_port()
    command = [BENTOML, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with served(command, port, env, log, ready=False):  # BentoML starts; the worker is unready
        assert _call(port, c.READINESS_PATH)[0] == 503
        assert _call(port, "/recommend", {"customer_id": "1"})[0] == 503
    text = log.read_text()
    assert f"not ready: challenger model {missing} (RECSYS_CHALLENGER_TAG)" in text, text
