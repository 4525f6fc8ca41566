"""The BentoML model store as the registry of promoted models.

A promoted :class:`~recsys_assets.lib.serving.ServingModel` is pickled into a BentoML model
named ``recsys-ranker`` (:data:`~recsys_assets.constants.SERVING_MODEL_NAME`) whose version is
the model version; labels carry the stage and version, metadata the evaluation figures and the
lineage (data versions, feature service, code version). The pickle's SHA-256 is kept in the
metadata and checked on load, so a corrupt file is refused with a clear error instead of served.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from recsys_assets import constants as c
from recsys_assets.lib.serving import ServingModel

MODEL_FILE = "serving_model.pkl"
STAGE_LABEL = "stage"
PROMOTED = "promoted"


class ModelLoadError(RuntimeError):
    """A promoted model that is missing, unreadable or fails its checksum."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """Metadata values BentoML accepts: JSON round-tripped (numpy, timestamps -> plain), with
    missing values (None, NaN) left out of mappings and written as "" in lists: BentoML refuses
    None anywhere in model metadata."""
    return _without_none(json.loads(json.dumps(value, default=str)))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return ["" if v is None else _without_none(v) for v in value]
    return value


def save_promoted(
    model: ServingModel,
    *,
    labels: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    name: str = c.SERVING_MODEL_NAME,
) -> str:
    """Save ``model`` to the BentoML model store (``BENTOML_HOME``) as ``name:<version>``;
    returns the tag. Saving the same version twice replaces nothing: the existing tag wins."""
    import bentoml

    tag = f"{name}:{model.version}"
    try:
        bentoml.models.get(tag)
        return tag
    except bentoml.exceptions.NotFound:
        pass
    with bentoml.models.create(
        tag,
        labels={STAGE_LABEL: PROMOTED, "model_version": model.version, **(labels or {})},
        metadata=_json_safe(metadata or {}),
        module="recsys_assets.lib.model_registry",
    ) as saved:
        path = Path(saved.path_of(MODEL_FILE))
        with path.open("wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
        saved.info.metadata["sha256"] = _sha256(path)
        saved.info.metadata["size_bytes"] = path.stat().st_size
    return tag


def load_promoted(model_path: str | Path, metadata: dict[str, Any]) -> ServingModel:
    """Load the pickled serving model under a BentoML model's ``path`` and check it against the
    SHA-256 in its ``metadata``; raises :class:`ModelLoadError` naming the problem."""
    path = Path(model_path) / MODEL_FILE
    if not path.exists():
        raise ModelLoadError(f"model file {path} is missing")
    expected = metadata.get("sha256")
    actual = _sha256(path)
    if expected and actual != expected:
        raise ModelLoadError(
            f"model file {path} is corrupt: sha256 {actual[:12]}... != recorded {expected[:12]}..."
        )
    try:
        with path.open("rb") as handle:
            model = pickle.load(handle)
    except Exception as error:  # unpickling garbage raises many kinds of errors
        raise ModelLoadError(f"model file {path} cannot be read: {error}") from error
    if not isinstance(model, ServingModel):
        raise ModelLoadError(f"model file {path} holds a {type(model).__name__}, not a model")
    return model


def promoted_versions(name: str = c.SERVING_MODEL_NAME) -> list[dict[str, Any]]:
    """Every promoted version in the store, newest first: tag, labels, metadata, created."""
    import bentoml

    try:
        listed = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # nothing saved under this name yet
        return []
    models = [m for m in listed if m.info.labels.get(STAGE_LABEL) == PROMOTED]
    models.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [
        {
            "tag": str(m.tag),
            "version": m.tag.version,
            "labels": dict(m.info.labels),
            "metadata": dict(m.info.metadata),
            "created": m.info.creation_time.isoformat(),
        }
        for m in models
    ]


def current_promoted(name: str = c.SERVING_MODEL_NAME) -> dict[str, Any] | None:
    """The newest promoted version (the champion), or None before the first promotion."""
    versions = promoted_versions(name)
    return versions[0] if versions else None
