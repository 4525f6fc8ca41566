"""Pickles written before the domain packages existed still load, through their new modules."""

import io
import pickle
from pathlib import Path

import pytest

from recsys_assets.core import pickles
from recsys_assets.release.canary.routing import CanaryConfig

PACKAGE = Path(pickles.__file__).resolve().parents[1]


def _as_written_by_the_old_layout(value: object, old: str, new: str) -> bytes:
    """Protocol 0 names each class's module as text, so the old module name can be put back."""
    data = pickle.dumps(value, protocol=0)
    assert f"c{new}\n".encode() in data
    return data.replace(f"c{new}\n".encode(), f"c{old}\n".encode())


def test_an_old_module_name_loads_as_its_new_module():
    config = CanaryConfig(challenger_tag="recsys-ranker:abc", share=0.25, salt="s")
    old = _as_written_by_the_old_layout(
        config, "recsys_assets.lib.canary", "recsys_assets.release.canary.routing"
    )
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(old)  # plain pickle no longer finds recsys_assets.lib
    assert pickles.load(io.BytesIO(old)) == config


def test_a_current_pickle_loads_unchanged():
    config = CanaryConfig(challenger_tag=None, share=0.0)
    assert pickles.load(io.BytesIO(pickle.dumps(config))) == config


def test_every_moved_module_exists_where_it_moved():
    for old, new in pickles.MOVED_MODULES.items():
        assert old.startswith("recsys_assets."), old
        path = PACKAGE.parent / (new.replace(".", "/") + ".py")
        assert path.is_file(), f"{old} moved to {new}, which does not exist"
