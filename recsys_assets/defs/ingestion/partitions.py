"""Time partitions of the event tables, derived from the active source's config."""

from __future__ import annotations

import pandas as pd
from dagster import DailyPartitionsDefinition, MonthlyPartitionsDefinition, TimeWindow

from recsys_assets.ingestion.sources import SourceSpec, time_range


def build_event_partitions(
    spec: SourceSpec,
) -> DailyPartitionsDefinition | MonthlyPartitionsDefinition:
    """Monthly (or daily) partitions covering the source; bounds from the config or the data.

    Setting ``partitions.start`` and ``partitions.end`` in the source config avoids reading the
    file when the definitions load.
    """
    start, end = spec.partitions.start, spec.partitions.end
    freq = "M" if spec.partitions.granularity == "monthly" else "D"
    if start is None or end is None:
        first, last = time_range(spec)
        start = start or first.to_period(freq).start_time.strftime("%Y-%m-%d")
        end = end or (last.to_period(freq) + 1).start_time.strftime("%Y-%m-%d")
    if spec.partitions.granularity == "daily":
        return DailyPartitionsDefinition(start_date=start, end_date=end)
    return MonthlyPartitionsDefinition(start_date=start, end_date=end)


def naive_bounds(window: TimeWindow) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A partition's window as timezone-naive timestamps, comparable with ``event_ts``."""
    return (
        pd.Timestamp(window.start).tz_localize(None),
        pd.Timestamp(window.end).tz_localize(None),
    )
