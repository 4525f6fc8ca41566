"""The event source as a Dagster resource, so a run's config names the source it read."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from recsys_assets.ingestion.sources import SourceSpec, load_source_spec


class EventSourceResource(dg.ConfigurableResource):
    """Reads the events described by a source config (see data/sources/*.yaml)."""

    config_path: str

    @cached_property
    def spec(self) -> SourceSpec:
        return load_source_spec(self.config_path)
