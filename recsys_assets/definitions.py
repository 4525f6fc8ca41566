"""All Dagster definitions of the project, for the environment that ``RECSYS_ENV`` picks."""

import os

import dagster as dg

from recsys_assets.config import get_settings, variables
from recsys_assets.defs import (
    evaluation,
    features,
    ingestion,
    monitoring,
    observability,
    release,
    serving,
    training,
)
from recsys_assets.defs.model_store import ModelStoreIOManager
from recsys_assets.defs.warehouse import warehouse_io_manager

settings = get_settings()
if settings.warehouse_path is not None:  # a fresh clone has no data/warehouse/ yet
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
# BentoML reads its store location once, when first imported: fix it before any asset does.
os.environ.setdefault(variables.BENTOML_HOME.name, str(settings.bentoml_home))

shared_resources = {
    # DuckDB file locally; from a secret (a SecretRef, handed over as dg.EnvVar) in acceptance
    # and prod.
    "warehouse": warehouse_io_manager(settings.warehouse),
    # The event source config and the Feast repository of this environment.
    **ingestion.resources_for(settings),
    **features.resources_for(settings),
    # Fitted models and splits, pickled per asset under data/models/<environment>/.
    "model_store": ModelStoreIOManager(base_dir=str(settings.model_dir)),
}

defs = dg.Definitions.merge(
    ingestion.defs,
    features.defs,
    training.defs,
    evaluation.defs,
    serving.defs,
    monitoring.defs,
    release.defs,
    observability.defs,
    dg.Definitions(resources=shared_resources),
)
