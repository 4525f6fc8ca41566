"""Render the Kubernetes overlays under ``deploy/`` with ``kubectl kustomize``; check the result.

``deploy/base`` holds the Deployment, Service and HorizontalPodAutoscaler of the recommendation
service; ``deploy/overlays/<env>`` adapts them per environment. :func:`render` builds an overlay
with ``kubectl kustomize`` (the kustomize built into kubectl; it works offline, without a
cluster), so what is checked is exactly what ``kubectl apply -k`` would send. kubectl must be on
``PATH``; without it :class:`KubectlNotFoundError` says to install it, and an overlay kustomize
refuses raises :class:`DeployConfigError` with kubectl's message.

:func:`check` then holds the manifests to this project's own rules, which kustomize knows nothing
about: the probes, port and Prometheus annotations of ``recsys_assets/core/constants.py``, a real
image tag (never the release placeholder), ``RECSYS_ENV``, resources, a non-root user, a Service
and an autoscaler that reach the Deployment, and secrets only by ``secretKeyRef``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from recsys_assets.config import variables
from recsys_assets.core.constants import BENTO_NAME

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZATION_FILE = "kustomization.yaml"
# The tag the overlays carry until the release step runs
# `kustomize edit set image recommender=recommender:<model version>`.
PLACEHOLDER_TAG = "set-by-release"
SECRET_NAME = "recommender-secrets"  # the Kubernetes Secret acceptance and prod read
# only ever via secretKeyRef
SECRET_ENV_VARS = (variables.FEAST_REDIS.name, variables.API_KEYS.name)
ENV_VAR = variables.ENV.name
KUBECTL = "kubectl"
KUBECTL_TIMEOUT_S = 120

Manifest = dict[str, Any]

# A Docker tag: letters, digits, _ . - ; at most 128 characters, not starting with . or -.
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class KubectlNotFoundError(RuntimeError):
    """``kubectl`` is not on ``PATH``, so the overlays cannot be rendered."""


class DeployConfigError(ValueError):
    """An overlay that cannot be rendered: unknown, an invalid tag, or refused by kustomize."""


# --- rendering ----------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize DIRECTORY`` prints, one mapping per YAML document."""
    kubectl = shutil.which(KUBECTL)
    if kubectl is None:
        raise KubectlNotFoundError(
            f"{KUBECTL} is not on PATH: install kubectl 1.27 or newer (kustomize v5 built in; "
            "Debian's kubernetes-client 1.20 is too old) to render deploy/overlays"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise DeployConfigError(
            f"kubectl kustomize {directory} failed (exit {result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def environments(deploy_dir: Path = DEPLOY_DIR) -> list[str]:
    """Names of the overlays (folders of ``deploy/overlays`` with a kustomization)."""
    overlays = deploy_dir / "overlays"
    if not overlays.is_dir():
        return []
    return sorted(p.name for p in overlays.iterdir() if (p / KUSTOMIZATION_FILE).is_file())


def load_base(deploy_dir: Path = DEPLOY_DIR) -> list[Manifest]:
    """The manifests of ``deploy/base`` (``kubectl kustomize deploy/base``)."""
    return kustomize(deploy_dir / "base")


def render(
    env: str,
    image_tag: str | None = None,
    *,
    image_name: str = BENTO_NAME,
    deploy_dir: Path = DEPLOY_DIR,
) -> list[Manifest]:
    """The manifests of one environment (``kubectl kustomize deploy/overlays/<env>``).

    With ``image_tag``, every container running ``image_name`` gets that tag, as after the
    release step's ``kustomize edit set image``, without editing the overlay: a throwaway
    kustomization takes the overlay as its resource and sets the tag with ``images:``.
    """
    overlay = deploy_dir / "overlays" / env
    if not (overlay / KUSTOMIZATION_FILE).is_file():
        raise DeployConfigError(
            f"unknown environment {env!r}: {overlay / KUSTOMIZATION_FILE} does not exist; "
            f"environments: {environments(deploy_dir)}"
        )
    if image_tag is not None and not _TAG_PATTERN.fullmatch(image_tag):
        raise DeployConfigError(f"image tag {image_tag!r} is not a valid Docker tag")
    manifests = kustomize(overlay)
    if image_tag is None:
        return manifests
    # kustomize matches `images:` by the full name, so take it (registry included) from the output
    names = sorted({split_image(c["image"])[0] for m in manifests for c in _serving(m, image_name)})
    if not names:
        raise DeployConfigError(f"{overlay}: no Deployment container runs {image_name!r}")
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp).resolve()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # kustomize refuses absolute resource paths
            "resources": [os.path.relpath(overlay.resolve(), wrapper)],
            "images": [{"name": name, "newTag": image_tag} for name in names],
        }
        (wrapper / KUSTOMIZATION_FILE).write_text(yaml.safe_dump(kustomization))
        return kustomize(wrapper)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an image reference; a registry port is part of the name."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _serving(manifest: Mapping[str, Any], image_name: str) -> list[Manifest]:
    """A Deployment's containers running ``image_name`` (the last part of the repository)."""
    if manifest.get("kind") != "Deployment":
        return []
    containers = manifest.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return [
        c
        for c in containers
        if split_image(str(c.get("image", "")))[0].rsplit("/", 1)[-1] == image_name
    ]


