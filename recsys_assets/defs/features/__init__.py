"""Features domain: validated events -> feature tables -> Feast registry -> online store."""

import dagster as dg

from recsys_assets.config import Settings
from recsys_assets.defs.features.assets import feature_registry, feature_tables, online_features
from recsys_assets.defs.features.resources import FeatureStoreResource

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    description="Recompute the feature tables from all validated events, apply the Feast "
    "repository and refresh the online store.",
)

features_automation = dg.AutomationConditionSensorDefinition(
    "features_automation",
    target=dg.AssetSelection.groups("features"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Refreshes the feature tables, the Feast registry and the online store when "
    "new validated events land (the assets' automation conditions say when).",
)

defs = dg.Definitions(
    assets=[feature_tables, feature_registry, online_features],
    jobs=[features_job],
    sensors=[features_automation],
)


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The domain's resources in the environment of ``settings`` (read once, when
    :mod:`recsys_assets.definitions` loads): the Feast repository, its config file and the
    TTLs set for some views."""
    return {
        "feature_store": FeatureStoreResource(
            repo_path=str(settings.feature_repo),
            config_file=settings.feature_store_yaml,
            ttl_days={view: float(days) for view, days in settings.features.ttl_days.items()},
        )
    }
