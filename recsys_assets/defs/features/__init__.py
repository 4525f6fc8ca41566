"""Features domain: validated events -> feature tables -> Feast registry -> online store."""

import dagster as dg

from recsys_assets.config import get_settings
from recsys_assets.defs.features.assets import feature_registry, feature_tables, online_features
from recsys_assets.defs.features.resources import FeatureStoreResource

settings = get_settings()

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    description="Recompute the feature tables from all validated events, apply the Feast "
    "repository and refresh the online store.",
)

defs = dg.Definitions(
    assets=[feature_tables, feature_registry, online_features],
    jobs=[features_job],
    resources={
        "feature_store": FeatureStoreResource(
            repo_path=str(settings.feature_repo), config_file=settings.feature_store_yaml
        )
    },
)
