"""The ranker's cutoffs and label window follow the test period's length."""

from __future__ import annotations

import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import temporal_split
from recsys_assets.training.schedule import DEFAULT_LABEL_DAYS, ranker_schedule


def _daily(days: int, start: str = "2024-01-01") -> pd.DataFrame:
    stamps = pd.date_range(start, periods=days, freq="D")
    return pd.DataFrame(
        {c.USER_ID: "a", c.ITEM_ID: "i", c.EVENT_TS: stamps, c.EVENT_TYPE: c.PURCHASE}
    )


def test_a_six_week_export_trains_on_windows_of_a_few_days():
    split = temporal_split(_daily(42), "2099-01-01")  # last 10% of 41 days: 4.1 days of test
    schedule = ranker_schedule(split)
    assert schedule.label_days == 5
    split_day = split.split_ts.normalize()
    expected = [split_day - pd.Timedelta(days=5 * i) for i in (1, 2, 3)]
    assert schedule.cutoffs == tuple(t.strftime("%Y-%m-%d") for t in expected)


def test_cutoffs_without_two_weeks_of_history_are_left_out():
    # purchases every day of 2024-01-01 .. 02-29: 14 days of test from 02-15
    split = temporal_split(_daily(60), "2024-02-15")
    schedule = ranker_schedule(split)
    assert schedule.label_days == 14
    # 02-01 and 01-18 keep 31 and 17 days of history before them; 01-04 only 3
    assert schedule.cutoffs == ("2024-02-01", "2024-01-18")
    assert "2 of 3 cutoffs" in schedule.description


def test_a_split_without_a_recorded_test_period_uses_the_default_window():
    split = temporal_split(_daily(120), "2024-04-01")
    legacy = split.__class__(**{**split.__dict__, "end_ts": None})
    assert ranker_schedule(legacy).label_days == DEFAULT_LABEL_DAYS
