"""The one helper that picks the environment.

``RECSYS_ENV`` chooses dev (the default), test, acceptance or prod; each has a YAML file under
``config/environments/``. Plain settings (paths, thresholds) live in those files; secrets never
do: a setting written as ``{env: NAME}`` is passed to Dagster resources as ``dg.EnvVar(NAME)``
and read only when a run needs it.

``RECSYS_DATA_CONFIG`` overrides the event source (a YAML under ``data/sources/`` or your own),
``RECSYS_WAREHOUSE`` the local DuckDB file, ``RECSYS_FEATURE_REPO`` the Feast repository folder
(tests use a scratch copy) and ``RECSYS_FEATURE_STORE`` its config file (e.g.
``environments/redis.yaml`` to try the Redis online store locally), ``RECSYS_MODELS`` and
``RECSYS_REPORTS`` where fitted models and evaluation reports go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS_DIR = Path(__file__).resolve().parent / "environments"
ENV_VAR = "RECSYS_ENV"
DATA_CONFIG_VAR = "RECSYS_DATA_CONFIG"
WAREHOUSE_VAR = "RECSYS_WAREHOUSE"
FEATURE_REPO_VAR = "RECSYS_FEATURE_REPO"
FEATURE_STORE_VAR = "RECSYS_FEATURE_STORE"
MODELS_VAR = "RECSYS_MODELS"
REPORTS_VAR = "RECSYS_REPORTS"


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    ACCEPTANCE = "acceptance"
    PROD = "prod"


@dataclass(frozen=True)
class Settings:
    """What one environment reads and writes."""

    environment: Environment
    data_config: Path  # the event source config (YAML)
    warehouse: str | dg.EnvVar  # DuckDB database file holding the event tables
    max_quarantine_share: float  # above this share of quarantined rows a partition warns
    feature_repo: Path  # the Feast repository (feature_repo/)
    feature_store_yaml: str  # its config file for this environment, relative to feature_repo
    model_dir: Path  # fitted models (pickled by the model_store IO manager)
    reports_dir: Path  # evaluation reports; the latest JSON is reports_dir/evaluation.json

    @property
    def warehouse_path(self) -> Path | None:
        """The DuckDB file when it is a plain local path (None when it comes from a secret)."""
        return None if isinstance(self.warehouse, dg.EnvVar) else Path(self.warehouse)


def _resolve(value: Any) -> str | dg.EnvVar:
    if isinstance(value, dict) and set(value) == {"env"}:
        return dg.EnvVar(value["env"])
    return str(value)


def _project_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def get_settings(environment: str | None = None) -> Settings:
    """Settings of the chosen environment (``RECSYS_ENV``, default dev)."""
    name = environment or os.environ.get(ENV_VAR, Environment.DEV.value)
    try:
        env = Environment(name)
    except ValueError:
        valid = [e.value for e in Environment]
        raise ValueError(f"{ENV_VAR}={name!r} is not an environment; use one of {valid}") from None
    raw = yaml.safe_load((ENVIRONMENTS_DIR / f"{env.value}.yaml").read_text())
    data_config = os.environ.get(DATA_CONFIG_VAR) or raw["data_config"]
    warehouse = _resolve(os.environ.get(WAREHOUSE_VAR) or raw["warehouse"])
    if not isinstance(warehouse, dg.EnvVar):  # EnvVar subclasses str: test it first
        warehouse = str(_project_path(warehouse))
    return Settings(
        environment=env,
        data_config=_project_path(data_config),
        warehouse=warehouse,
        max_quarantine_share=float(raw.get("max_quarantine_share", 0.5)),
        feature_repo=_project_path(os.environ.get(FEATURE_REPO_VAR) or "feature_repo"),
        feature_store_yaml=os.environ.get(FEATURE_STORE_VAR) or raw["feature_store"],
        model_dir=_project_path(os.environ.get(MODELS_VAR) or f"data/models/{env.value}"),
        # dev writes the stable reports/evaluation.json; other environments keep their own.
        reports_dir=_project_path(
            os.environ.get(REPORTS_VAR)
            or ("reports" if env is Environment.DEV else f"reports/{env.value}")
        ),
    )
