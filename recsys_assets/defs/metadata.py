"""Metadata helpers shared by the domains, so every table reads the same in the catalogue."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from recsys_assets.core.constants import COLUMN_DESCRIPTIONS, FEATURE_DESCRIPTIONS


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The frame's columns, types and meanings as a Dagster table schema."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=str(name),
                type=str(dtype),
                description=COLUMN_DESCRIPTIONS.get(name) or FEATURE_DESCRIPTIONS.get(name),
            )
            for name, dtype in frame.dtypes.items()
        ]
    )


def table_metadata(frame: pd.DataFrame) -> dict[str, object]:
    """Row count and column schema under Dagster's standard keys."""
    return {"dagster/row_count": len(frame), "dagster/column_schema": table_schema(frame)}
