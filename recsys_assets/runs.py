"""Running the project's Dagster jobs in process, on the persistent instance (``DAGSTER_HOME``,
default ``.dagster_home/``), and reading back what they did: rows per partition, metadata by
asset and check, the root cause of a failure.

The command line (``recsys_assets.cli``), the closed-loop simulation and the drills
(``recsys_assets.simulation``) share it; it imports none of them.

Dagster and the project's definitions load inside the functions that run a job: every CLI
module imports this one, and ``--help`` or a command that runs no job should not pay for them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_assets.config.settings import PROJECT_ROOT

if TYPE_CHECKING:
    import dagster as dg

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
# The demo prints its own summary; Dagster's step-by-step log stays in the run's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The BentoML service that ``serve`` and the drills start (``bentoml serve SERVICE``).
SERVICE = "bentos.recommender.service:Recommender"


def prepare_dagster_home() -> Path:
    """Use ``DAGSTER_HOME`` or ``.dagster_home/``, seeded with the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME)))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _definitions() -> dg.Definitions:
    """The project's definitions, loaded on first use: loading them reads the source config,
    which ``demo --data-config`` sets just before (a bad one raises ``SourceError`` here)."""
    from recsys_assets.definitions import defs

    return defs


def run_ingestion(partition_keys: list[str] | None = None) -> list[dict[str, object]]:
    """Materialise the ingestion job for each partition (all by default); one row per run."""
    import dagster as dg

    job = _definitions().resolve_job_def("ingestion_job")
    keys = partition_keys or job.partitions_def.get_partition_keys()
    instance = dg.DagsterInstance.get()
    rows = []
    for key in keys:
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        rows.append(
            {
                "partition": key,
                "ok": result.success,
                **_row_counts(result),
                "seconds": round(time.perf_counter() - started, 2),
                "error": _failure(result),
            }
        )
    return rows


def run_job(
    name: str, tags: dict[str, str] | None = None, run_config: dict | None = None
) -> tuple[bool, dict[str, dict[str, object]], str | None]:
    """Run an unpartitioned job once: (ok, metadata by asset and check, error)."""
    import dagster as dg

    result = (
        _definitions()
        .resolve_job_def(name)
        .execute_in_process(
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            run_config={**QUIET, **(run_config or {})},
            tags=tags,
        )
    )
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.event_specific_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    for check in result.get_asset_check_evaluations():
        metadata[f"check:{check.check_name}"] = {
            "passed": check.passed,
            **{k: v.value for k, v in check.metadata.items()},
        }
    return result.success, metadata, _failure(result)


def _failure(result) -> str | None:
    if result.success:
        return None
    return (
        "; ".join(
            _root_message(event.event_specific_data.error)
            for event in result.all_events
            if event.is_step_failure
        )
        or "a blocking check failed"
    )


def _root_message(error) -> str:
    """The innermost error's message: what went wrong, without Dagster's wrapping."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _row_counts(result) -> dict[str, int]:
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        rows = materialization.metadata.get("dagster/row_count")
        if rows is not None:
            counts[materialization.asset_key.to_user_string()] = int(rows.value)
    return {
        "raw": counts.get("raw_events", 0),
        "validated": counts.get("validated_events", 0),
        "quarantined": counts.get("quarantined_events", 0),
    }