def _resource_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"


# --- checking -----------------------------------------------------------------------------------


def _resolve_port(port: Any, container: Mapping[str, Any]) -> int | None:
    """A port given as a number or as the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared.get("containerPort")
    return None


def _check_probe(
    where: str, container: Manifest, probe_name: str, paths: tuple[str, ...], port: int
) -> list[str]:
    probe = container.get(probe_name)
    if probe is None:
        return [f"{where}: no {probe_name}"]
    http_get = probe.get("httpGet")
    if not isinstance(http_get, dict):
        return [f"{where}: {probe_name} is not an httpGet probe"]
    problems = []
    if http_get.get("path") not in paths:
        expected = " or ".join(paths)
        problems.append(f"{where}: {probe_name} path {http_get.get('path')!r} != {expected}")
    resolved = _resolve_port(http_get.get("port"), container)
    if resolved != port:
        problems.append(
            f"{where}: {probe_name} port {http_get.get('port')!r} resolves to {resolved}, "
            f"not {port}"
        )
    return problems


def _literal_secrets(node: Any, path: str = "") -> Iterator[str]:
    """Places where a secret env var has a literal ``value`` instead of a secretKeyRef."""
    if isinstance(node, dict):
        if node.get("name") in SECRET_ENV_VARS and "value" in node:
            yield f"{path or '/'}: {node['name']} has a literal value (use secretKeyRef)"
        for key, value in node.items():
            yield from _literal_secrets(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _literal_secrets(item, f"{path}/{i}")


def _check_container(
    where: str,
    container: Manifest,
    pod_spec: Manifest,
    *,
    port: int,
    liveness: str,
    readiness: str,
    image_tag: str | None,
    environment: str | None,
) -> list[str]:
    problems = []
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    if port not in ports:
        problems.append(f"{where}: no container port {port} (ports: {ports})")
    problems += _check_probe(where, container, "readinessProbe", (readiness,), port)
    problems += _check_probe(where, container, "livenessProbe", (liveness,), port)
    if "startupProbe" in container:
        problems += _check_probe(where, container, "startupProbe", (liveness, readiness), port)
    _, tag, _ = split_image(container["image"])
    if tag is None:
        problems.append(f"{where}: image {container['image']!r} has no tag")
    elif image_tag is not None and tag != image_tag:
        problems.append(f"{where}: image tag {tag!r} != {image_tag!r}")
    elif tag == PLACEHOLDER_TAG:
        problems.append(
            f"{where}: image tag is the placeholder {PLACEHOLDER_TAG!r}; set the model version "
            "(kustomize edit set image)"
        )
    elif not _TAG_PATTERN.fullmatch(tag):
        problems.append(f"{where}: image tag {tag!r} is not a valid Docker tag")
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in resources.get(bound, {})]
        if missing:
            problems.append(f"{where}: no resources.{bound} for {missing}")
    pod_security = pod_spec.get("securityContext", {})
    container_security = container.get("securityContext", {})
    # the container's setting, where given, overrides the pod's
    if not container_security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if environment is not None:
        values = [e.get("value") for e in container.get("env", []) if e.get("name") == ENV_VAR]
        if values != [environment]:
            problems.append(f"{where}: {ENV_VAR} is {values or 'unset'}, not [{environment!r}]")
    return problems


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(
    manifests: list[Manifest],
    *,
    port: int,
    liveness: str,
    readiness: str,
    image_name: str,
    image_tag: str | None = None,
    metrics_path: str | None = None,
    environment: str | None = None,
) -> list[str]:
    """Problems that would keep the service from running or being reached; empty when none.

    Checks the Deployment's container running ``image_name`` (the last part of the image's
    repository, so a registry prefix is fine): its port, probes, tag (``image_tag`` when given,
    never the placeholder), resources and non-root user; that a Service selects its pods and
    forwards to ``port``; that every HorizontalPodAutoscaler targets an existing Deployment with
    1 <= minReplicas <= maxReplicas; that no manifest holds a secret value. With
    ``metrics_path``, the Prometheus scrape annotations; with ``environment``, ``RECSYS_ENV``.
    """
    problems = [f"{_resource_id(m)}{p}" for m in manifests for p in _literal_secrets(m)]
    problems += [
        f"{_resource_id(m)}: Secrets must not be in the manifests"
        for m in manifests
        if m.get("kind") == "Secret"
    ]
    deployments = [m for m in manifests if m.get("kind") == "Deployment"]
    if not deployments:
        problems.append("no Deployment")
    for deployment in deployments:
        template = deployment.get("spec", {}).get("template", {})
        pod_spec = template.get("spec", {})
        serving = _serving(deployment, image_name)
        if not serving:
            images = [c.get("image") for c in pod_spec.get("containers", [])]
            problems.append(
                f"{_resource_id(deployment)}: no container runs {image_name!r} (images: {images})"
            )
            continue
        for container in serving:
            where = f"{_resource_id(deployment)} container {container.get('name')!r}"
            problems += _check_container(
                where,
                container,
                pod_spec,
                port=port,
                liveness=liveness,
                readiness=readiness,
                image_tag=image_tag,
                environment=environment,
            )
        if metrics_path is not None:
            annotations = template.get("metadata", {}).get("annotations", {})
            expected = {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
                "prometheus.io/path": metrics_path,
            }
            for key, value in expected.items():
                if annotations.get(key) != value:
                    problems.append(
                        f"{_resource_id(deployment)}: pod annotation {key} is "
                        f"{annotations.get(key)!r}, not {value!r}"
                    )
        pod_labels = template.get("metadata", {}).get("labels", {})
        services = [
            s
            for s in manifests
            if s.get("kind") == "Service"
            and _selects(s.get("spec", {}).get("selector", {}), pod_labels)
        ]
        if not services:
            problems.append(f"{_resource_id(deployment)}: no Service selects its pods")
        for service in services:
            for service_port in service.get("spec", {}).get("ports", []):
                target = service_port.get("targetPort", service_port.get("port"))
                resolved = _resolve_port(target, serving[0])
                if resolved != port:
                    problems.append(
                        f"{_resource_id(service)}: targetPort {target!r} resolves to "
                        f"{resolved}, not {port}"
                    )
    deployment_names = {d.get("metadata", {}).get("name") for d in deployments}
    for hpa in (m for m in manifests if m.get("kind") == "HorizontalPodAutoscaler"):
        spec = hpa.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        if target.get("kind") != "Deployment" or target.get("name") not in deployment_names:
            problems.append(
                f"{_resource_id(hpa)}: scaleTargetRef {target} is not a Deployment "
                f"of these manifests"
            )
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if not isinstance(high, int) or not isinstance(low, int) or not 1 <= low <= high:
            problems.append(
                f"{_resource_id(hpa)}: needs 1 <= minReplicas ({low}) <= maxReplicas ({high})"
            )
    return problems
