"""The one helper that picks the environment.

``RECSYS_ENV`` chooses dev (the default), test, acceptance or prod; each has a YAML file under
``config/environments/``. Plain settings (paths, thresholds) live in those files; secrets never
do: a setting written as ``{env: NAME}`` is a :class:`~recsys_assets.config.variables.SecretRef`
(the name, never the value), which the Dagster definitions pass to resources as
``dg.EnvVar(NAME)``, read only when a run needs it.

The variables that override these files (the event source, the warehouse, the Feast repository
and its config file, the folders and logs each environment writes, ``BENTOML_HOME``) are
declared in :mod:`recsys_assets.config.variables`, with their defaults: docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from recsys_assets.config import variables
from recsys_assets.config.canary import CanaryPolicy
from recsys_assets.config.variables import SecretRef

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS_DIR = Path(__file__).resolve().parent / "environments"
DATA_CONFIG_VAR = variables.DATA_CONFIG.name  # the CLI sets it
BENTOML_HOME_VAR = variables.BENTOML_HOME.name  # BentoML's own variable: its model and bento store


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
    warehouse: str | SecretRef  # DuckDB database file holding the event tables
    max_quarantine_share: float  # above this share of quarantined rows a partition warns
    feature_repo: Path  # the Feast repository (feature_repo/)
    feature_store_yaml: str  # its config file for this environment, relative to feature_repo
    features: FeatureSettings  # the feature views' TTLs (derived from the data unless set)
    model_dir: Path  # fitted models (pickled by the model_store IO manager)
    reports_dir: Path  # evaluation reports; the latest JSON is reports_dir/evaluation.json
    feedback_log: Path  # the service's feedback events (JSON lines), read back as a source
    bentoml_home: Path  # BentoML's store of promoted models and bentos
    serving: ServingSettings  # the promotion gate and the service's behaviour
    monitoring: MonitoringSettings  # drift monitors, retraining triggers and their thresholds
    loop_log: Path  # the continuous-deployment loop's event log (decisions, releases, KPIs)
    canary_state: Path  # the canary's challenger and share (JSON), followed by the service
    canary: CanaryPolicy  # the canary's guardrails and steps (the file's `canary:` block)

    @property
    def warehouse_path(self) -> Path | None:
        """The DuckDB file when it is a plain local path (None when it comes from a secret)."""
        return None if isinstance(self.warehouse, SecretRef) else Path(self.warehouse)


# The Feast feature views (feature_repo/feature_views.py) a TTL may be set for.
FEATURE_VIEWS = ("customer_profile", "item_popularity", "customer_item", "session_context")


@dataclass(frozen=True)
class FeatureSettings:
    """The feature views, per environment (docs/architecture.md, "Point in time").

    ``ttl_days``: a TTL in days for some views of :data:`FEATURE_VIEWS`; a view not named gets
    the TTL derived from the data (``recsys_assets.features.ttl``), the default for every view.
    """

    ttl_days: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ttl_days, Mapping):
            raise ValueError(f"features.ttl_days must map views to days, not {self.ttl_days!r}")
        for view, days in self.ttl_days.items():
            if view not in FEATURE_VIEWS:
                raise ValueError(
                    f"features.ttl_days: unknown view {view!r}; views: {list(FEATURE_VIEWS)}"
                )
            if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
                raise ValueError(
                    f"features.ttl_days.{view} must be a positive number of days, not {days!r}"
                )


@dataclass(frozen=True)
class ServingSettings:
    """The promotion gate and the recommendation service, per environment."""

    max_ndcg_drop: float = 0.02  # gate: a challenger may be at most this much (relative) worse
    latency_budget_p99_ms: float = 10.0  # gate: in-process p99 of one recommendation
    latency_gate: str = "block"  # "block": over the budget refuses; "warn": a warning only
    clock: str = "data"  # "data": recency features as of the model's data end; "wall": now
    item_refresh_s: float = 300.0  # how often the service re-reads item features
    max_k: int = 100  # largest list a client may ask for

    def __post_init__(self) -> None:
        if self.clock not in ("data", "wall"):
            raise ValueError(f"serving.clock must be 'data' or 'wall', not {self.clock!r}")
        if self.latency_gate not in ("block", "warn"):
            raise ValueError(
                f"serving.latency_gate must be 'block' or 'warn', not {self.latency_gate!r}"
            )


AUTO = "auto"  # a drift window that follows the data's cadence
AUTO_WINDOWS = ("reference_days", "window_days")  # the settings that may be AUTO


@dataclass(frozen=True)
class MonitoringSettings:
    """Monitors and retraining triggers, per environment (docs/monitoring.md)."""

    # The drift windows, in days or "auto" (the default when a file leaves them out): the
    # fewest whole days that hold min_window_lines purchase lines (reference: at least 28 days,
    # current: at least 1; the served-list windows: min_lists lists each), so they follow the
    # data's cadence: a day of a busy shop, weeks of a sparse one.
    reference_days: float | str = AUTO  # reference window: the last days the serving model saw
    window_days: float | str = AUTO  # current window: the latest landed days
    min_window_lines: int = 500  # "auto" data windows hold at least this many purchase lines
    sample_rows: int = 20_000  # each side of a drift comparison is sampled to this many rows
    drift_share: float = 0.5  # data drift: share of the ranker features drifted (Evidently default)
    item_mix_distance: float = 0.05  # data drift: JS distance of bought items beyond chance
    max_missing_share: float = 0.2  # data quality: a column missing more is a broken feed
    score_ks: float = 0.2  # prediction drift: KS statistic of served scores
    served_item_distance: float = 0.4  # prediction drift: JS distance of recommended items
    label_horizon_days: float = 1.0  # delayed ground truth: purchases within this after a list
    min_lists: int = 100  # performance: fewer scored lists than this decide nothing
    performance_drop: float = 0.25  # performance: relative drop of the live hit rate
    max_model_age_days: float = 30.0  # enough new data: retrain when the model is this stale
    cooldown_days: float = 2.0  # no retraining within this many days of data of the last one
    canary_interval_s: float = 30.0  # canary_sensor: seconds between canary analyses

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if name in AUTO_WINDOWS and value == AUTO:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                also = f" or {AUTO!r}" if name in AUTO_WINDOWS else ""
                raise ValueError(
                    f"monitoring.{name} must be a non-negative number{also}, not {value!r}"
                )


def _resolve(value: Any) -> str | SecretRef:
    if isinstance(value, dict) and set(value) == {"env"}:
        return SecretRef(value["env"])
    return str(value)


def _project_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def get_settings(environment: str | None = None) -> Settings:
    """Settings of the chosen environment (``RECSYS_ENV``, default dev)."""
    name = environment or variables.ENV.read()
    try:
        env = Environment(name)
    except ValueError:
        valid = [e.value for e in Environment]
        raise ValueError(
            f"{variables.ENV.name}={name!r} is not an environment; use one of {valid}"
        ) from None
    raw = yaml.safe_load((ENVIRONMENTS_DIR / f"{env.value}.yaml").read_text())
    data_config = variables.DATA_CONFIG.read() or raw["data_config"]
    warehouse = _resolve(variables.WAREHOUSE.read() or raw["warehouse"])
    if not isinstance(warehouse, SecretRef):
        warehouse = str(_project_path(warehouse))
    return Settings(
        environment=env,
        data_config=_project_path(data_config),
        warehouse=warehouse,
        max_quarantine_share=float(raw.get("max_quarantine_share", 0.5)),
        feature_repo=_project_path(
            variables.FEATURE_REPO.read() or str(variables.FEATURE_REPO.default)
        ),
        feature_store_yaml=variables.FEATURE_STORE.read() or raw["feature_store"],
        features=_features(raw.get("features") or {}),
        model_dir=_project_path(variables.MODELS.read() or f"data/models/{env.value}"),
        # dev writes the stable reports/evaluation.json; other environments keep their own.
        reports_dir=_project_path(
            variables.REPORTS.read()
            or ("reports" if env is Environment.DEV else f"reports/{env.value}")
        ),
        feedback_log=_project_path(
            variables.FEEDBACK_LOG.read() or f"data/feedback/{env.value}/feedback.jsonl"
        ),
        bentoml_home=_project_path(variables.BENTOML_HOME.read() or f"data/bentoml/{env.value}"),
        serving=ServingSettings(**raw.get("serving", {})),
        monitoring=_monitoring(raw.get("monitoring", {})),
        loop_log=_project_path(variables.LOOP_LOG.read() or f"data/loop/{env.value}/events.jsonl"),
        canary_state=_project_path(
            variables.CANARY_STATE.read() or f"data/loop/{env.value}/canary.json"
        ),
        canary=_canary(raw.get("canary"), ENVIRONMENTS_DIR / f"{env.value}.yaml"),
    )


def _features(raw: dict[str, Any]) -> FeatureSettings:
    known = set(FeatureSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown features setting(s) {unknown}; known: {sorted(known)}")
    ttl_days = raw.get("ttl_days")
    return FeatureSettings(ttl_days={} if ttl_days is None else ttl_days)


def _monitoring(raw: dict[str, Any]) -> MonitoringSettings:
    known = set(MonitoringSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown monitoring setting(s) {unknown}; known: {sorted(known)}")
    return MonitoringSettings(**raw)


def _canary(raw: Any, source: Path) -> CanaryPolicy:
    """The ``canary:`` block of an environment file as a :class:`CanaryPolicy` (its defaults
    when the block is missing or empty); an unknown key or a bad value is a ValueError naming
    the file and the key."""
    where = source.relative_to(PROJECT_ROOT) if source.is_relative_to(PROJECT_ROOT) else source
    if raw is None:
        return CanaryPolicy()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: canary must be a mapping of settings, not {raw!r}")
    known = list(CanaryPolicy.__dataclass_fields__)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown canary setting(s) {unknown}; known: {known}")
    try:
        return CanaryPolicy(**raw)
    except ValueError as error:  # CanaryPolicy's messages start with the key's name
        raise ValueError(f"{where}: canary.{error}") from None
