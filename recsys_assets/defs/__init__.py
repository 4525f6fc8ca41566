"""Thin Dagster definitions, one folder per domain; the logic lives in ``recsys_assets.lib``."""
