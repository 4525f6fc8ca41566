"""The Feast repository as a Dagster resource: which folder and which environment's config."""

from functools import cached_property
from pathlib import Path

import dagster as dg
from pydantic import Field

from recsys_assets.features.store import FeatureRepo


class FeatureStoreResource(dg.ConfigurableResource):
    """The Feast repository (feature_repo/) and its config file for this environment, and the
    TTLs in days set for some views (``features.ttl_days``; the others derive from the data)."""

    repo_path: str
    config_file: str = "feature_store.yaml"
    ttl_days: dict[str, float] = Field(
        default_factory=dict,
        description="TTLs in days of some feature views (features.ttl_days); a view not named "
        "gets the TTL derived from the feature tables at apply.",
    )

    @cached_property
    def repo(self) -> FeatureRepo:
        return FeatureRepo(path=Path(self.repo_path), config_file=self.config_file)

    def store(self):
        return self.repo.store()
