"""Thin Dagster definitions, one folder per domain; the logic lives in the domain
packages beside ``defs`` (``recsys_assets.ingestion``, ``recsys_assets.features``, ...)."""
