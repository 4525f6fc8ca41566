"""The Feast repository as a Dagster resource: which folder and which environment's config."""

from functools import cached_property
from pathlib import Path

import dagster as dg

from recsys_assets.features.store import FeatureRepo


class FeatureStoreResource(dg.ConfigurableResource):
    """The Feast repository (feature_repo/) and its config file for this environment."""

    repo_path: str
    config_file: str = "feature_store.yaml"

    @cached_property
    def repo(self) -> FeatureRepo:
        return FeatureRepo(path=Path(self.repo_path), config_file=self.config_file)

    def store(self):
        return self.repo.store()
