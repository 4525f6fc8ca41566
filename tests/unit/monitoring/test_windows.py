"""Drift windows of "auto" days: as many whole days as hold enough events, so a busy shop
compares a day and a sparse one weeks (monitoring/loop.py); fixed days stay as they were."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys_assets.config import get_settings
from recsys_assets.config.settings import AUTO, MonitoringSettings
from recsys_assets.monitoring import loop

DATA_END = "2024-03-01 00:00"
LATEST = "2024-03-10 12:00"
# one purchase line an hour from 2024-01-01 to the latest event: 24 lines a day
HOURLY = pd.Series(pd.date_range("2024-01-01", LATEST, freq="h"))


def _windows(min_lines: int, **days) -> loop.Windows:
    days = {"reference_days": AUTO, "window_days": AUTO} | days
    return loop.monitoring_windows(
        LATEST, DATA_END, purchase_ts=HOURLY, min_lines=min_lines, **days
    )


def test_auto_windows_of_a_busy_shop_are_the_floors():
    """100 lines are 4 days and 3 hours of this shop: under the reference's 28 days, and 5
    whole days of the current window (the 100th latest line is 99 hours before the latest)."""
    windows = _windows(100)
    assert windows.reference_start == pd.Timestamp("2024-02-02 00:00")  # 28 days
    assert windows.current_start == pd.Timestamp("2024-03-05 12:00:00.000001")  # 5 days
    assert windows.current_end > pd.Timestamp(LATEST)  # the latest event included
    assert windows.reference_end > pd.Timestamp(DATA_END)  # the data-end event included
    busy = _windows(10)  # 10 lines: within the latest day
    assert busy.current_start == pd.Timestamp("2024-03-09 12:00:00.000001")


def test_auto_windows_of_a_sparse_shop_reach_back_to_hold_the_lines():
    """1,000 lines: 41 days and 16 hours before the data end, so a 42-day reference; only 228
    lines landed since the data end, so the current window holds them all (from the data end)."""
    windows = _windows(1000)
    assert windows.reference_start == pd.Timestamp("2024-01-19 00:00")  # 42 days
    assert windows.current_start == pd.Timestamp(DATA_END) + pd.Timedelta(microseconds=1)


def test_fixed_days_are_kept_and_may_mix_with_auto():
    fixed = loop.monitoring_windows(LATEST, DATA_END, reference_days=28, window_days=2)
    assert fixed.current_start == pd.Timestamp("2024-03-08 12:00:00.000001")
    mixed = _windows(1000, window_days=2)
    assert mixed.reference_start == pd.Timestamp("2024-01-19 00:00")
    assert mixed.current_start == fixed.current_start
    assert loop.monitoring_windows(DATA_END, DATA_END, reference_days=AUTO, window_days=1) is None
    with pytest.raises(ValueError, match="purchase times"):
        loop.monitoring_windows(LATEST, DATA_END, reference_days=AUTO, window_days=1)


def test_auto_window_days_counts_whole_days_from_the_windows_end():
    offsets = pd.Series(pd.to_timedelta([1, 25, 49, 73], unit="h"))
    assert loop.auto_window_days(offsets, 2, at_least=1) == 2  # 25 hours: 2 whole days
    assert loop.auto_window_days(offsets, 3, at_least=1) == 3
    assert loop.auto_window_days(offsets, 9, at_least=1) == 4  # fewer events: all of them
    assert loop.auto_window_days(offsets, 2, at_least=28) == 28
    assert loop.auto_window_days(pd.Series([], dtype="timedelta64[ns]"), 5, at_least=1) == 1
    exactly = pd.Series(pd.to_timedelta([2], unit="D"))
    assert loop.auto_window_days(exactly, 1, at_least=1) == 2  # an event exactly d days back


def test_served_windows_hold_enough_lists_at_both_ends():
    lists = pd.Series(pd.date_range("2024-03-01", periods=240, freq="h", tz="UTC"))  # 10 days
    assert loop.served_window_days(lists, 50) == 3  # the 50th list 49 hours in: 3 whole days
    assert loop.served_window_days(lists, 10) == 1
    assert loop.served_window_days(lists.iloc[:0], 50) == 1


def test_first_and_latest_auto_windows_hold_min_lists_each():
    from recsys_assets.defs.monitoring.assets import first_and_latest

    ts = pd.date_range("2024-03-01", periods=240, freq="h", tz="UTC")
    served = pd.DataFrame({"ts": ts})
    first, latest = first_and_latest(served, AUTO, 50)
    assert len(first) == len(latest) == 72  # 3 days of hourly lists each
    assert first["ts"].max() < latest["ts"].min()
    first, latest = first_and_latest(served, AUTO, 200)  # 200 lists: windows would overlap
    assert latest.empty


def test_auto_is_the_default_and_the_environments_keep_their_days():
    assert MonitoringSettings().reference_days == MonitoringSettings().window_days == AUTO
    assert MonitoringSettings(window_days=AUTO, reference_days=14).reference_days == 14
    with pytest.raises(ValueError, match="non-negative number or 'auto'"):
        MonitoringSettings(window_days="weekly")
    with pytest.raises(ValueError, match="non-negative number, not 'auto'"):
        MonitoringSettings(min_lists="auto")
    for name in ("dev", "test", "acceptance", "prod"):  # what the simulation and demo run on
        monitoring = get_settings(name).monitoring
        assert monitoring.reference_days == 28
        assert monitoring.window_days == (1 if name in ("dev", "test") else 2)
