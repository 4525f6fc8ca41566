"""The Kubernetes manifests under deploy/ agree with the service's constants in every environment.

The manifests are what `kubectl kustomize deploy/overlays/<env>` renders (through
recsys_assets.release.kubernetes), so kubectl must be installed: without it every rendering test
fails with KubectlNotFoundError, which says to install it. Nothing here is skipped.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from recsys_assets.core.constants import (
    BENTO_NAME,
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    SERVICE_PORT,
)
from recsys_assets.release import kubernetes as deploy

ENVIRONMENTS = ("dev", "test", "acceptance", "prod")
WITH_SECRETS = ("acceptance", "prod")
RELEASE_TAG = "20240601-abc123"  # what the release step would set: a model version


@functools.cache
def _rendered(env: str, image_tag: str | None) -> tuple[dict[str, Any], ...]:
    return tuple(deploy.render(env, image_tag=image_tag))


def _render(env: str, image_tag: str | None = None) -> list[dict[str, Any]]:
    """deploy.render(), run once per environment and tag (kubectl takes ~0.3 s); a fresh copy."""
    return copy.deepcopy(list(_rendered(env, image_tag)))


def _check(manifests: list[dict[str, Any]], **overrides: Any) -> list[str]:
    """check() against the project's constants."""
    expected: dict[str, Any] = {
        "port": SERVICE_PORT,
        "liveness": LIVENESS_PATH,
        "readiness": READINESS_PATH,
        "image_name": BENTO_NAME,
        "metrics_path": METRICS_PATH,
    }
    return deploy.check(manifests, **{**expected, **overrides})


def _one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in _container(manifests).get("env", [])}


def test_every_environment_has_an_overlay():
    assert deploy.environments() == sorted(ENVIRONMENTS)
    config_dir = Path(deploy.__file__).resolve().parents[1] / "config" / "environments"
    assert sorted(p.stem for p in config_dir.glob("*.yaml")) == sorted(ENVIRONMENTS)


def test_base_passes_the_checks():
    assert _check(deploy.load_base()) == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlay_passes_the_checks(env):
    manifests = _render(env, image_tag=RELEASE_TAG)
    assert _check(manifests, image_tag=RELEASE_TAG, environment=env) == []
    assert {m["kind"] for m in manifests} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    assert all(m["metadata"]["namespace"] == f"recsys-{env}" for m in manifests)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_port_probes_and_service_agree_with_the_constants(env):
    manifests = _render(env, image_tag=RELEASE_TAG)
    container = _container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": SERVICE_PORT}

    def resolve(port):
        return ports[port] if isinstance(port, str) else port

    assert container["readinessProbe"]["httpGet"]["path"] == READINESS_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == LIVENESS_PATH
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert resolve(container[probe]["httpGet"]["port"]) == SERVICE_PORT, probe
    startup = container["startupProbe"]
    # the model loads in ~20 s: the startup budget must cover it with room to spare
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    (service_port,) = _one(manifests, "Service")["spec"]["ports"]
    assert resolve(service_port["targetPort"]) == SERVICE_PORT
    annotations = _one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert annotations["prometheus.io/port"] == str(SERVICE_PORT)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_image_is_the_bento_with_the_given_tag(env):
    kustomization = deploy.DEPLOY_DIR / "overlays" / env / "kustomization.yaml"
    before = kustomization.read_text()
    image = _container(deploy.render(env, image_tag=RELEASE_TAG))["image"]
    assert image == f"{BENTO_NAME}:{RELEASE_TAG}"
    assert kustomization.read_text() == before  # the tag goes into a throwaway kustomization


def test_untagged_render_keeps_the_overlay_tag():
    assert _container(_render("dev"))["image"] == f"{BENTO_NAME}:latest"
    for env in ("test", "acceptance", "prod"):
        image = _container(_render(env))["image"]
        assert image == f"{BENTO_NAME}:{deploy.PLACEHOLDER_TAG}", env
        # a placeholder tag is never deployable
        assert any("placeholder" in problem for problem in _check(_render(env)))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_recsys_env_is_the_environment(env):
    assert _env(_render(env))[deploy.ENV_VAR] == {"name": deploy.ENV_VAR, "value": env}


@pytest.mark.parametrize("env", WITH_SECRETS)
def test_secrets_come_only_from_the_secret(env):
    env_vars = _env(_render(env))
    for name in deploy.SECRET_ENV_VARS:
        assert "value" not in env_vars[name]
        assert env_vars[name]["valueFrom"]["secretKeyRef"]["name"] == deploy.SECRET_NAME


@pytest.mark.parametrize("env", ("dev", "test"))
def test_local_environments_need_no_secrets(env):
    assert not set(_env(_render(env))) & set(deploy.SECRET_ENV_VARS)


