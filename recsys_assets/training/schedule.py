"""The ranker's training cutoffs and label windows, taken from the data's own time scale.

The ranker learns "what will this customer buy in the next period" at a few cutoffs before the
split. That period must be the one it is judged on: the label window is the test period's
length (rounded up to whole days), and the cutoffs step back one label window at a time from
the split, so the last training window ends where the test period begins. A six-week export
then trains on windows of a few days, two years of grocery baskets on windows of about ten
weeks, UCI Online Retail on windows of 39 days; nothing assumes months.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.protocol import Split

__all__ = ["DEFAULT_LABEL_DAYS", "MIN_HISTORY_DAYS", "RankerSchedule", "ranker_schedule"]

DEFAULT_LABEL_DAYS = 30  # a split without a recorded test period (stored before it was kept)
MIN_HISTORY_DAYS = 14  # history a cutoff needs before it to be worth training on
CUTOFFS = 3


@dataclass(frozen=True)
class RankerSchedule:
    """Training cutoffs (ISO dates, newest first) and the label window they use, in days."""

    cutoffs: tuple[str, ...]
    label_days: int
    description: str


def ranker_schedule(
    split: Split, *, count: int = CUTOFFS, min_history_days: float = MIN_HISTORY_DAYS
) -> RankerSchedule:
    """Up to ``count`` cutoffs one label window apart before the split (see the module notes),
    keeping those with at least ``min_history_days`` of purchases before them."""
    test_days = split.test_days
    label_days = DEFAULT_LABEL_DAYS if test_days is None else max(1, math.ceil(test_days))
    first = split.train[c.EVENT_TS].min()
    split_day = pd.Timestamp(split.split_ts).normalize()
    candidates = [split_day - pd.Timedelta(days=label_days * i) for i in range(1, count + 1)]
    kept = [t for t in candidates if t - first >= pd.Timedelta(days=min_history_days)]
    cutoffs = tuple(t.strftime("%Y-%m-%d") for t in kept)
    basis = (
        f"the test period's {test_days:.1f} days" if test_days is not None
        else f"{DEFAULT_LABEL_DAYS} days (the split records no test period)"
    )  # fmt: skip
    description = (
        f"label window {label_days} days ({basis}); {len(cutoffs)} of {count} cutoffs one window "
        f"apart have {min_history_days:g}+ days of history before them"
        + (f": {', '.join(cutoffs)}" if cutoffs else "")
    )
    return RankerSchedule(cutoffs=cutoffs, label_days=label_days, description=description)
