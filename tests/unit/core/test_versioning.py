"""Data versions: equal content, equal version; any change, another version."""

import pandas as pd

from recsys_assets.core.versioning import data_version


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["1", "2"], "quantity": [1.0, 2.0]})


def test_same_content_same_version_regardless_of_index():
    assert data_version(_frame()) == data_version(_frame().set_axis([10, 11]))


def test_value_order_and_column_changes_change_the_version():
    base = data_version(_frame())
    changed = _frame()
    changed.loc[1, "quantity"] = 3.0
    assert data_version(changed) != base
    assert data_version(_frame().iloc[::-1]) != base
    assert data_version(_frame().rename(columns={"quantity": "qty"})) != base
    assert data_version(_frame().astype({"quantity": "int64"})) != base


def test_empty_frames_are_versioned_by_schema():
    empty = _frame().iloc[0:0]
    assert data_version(empty) == data_version(_frame().iloc[0:0])
    assert data_version(empty) != data_version(empty[["user_id"]])
    assert len(data_version(empty)) == 64
