"""Render and check the Kubernetes manifests under ``deploy/`` without a kustomize binary.

``deploy/base`` holds the Deployment, Service and HorizontalPodAutoscaler of the recommendation
service; ``deploy/overlays/<env>`` adapts them per environment. :func:`render` builds an overlay
the way ``kustomize build`` does for the features these files use, so tests (and CI machines
without kustomize or a cluster) can check that the manifests agree with the service's constants:
:func:`check` returns the problems it finds.

Supported in a ``kustomization.yaml`` (anything else is an error, never silently ignored):

- ``resources``: YAML files, or folders holding a ``kustomization.yaml`` (built recursively);
- ``patches``: strategic-merge patches, inline (``patch:``) or in a file (``path:``), without
  ``target``; a patch finds its resource by ``kind`` and ``metadata.name``;
- ``namespace``: set on every namespaced resource;
- ``images``: ``name`` with ``newName``, ``newTag`` and/or ``digest``, applied to every
  ``containers``/``initContainers`` image of that name.

Order as in kustomize: a folder's resources are built first, then its patches, namespace and
images. The strategic merge is simplified: mappings merge key by key, ``null`` deletes a key,
lists of mappings that all have a ``name`` (containers, env, ports, volumes) merge by name, other
lists are replaced. ``tests/unit/release/test_kubernetes.py`` compares the result with ``kubectl kustomize``
where that is installed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from recsys_assets.core.constants import BENTO_NAME

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZATION_FILE = "kustomization.yaml"
# The tag the overlays carry until the release step runs
# `kustomize edit set image recommender=recommender:<model version>`.
PLACEHOLDER_TAG = "set-by-release"
SECRET_NAME = "recommender-secrets"  # the Kubernetes Secret acceptance and prod read
SECRET_ENV_VARS = ("RECSYS_FEAST_REDIS", "RECSYS_API_KEYS")  # only ever via secretKeyRef
ENV_VAR = "RECSYS_ENV"

Manifest = dict[str, Any]

_SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "patches", "namespace", "images"})
_CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)
# A Docker tag: letters, digits, _ . - ; at most 128 characters, not starting with . or -.
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class DeployConfigError(ValueError):
    """A kustomization or manifest that cannot be read or rendered; the message names the file."""


# --- reading ------------------------------------------------------------------------------------


def _read_documents(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of a file, each a mapping."""
    if not path.is_file():
        raise DeployConfigError(f"{path}: no such file")
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as exc:
        raise DeployConfigError(f"{path}: not valid YAML: {exc}") from exc
    for doc in documents:
        if not isinstance(doc, dict):
            raise DeployConfigError(f"{path}: a document is not a mapping: {doc!r}")
    return documents


def _read_kustomization(directory: Path) -> Manifest:
    path = directory / KUSTOMIZATION_FILE
    documents = _read_documents(path)
    if len(documents) != 1:
        raise DeployConfigError(f"{path}: expected one YAML document, found {len(documents)}")
    kustomization = documents[0]
    unsupported = sorted(set(kustomization) - _SUPPORTED_KEYS)
    if unsupported:
        raise DeployConfigError(
            f"{path}: unsupported keys {unsupported}; recsys_assets.release.kubernetes supports "
            f"{sorted(_SUPPORTED_KEYS)}"
        )
    return kustomization


def _patch_documents(entry: Any, directory: Path, source: Path) -> list[Manifest]:
    """The strategic-merge patch(es) of one ``patches`` entry."""
    if not isinstance(entry, dict) or "target" in entry or set(entry) - {"path", "patch"}:
        raise DeployConfigError(
            f"{source}: unsupported patch entry {entry!r}; use {{path: FILE}} or {{patch: YAML}}"
        )
    if "path" in entry:
        return _read_documents(directory / entry["path"])
    try:
        documents = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc is not None]
    except yaml.YAMLError as exc:
        raise DeployConfigError(f"{source}: an inline patch is not valid YAML: {exc}") from exc
    if not all(isinstance(doc, dict) for doc in documents):
        raise DeployConfigError(f"{source}: an inline patch is not a mapping")
    return documents


# --- transformations (all return new objects) ---------------------------------------------------


def _is_named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value)