def _literal_secret_values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node] if node.get("name") in deploy.SECRET_ENV_VARS and "value" in node else []
        return found + [hit for value in node.values() for hit in _literal_secret_values(value)]
    if isinstance(node, list):
        return [hit for item in node for hit in _literal_secret_values(item)]
    return []


def test_no_secret_value_anywhere_under_deploy():
    """Neither the files (inline patches included) nor any rendering holds a secret value."""
    for path in sorted(deploy.DEPLOY_DIR.rglob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        inline = [
            patch
            for doc in documents
            if isinstance(doc, dict)
            for entry in doc.get("patches", [])
            if "patch" in entry
            for patch in yaml.safe_load_all(entry["patch"])
        ]
        assert _literal_secret_values(documents + inline) == [], path
        assert not any(isinstance(d, dict) and d.get("kind") == "Secret" for d in documents), path
    for env in ENVIRONMENTS:
        assert _literal_secret_values(_render(env)) == [], env


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_hpa_targets_the_deployment(env):
    manifests = _render(env)
    spec = _one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": _one(manifests, "Deployment")["metadata"]["name"],
    }
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    # the HPA owns the replica count; a fixed one would be reset on every apply
    assert "replicas" not in _one(manifests, "Deployment")["spec"]


def test_replica_bounds_per_environment():
    def bounds(env):
        spec = _one(_render(env), "HorizontalPodAutoscaler")["spec"]
        return spec["minReplicas"], spec["maxReplicas"]

    assert bounds("dev") == (1, 1)
    assert bounds("prod")[0] >= 3
    assert bounds("prod")[0] >= bounds("acceptance")[0] >= bounds("test")[0]


def test_runs_as_non_root_with_resources():
    container = _container(_render("prod"))
    pod_security = _one(_render("prod"), "Deployment")["spec"]["template"]["spec"]
    assert pod_security["securityContext"]["runAsNonRoot"] is True
    assert pod_security["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


# --- check() finds broken manifests -------------------------------------------------------------


@pytest.fixture
def prod_manifests() -> list[dict[str, Any]]:
    return _render("prod", image_tag=RELEASE_TAG)


def _broken(manifests, change) -> list[dict[str, Any]]:
    """A deep copy of the manifests with ``change(copy)`` applied."""
    broken = copy.deepcopy(manifests)
    change(broken)
    return broken


def test_check_reports_a_wrong_container_port(prod_manifests):
    def change(m):
        _container(m)["ports"][0]["containerPort"] = 8080

    problems = _check(_broken(prod_manifests, change), image_tag=RELEASE_TAG)
    assert any("no container port 3000" in p for p in problems)
    # the probes and the Service follow the named port, so they are off too
    assert any("readinessProbe port 'http' resolves to 8080" in p for p in problems)
    assert any("targetPort 'http' resolves to 8080" in p for p in problems)


def test_check_reports_a_wrong_service_target(prod_manifests):
    def change(m):
        _one(m, "Service")["spec"]["ports"][0]["targetPort"] = 8080

    problems = _check(_broken(prod_manifests, change))
    assert problems == ["Service/recommender: targetPort 8080 resolves to 8080, not 3000"]


@pytest.mark.parametrize(
    ("probe", "path"),
    [("readinessProbe", "/healthz"), ("livenessProbe", "/readyz"), ("startupProbe", "/")],
)
def test_check_reports_a_wrong_probe_path(prod_manifests, probe, path):
    def change(m):
        _container(m)[probe]["httpGet"]["path"] = path

    problems = _check(_broken(prod_manifests, change), image_tag=RELEASE_TAG)
    assert len(problems) == 1
    assert f"{probe} path {path!r}" in problems[0]


def test_check_reports_a_missing_probe(prod_manifests):
    def change(m):
        del _container(m)["readinessProbe"]

    assert _check(_broken(prod_manifests, change)) == [
        "Deployment/recommender container 'recommender': no readinessProbe"
    ]


def test_check_reports_a_wrong_image(prod_manifests):
    def change(m):
        _container(m)["image"] = f"other-service:{RELEASE_TAG}"

    problems = _check(_broken(prod_manifests, change))
    assert len(problems) == 1
    assert "no container runs 'recommender'" in problems[0]


def test_check_accepts_a_registry_prefix(prod_manifests):
    def change(m):
        _container(m)["image"] = f"registry.example.com:5000/recsys/{BENTO_NAME}:{RELEASE_TAG}"

    assert _check(_broken(prod_manifests, change), image_tag=RELEASE_TAG) == []


def test_check_reports_a_wrong_tag(prod_manifests):
    problems = _check(prod_manifests, image_tag="another-version")
    assert any(f"image tag {RELEASE_TAG!r} != 'another-version'" in p for p in problems)


def test_check_reports_a_literal_secret(prod_manifests):
    def change(m):
        env_vars = _container(m)["env"]
        (redis,) = [e for e in env_vars if e["name"] == "RECSYS_FEAST_REDIS"]
        redis.pop("valueFrom")
        redis["value"] = "redis.internal:6379"

    problems = _check(_broken(prod_manifests, change))
    assert any("RECSYS_FEAST_REDIS has a literal value" in p for p in problems)


def test_check_reports_a_wrong_environment(prod_manifests):
    problems = _check(prod_manifests, environment="acceptance")
    assert any("RECSYS_ENV is ['prod'], not ['acceptance']" in p for p in problems)


def test_check_reports_bad_hpa(prod_manifests):
    def change(m):
        spec = _one(m, "HorizontalPodAutoscaler")["spec"]
        spec["minReplicas"], spec["maxReplicas"] = 5, 2
        spec["scaleTargetRef"]["name"] = "something-else"

    problems = _check(_broken(prod_manifests, change))
    assert any("minReplicas (5) <= maxReplicas (2)" in p for p in problems)
    assert any("is not a Deployment of these manifests" in p for p in problems)


def test_check_reports_a_service_that_selects_nothing(prod_manifests):
    def change(m):
        _one(m, "Service")["spec"]["selector"] = {"app.kubernetes.io/name": "other"}

    assert _check(_broken(prod_manifests, change)) == [
        "Deployment/recommender: no Service selects its pods"
    ]


def test_check_reports_root_and_missing_limits(prod_manifests):
    def change(m):
        pod = _one(m, "Deployment")["spec"]["template"]["spec"]
        pod["securityContext"].pop("runAsNonRoot")
        del pod["containers"][0]["resources"]["limits"]

    problems = _check(_broken(prod_manifests, change))
    assert any("runAsNonRoot is not set" in p for p in problems)
    assert any("no resources.limits" in p for p in problems)


# --- render() errors -----------------------------------------------------------------------------


def test_render_of_an_unknown_environment_names_the_file():
    with pytest.raises(deploy.DeployConfigError, match=r"unknown environment 'staging'.*staging"):
        deploy.render("staging")


def test_render_rejects_an_invalid_tag():
    with pytest.raises(deploy.DeployConfigError, match="not a valid Docker tag"):
        deploy.render("prod", image_tag="v1/evil")


def test_render_without_kubectl_says_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no kubectl
    with pytest.raises(deploy.KubectlNotFoundError, match="not on PATH: install kubectl"):
        deploy.render("dev")


@pytest.fixture
def deploy_copy(tmp_path) -> Path:
    """A scratch copy of deploy/ to break."""
    return Path(shutil.copytree(deploy.DEPLOY_DIR, tmp_path / "deploy"))


def test_render_names_a_file_with_broken_yaml(deploy_copy):
    broken = deploy_copy / "base" / "service.yaml"
    broken.write_text("kind: Service\nmetadata: [unclosed\n")
    with pytest.raises(deploy.DeployConfigError, match=r"kubectl kustomize .*dev.*service\.yaml"):
        deploy.render("dev", deploy_dir=deploy_copy)


def test_render_reports_what_kustomize_refuses(deploy_copy):
    kustomization = deploy_copy / "overlays" / "dev" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "notAKustomizeField: 1\n")
    refused = r"kubectl kustomize .*dev failed \(exit 1\): .*notAKustomizeField"
    with pytest.raises(deploy.DeployConfigError, match=refused):
        deploy.render("dev", deploy_dir=deploy_copy)


