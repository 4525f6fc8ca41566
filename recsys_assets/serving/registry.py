"""The BentoML model store as the registry of promoted models.

A promoted :class:`~recsys_assets.serving.model.ServingModel` is pickled into a BentoML model
named ``recsys-ranker`` (:data:`~recsys_assets.core.constants.SERVING_MODEL_NAME`) whose version is
the model version; labels carry the stage and version, metadata the evaluation figures and the
lineage (data versions, feature service, code version). The pickle's SHA-256 is kept in the
metadata and checked on load, so a corrupt file is refused with a clear error instead of served.
Stages (label ``stage``): ``promoted`` (the newest promoted version is the champion),
``candidate`` (passed the gate where the pipeline may not promote, e.g. prod: it waits for a
release manager, see :mod:`recsys_assets.release.ledger`) and ``rolled_back`` (taken back by
:func:`rollback`, kept for the record).

Every function works on the process's store (``BENTOML_HOME``, read once by BentoML) unless
``home`` names another environment's BentoML home: releases move models between them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from recsys_assets.core import constants as c
from recsys_assets.core import pickles
from recsys_assets.serving.model import ServingModel

MODEL_FILE = "serving_model.pkl"
STAGE_LABEL = "stage"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"  # a promoted version taken back; the one before it is champion again
CANDIDATE = "candidate"  # passed the gate, not promoted: the policy wants a human (prod)


class ModelLoadError(RuntimeError):
    """A promoted model that is missing, unreadable or fails its checksum."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_store(home: str | Path | None = None) -> Any:
    """The BentoML model store under ``home`` (an environment's ``BENTOML_HOME``), or the
    process's store (None). Store objects, unlike ``BENTOML_HOME``, can differ per call."""
    if home is None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return BentoMLContainer.model_store.get()
    from bentoml._internal.models.model import ModelStore

    return ModelStore(Path(home) / "models")


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
    stage: str = PROMOTED,
    home: str | Path | None = None,
) -> str:
    """Save ``model`` to the BentoML model store (``BENTOML_HOME``, or ``home``) as
    ``name:<version>`` with ``stage`` (promoted, or candidate); returns the tag. Saving the same
    version twice replaces nothing: the existing tag wins (a version rolled back earlier takes
    ``stage`` again; a promoted one is never demoted to candidate)."""
    import bentoml

    tag = f"{name}:{model.version}"
    store = model_store(home)
    if home is not None:
        (Path(home) / "models").mkdir(parents=True, exist_ok=True)
    try:
        existing = store.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    else:
        if existing.info.labels.get(STAGE_LABEL) not in (PROMOTED, stage):
            set_stage(tag, stage, home=home)  # promoted (or candidate) again after a rollback
        return tag
    with bentoml.models.create(
        tag,
        labels={STAGE_LABEL: stage, "model_version": model.version, **(labels or {})},
        metadata=_json_safe(metadata or {}),
        module="recsys_assets.serving.registry",
        _model_store=store,
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
            model = pickles.load(handle)  # a store written before the domain packages too
    except Exception as error:  # unpickling garbage raises many kinds of errors
        raise ModelLoadError(f"model file {path} cannot be read: {error}") from error
    if not isinstance(model, ServingModel):
        raise ModelLoadError(f"model file {path} holds a {type(model).__name__}, not a model")
    return model


def model_versions(
    name: str = c.SERVING_MODEL_NAME, *, home: str | Path | None = None
) -> list[dict[str, Any]]:
    """Every version in the store (or the one under ``home``) whatever its stage, newest
    first: tag, version, stage, labels, metadata, created, path."""
    import bentoml

    if home is not None and not (Path(home) / "models").is_dir():
        return []  # an environment nothing was released to yet
    try:
        listed = model_store(home).list(name)
    except bentoml.exceptions.NotFound:  # nothing saved under this name yet
        return []
    listed.sort(key=lambda m: m.info.creation_time, reverse=True)
    return [
        {
            "tag": str(m.tag),
            "version": m.tag.version,
            "stage": m.info.labels.get(STAGE_LABEL, ""),
            "labels": dict(m.info.labels),
            "metadata": dict(m.info.metadata),
            "created": m.info.creation_time.isoformat(),
            "path": str(m.path),
        }
        for m in listed
    ]


def promoted_versions(
    name: str = c.SERVING_MODEL_NAME, *, home: str | Path | None = None
) -> list[dict[str, Any]]:
    """Every promoted version in the store, newest first (candidates and rolled-back versions
    left out): tag, labels, metadata, created."""
    return [v for v in model_versions(name, home=home) if v["stage"] == PROMOTED]


def set_stage(tag: str, stage: str, *, home: str | Path | None = None, **labels: str) -> None:
    """Change a stored model's stage label (and add ``labels``) in place: the model file and
    its checksum stay as they are. BentoML has no public call for it: the labels of the model's
    (frozen) info are replaced and ``model.yaml`` rewritten the way BentoML writes it."""
    model = model_store(home).get(tag)
    merged = {**model.info.labels, STAGE_LABEL: stage, **labels}
    object.__setattr__(model.info, "labels", merged)  # ModelInfo is frozen; no public setter
    model._write_info()


class RollbackError(ValueError):
    """A rollback that cannot be done (no earlier version, unknown version)."""


def rollback(
    to_version: str | None = None,
    *,
    reason: str,
    name: str = c.SERVING_MODEL_NAME,
    home: str | Path | None = None,
) -> dict[str, Any]:
    """Make an earlier promoted version the champion again: every promoted version newer than
    it is marked ``rolled_back`` (with the reason), so :func:`current_promoted` and the gate see
    the target. Default target: the version before the current one. Returns the champion
    before, the target and the versions rolled back; raises :class:`RollbackError`."""
    promoted = promoted_versions(name, home=home)
    if not promoted:
        raise RollbackError("nothing is promoted: there is no champion to roll back")
    if to_version is None:
        if len(promoted) < 2:
            raise RollbackError(
                f"{promoted[0]['tag']} is the only promoted version: nothing earlier to roll "
                "back to"
            )
        target = promoted[1]
    else:
        found = [v for v in promoted if v["version"] == to_version]
        if not found:
            known = [v["version"] for v in promoted]
            raise RollbackError(f"{to_version!r} is not a promoted version; promoted: {known}")
        target = found[0]
    newer = promoted[: promoted.index(target)]
    if not newer:
        raise RollbackError(f"{target['tag']} is already the champion")
    for version in newer:
        set_stage(version["tag"], ROLLED_BACK, home=home, rolled_back_to=target["version"],
                  rollback_reason=_label(reason))  # fmt: skip
    return {"from": promoted[0]["version"], "to": target["version"],
            "rolled_back": [v["version"] for v in newer], "tag": target["tag"]}  # fmt: skip


def _label(text: str) -> str:
    """A label value BentoML accepts: short, letters, digits and - _ . only."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip())
    return cleaned[:63].strip("-_.") or "unspecified"


def current_promoted(
    name: str = c.SERVING_MODEL_NAME, *, home: str | Path | None = None
) -> dict[str, Any] | None:
    """The newest promoted version (the champion), or None before the first promotion;
    candidates never count."""
    versions = promoted_versions(name, home=home)
    return versions[0] if versions else None