def strategic_merge(base: Any, patch: Any) -> Any:
    """``patch`` merged onto ``base`` (simplified strategic merge, see the module docstring)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if _is_named_list(base) and _is_named_list(patch) and base and patch:
        merged_list = copy.deepcopy(base)
        positions = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in positions:
                index = positions[item["name"]]
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _resource_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"


def _apply_patch(manifests: list[Manifest], patch: Manifest, source: Path) -> list[Manifest]:
    matches = [i for i, m in enumerate(manifests) if _resource_id(m) == _resource_id(patch)]
    if len(matches) != 1:
        raise DeployConfigError(
            f"{source}: patch of {_resource_id(patch)} matches {len(matches)} resources "
            f"(have {[_resource_id(m) for m in manifests]})"
        )
    patched = list(manifests)
    patched[matches[0]] = strategic_merge(manifests[matches[0]], patch)
    return patched


def _set_namespace(manifests: list[Manifest], namespace: str) -> list[Manifest]:
    result = copy.deepcopy(manifests)
    for manifest in result:
        if manifest.get("kind") not in _CLUSTER_SCOPED_KINDS:
            manifest.setdefault("metadata", {})["namespace"] = namespace
    return result


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an image reference; a registry port is part of the name."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _containers(node: Any) -> Iterator[Manifest]:
    """Every container (and init container) anywhere inside a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _apply_images(
    manifests: list[Manifest], images: list[Manifest], source: Path
) -> list[Manifest]:
    result = copy.deepcopy(manifests)
    for entry in images:
        if not isinstance(entry, dict) or "name" not in entry:
            raise DeployConfigError(f"{source}: an images entry has no name: {entry!r}")
        unknown = set(entry) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise DeployConfigError(f"{source}: unsupported images keys {sorted(unknown)}")
        for manifest in result:
            for container in _containers(manifest):
                name, tag, digest = split_image(str(container.get("image", "")))
                if name != entry["name"]:
                    continue
                new_name = entry.get("newName", name)
                if "digest" in entry:
                    container["image"] = f"{new_name}@{entry['digest']}"
                elif "newTag" in entry:
                    container["image"] = f"{new_name}:{entry['newTag']}"
                else:
                    suffix = f":{tag}" if tag else ""
                    container["image"] = new_name + suffix + (f"@{digest}" if digest else "")
    return result


def _with_tag(images: list[Manifest], image_name: str, image_tag: str) -> list[Manifest]:
    """``images`` as ``kustomize edit set image NAME=NAME:TAG`` leaves them."""
    updated = [dict(e) for e in images if e.get("name") != image_name]
    current = next((e for e in images if e.get("name") == image_name), {})
    entry = {k: v for k, v in current.items() if k not in ("newTag", "digest")}
    entry.update(name=image_name, newName=current.get("newName", image_name), newTag=image_tag)
    return [*updated, entry]


# --- building -----------------------------------------------------------------------------------


def _build(directory: Path, image_override: tuple[str, str] | None = None) -> list[Manifest]:
    """The manifests a kustomization folder produces (``kustomize build DIRECTORY``)."""
    source = directory / KUSTOMIZATION_FILE
    kustomization = _read_kustomization(directory)
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = directory / str(resource)
        if path.is_dir():
            manifests.extend(_build(path))
        elif path.is_file():
            manifests.extend(_read_documents(path))
        else:
            raise DeployConfigError(f"{source}: resource {resource!r} does not exist ({path})")
    for entry in kustomization.get("patches", []):
        for patch in _patch_documents(entry, directory, source):
            manifests = _apply_patch(manifests, patch, source)
    if "namespace" in kustomization:
        manifests = _set_namespace(manifests, str(kustomization["namespace"]))
    images = list(kustomization.get("images", []))
    if image_override is not None:
        images = _with_tag(images, *image_override)
    return _apply_images(manifests, images, source)


def environments(deploy_dir: Path = DEPLOY_DIR) -> list[str]:
    """Names of the overlays (folders of ``deploy/overlays`` with a kustomization)."""
    overlays = deploy_dir / "overlays"
    if not overlays.is_dir():
        return []
    return sorted(p.name for p in overlays.iterdir() if (p / KUSTOMIZATION_FILE).is_file())


def load_base(deploy_dir: Path = DEPLOY_DIR) -> list[Manifest]:
    """The manifests of ``deploy/base``, as ``kustomize build deploy/base`` gives them."""
    return _build(deploy_dir / "base")


def render(
    env: str,
    image_tag: str | None = None,
    *,
    image_name: str = BENTO_NAME,
    deploy_dir: Path = DEPLOY_DIR,
) -> list[Manifest]:
    """The manifests of one environment (``kustomize build deploy/overlays/<env>``).

    With ``image_tag``, the image ``image_name`` gets that tag, as after the release step's
    ``kustomize edit set image <image_name>=<image_name>:<image_tag>``.
    """
    overlay = deploy_dir / "overlays" / env
    if not (overlay / KUSTOMIZATION_FILE).is_file():
        raise DeployConfigError(
            f"unknown environment {env!r}: {overlay / KUSTOMIZATION_FILE} does not exist; "
            f"environments: {environments(deploy_dir)}"
        )
    if image_tag is not None and not _TAG_PATTERN.fullmatch(image_tag):
        raise DeployConfigError(f"image tag {image_tag!r} is not a valid Docker tag")
    override = (image_name, image_tag) if image_tag is not None else None
    return _build(overlay, override)


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
        serving = [
            c
            for c in pod_spec.get("containers", [])
            if split_image(str(c.get("image", "")))[0].rsplit("/", 1)[-1] == image_name
        ]
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