def test_render_reports_a_patch_of_a_missing_resource(deploy_copy):
    kustomization = deploy_copy / "overlays" / "dev" / "kustomization.yaml"
    deployment_patch = "kind: Deployment\n      metadata:\n        name: recommender"
    text = kustomization.read_text()
    assert deployment_patch in text
    kustomization.write_text(text.replace(deployment_patch, deployment_patch[:-11] + "nope"))
    with pytest.raises(deploy.DeployConfigError, match=r"no resource matches .*Deployment.*/nope"):
        deploy.render("dev", deploy_dir=deploy_copy)


def test_render_tags_an_image_the_overlay_moved_to_a_registry(deploy_copy):
    kustomization = deploy_copy / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    moved = "newName: registry.example.com/recsys/recommender\n    newTag: set-by-release"
    kustomization.write_text(text.replace("newTag: set-by-release", moved))
    manifests = deploy.render("prod", image_tag=RELEASE_TAG, deploy_dir=deploy_copy)
    image = _container(manifests)["image"]
    assert image == f"registry.example.com/recsys/recommender:{RELEASE_TAG}"
    assert _check(manifests, image_tag=RELEASE_TAG, environment="prod") == []


def test_split_image():
    assert deploy.split_image("recommender") == ("recommender", None, None)
    assert deploy.split_image("recommender:v1") == ("recommender", "v1", None)
    assert deploy.split_image("host:5000/a/recommender") == ("host:5000/a/recommender", None, None)
    assert deploy.split_image("host:5000/recommender:v1@sha256:ab") == (
        "host:5000/recommender",
        "v1",
        "sha256:ab",
    )
