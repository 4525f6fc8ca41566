"""The model store IO manager shared by the training, evaluation and serving domains.

Dagster's pickling filesystem IO manager, loading through :func:`recsys_assets.core.pickles.load`
so that a split or a model pickled before the domain packages existed (``recsys_assets.lib``)
still loads after an upgrade instead of failing every run that reads it.
"""

from typing import Any

import dagster as dg
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from upath import UPath

from recsys_assets.core import pickles


class _CompatiblePickles(PickledObjectFilesystemIOManager):
    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        with path.open("rb") as file:
            return pickles.load(file)


class ModelStoreIOManager(dg.FilesystemIOManager):
    """Pickles each asset's value under ``base_dir``, as ``FilesystemIOManager`` does."""

    def create_io_manager(self, context: dg.InitResourceContext) -> _CompatiblePickles:
        base_dir = self.base_dir or context.instance.storage_directory()
        return _CompatiblePickles(base_dir=base_dir)
