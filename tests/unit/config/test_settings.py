"""The environment helper: one setting picks the environment; secrets stay as EnvVars."""

import dagster as dg
import pytest

from recsys_assets.config import Environment, get_settings
from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.config.variables import SecretRef
from recsys_assets.defs.warehouse import warehouse_io_manager


@pytest.mark.parametrize("name", ["dev", "test"])
def test_local_environments_use_local_files(name, monkeypatch):
    monkeypatch.delenv("RECSYS_WAREHOUSE", raising=False)
    monkeypatch.delenv("RECSYS_DATA_CONFIG", raising=False)
    for var in ("RECSYS_MODELS", "RECSYS_REPORTS"):
        monkeypatch.delenv(var, raising=False)
    settings = get_settings(name)
    assert settings.environment == Environment(name)
    assert settings.warehouse_path == PROJECT_ROOT / "data" / "warehouse" / f"{name}.duckdb"
    assert settings.data_config == PROJECT_ROOT / "data" / "sources" / "online_retail.yaml"
    assert settings.model_dir == PROJECT_ROOT / "data" / "models" / name
    # dev owns the stable reports/evaluation.json; other environments never overwrite it.
    expected_reports = PROJECT_ROOT / "reports" / ("" if name == "dev" else name)
    assert settings.reports_dir == expected_reports


@pytest.mark.parametrize("name", ["acceptance", "prod"])
def test_deployed_environments_take_the_warehouse_from_a_secret(name, monkeypatch):
    monkeypatch.delenv("RECSYS_WAREHOUSE", raising=False)
    settings = get_settings(name)
    assert isinstance(settings.warehouse, SecretRef)  # the name only: config imports no Dagster
    assert settings.warehouse.env_var_name == f"RECSYS_{name.upper()}_WAREHOUSE"
    assert settings.warehouse_path is None
    # ... and the Dagster resource gets it as an EnvVar, read only when a run needs it
    database = warehouse_io_manager(settings.warehouse).database
    assert isinstance(database, dg.EnvVar)
    assert database.env_var_name == f"RECSYS_{name.upper()}_WAREHOUSE"


def test_a_run_without_the_secret_fails_with_dagsters_message(monkeypatch):
    monkeypatch.delenv("RECSYS_WAREHOUSE", raising=False)
    monkeypatch.delenv("RECSYS_ACCEPTANCE_WAREHOUSE", raising=False)
    manager = warehouse_io_manager(get_settings("acceptance").warehouse)
    unset = 'fetch the environment variable "RECSYS_ACCEPTANCE_WAREHOUSE" which is not set'
    with (
        pytest.raises(dg.DagsterInvalidConfigError, match=unset),
        dg.build_resources({"warehouse": manager}),
    ):
        pass


def test_environment_variable_picks_and_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_ENV", "dev")
    monkeypatch.setenv("RECSYS_DATA_CONFIG", str(tmp_path / "mine.yaml"))
    monkeypatch.setenv("RECSYS_WAREHOUSE", str(tmp_path / "w.duckdb"))
    settings = get_settings()
    assert settings.environment is Environment.DEV
    assert settings.data_config == tmp_path / "mine.yaml"
    assert settings.warehouse_path == tmp_path / "w.duckdb"


def test_unknown_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RECSYS_ENV", "staging")
    with pytest.raises(ValueError, match="RECSYS_ENV='staging' is not an environment"):
        get_settings()


@pytest.mark.parametrize(
    ("name", "mode"),
    [("dev", "warn"), ("test", "warn"), ("acceptance", "block"), ("prod", "block")],
)
def test_latency_blocks_only_where_measured_on_production_like_hardware(name, mode):
    assert get_settings(name).serving.latency_gate == mode


def test_an_unknown_latency_gate_mode_is_a_clear_error():
    from recsys_assets.config.settings import ServingSettings

    with pytest.raises(ValueError, match=r"latency_gate must be 'block' or 'warn', not 'off'"):
        ServingSettings(latency_gate="off")
