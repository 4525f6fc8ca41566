"""Read back what the ingestion recorded, so a model can name the exact data it came from.

A training run calls :func:`partition_lineage` for the partitions it read and stores the result
with the model: for each partition, the data version of every table, the source's sha256 and
the hash of the source settings (column mapping, cancellation prefix, ...) and the rules
version. With the source file of that fingerprint, these rebuild the exact input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import dagster as dg

LINEAGE_KEYS = (
    "data_version",
    "source_sha256",
    "source_config_sha256",
    "source_path",
    "rules_version",
)
TABLES = ("raw_events", "validated_events", "quarantined_events")


def partition_lineage(
    instance: dg.DagsterInstance, partition_keys: Iterable[str], tables: Iterable[str] = TABLES
) -> list[dict[str, object]]:
    """One row per partition: rows and recorded lineage of each table's latest materialisation.

    A partition never materialised has ``None`` for its fields, so gaps are visible.
    """
    rows = []
    for key in partition_keys:
        row: dict[str, object] = {"partition": key}
        for table in tables:
            record = instance.get_latest_data_version_record(dg.AssetKey(table), partition_key=key)
            materialization = record.asset_materialization if record else None
            metadata = {
                k: v.value for k, v in (materialization.metadata.items() if materialization else [])
            }
            row[f"{table}.rows"] = metadata.get("dagster/row_count")
            row[f"{table}.run_id"] = record.run_id if record else None
            for name in LINEAGE_KEYS:
                if name in metadata:
                    row[f"{table}.{name}"] = metadata[name]
        rows.append(row)
    return rows


def model_lineage(
    instance: dg.DagsterInstance,
    partition_keys: Iterable[str],
    *,
    code_version: str | None,
    params: dict[str, object],
    feature_service: str | None = None,
    features: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    """Everything a model came from: the event partitions (rows, data versions, source and
    rules), the feature service it was registered under and the registry version, the
    features it actually reads (``features``: each model input's name, kind and the Feast
    references it comes from, see ``training.ranker.feature_lineage``; ``None`` for a model
    without features), the code version, the parameters."""
    registry = instance.get_latest_materialization_event(dg.AssetKey("feature_registry"))
    registry_version = (
        registry.asset_materialization.tags.get("dagster/data_version")
        if registry and registry.asset_materialization
        else None
    )
    return {
        "partitions": partition_lineage(
            instance,
            partition_keys,
            tables=("raw_events", "validated_events", "quarantined_events"),
        ),
        "feature_service": feature_service,
        "feature_registry_version": registry_version if feature_service else None,
        "features": features,
        "code_version": code_version,
        "params": params,
    }


def model_version(train_data_version: str, lineage: dict[str, object]) -> str:
    """A model's version: a hash of its training data version, code version, parameters, feature
    service and (for a model with features) the names of its inputs."""
    basis = {
        "train": train_data_version,
        "code": lineage.get("code_version"),
        "params": lineage.get("params"),
        "features": lineage.get("feature_service"),
    }
    inputs = lineage.get("features")
    if inputs:  # only then: the versions of models without features stay as they were
        basis["inputs"] = [str(f["name"]) for f in inputs]  # type: ignore[index]
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]
