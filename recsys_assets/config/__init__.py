"""Environment settings: which environment runs, and what it reads and writes."""

from recsys_assets.config.settings import Environment, Settings, get_settings

__all__ = ["Environment", "Settings", "get_settings"]
