"""json_safe: what every report and log line turns its figures into."""

import json
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from recsys_assets.core.jsonable import json_safe


def test_missing_and_non_finite_values_become_null():
    values = [float("nan"), float("inf"), -np.inf, np.float64("nan"), pd.NA, pd.NaT, None]
    assert json_safe(values) == [None] * 7


def test_numpy_scalars_dates_and_nesting():
    value = {
        1: (np.int64(3), np.float32(0.5), np.bool_(True)),
        "when": datetime(2024, 3, 1, 9, 30, tzinfo=UTC),
        "day": date(2024, 3, 1),
        "nested": {"x": [np.int32(2)]},
    }
    safe = json_safe(value)
    assert safe == {
        "1": [3, 0.5, True],
        "when": "2024-03-01T09:30:00+00:00",
        "day": "2024-03-01",
        "nested": {"x": [2]},
    }
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


def test_other_objects_become_text():
    assert json_safe(pd.Timedelta(days=1)) == "1 days 00:00:00"
    assert json_safe({"path": __import__("pathlib").Path("a/b")}) == {"path": "a/b"}
