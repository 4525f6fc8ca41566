"""Quarantine rules and the pandera contracts of the event tables.

Every row of a raw partition ends up in exactly one of two tables: ``validated_events`` or
``quarantined_events``. A quarantined row keeps all its columns plus the first reason that applies
(``reason``) and every reason that applies (``reasons``, ';'-separated), so nothing is dropped
silently and cancellations (returns are signal) stay queryable:
``SELECT * FROM events.quarantined_events WHERE reasons LIKE '%cancellation%'``.

The rules are plain vectorised masks in one ordered list; docs/data-quality.md is their readable
form. Bump :data:`RULES_VERSION` whenever a rule's behaviour changes: it is part of the lineage of
every partition (source fingerprint + partition + rules version rebuild the exact input).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from recsys_assets.core import constants as c
from recsys_assets.ingestion.sources import SourceSpec

RULES_VERSION = "1"


@dataclass(frozen=True)
class Rule:
    """One reason a row cannot be used for training, serving or evaluation."""

    code: str
    description: str
    mask: Callable[[pd.DataFrame, SourceSpec], pd.Series]  # True where the row breaks the rule
    needs: tuple[str, ...] = ()  # canonical fields the source must provide for the rule to apply
    setting: str | None = None  # a SourceSpec setting that must be set for the rule to apply


def _is_cancellation(events: pd.DataFrame, spec: SourceSpec) -> pd.Series:
    return events[c.ORDER_ID].str.startswith(spec.cancellation_prefix).fillna(False)


def _is_non_product(events: pd.DataFrame, spec: SourceSpec) -> pd.Series:
    pattern = re.compile(spec.product_item_pattern)
    is_product = events[c.ITEM_ID].str.match(pattern).fillna(True)  # null ids: missing_item
    return ~is_product.astype(bool)


def _is_duplicate(events: pd.DataFrame, spec: SourceSpec) -> pd.Series:
    content = [col for col in c.CANONICAL_COLUMNS if col not in (c.EVENT_ID, c.SOURCE_ROW)]
    return events.duplicated(subset=content, keep="first")


RULES: tuple[Rule, ...] = (
    Rule("missing_user", "no customer id (guest checkout or unknown)",
         lambda e, s: e[c.USER_ID].isna()),
    Rule("missing_item", "no item id", lambda e, s: e[c.ITEM_ID].isna()),
    Rule("unknown_event_type", f"event type is not one of {list(c.EVENT_TYPES)}",
         lambda e, s: ~e[c.EVENT_TYPE].isin(c.EVENT_TYPES).fillna(False).astype(bool)),
    Rule("cancellation", "order id starts with the source's cancellation prefix (a return)",
         _is_cancellation, needs=(c.ORDER_ID,), setting="cancellation_prefix"),
    Rule("non_positive_quantity", "quantity is missing, zero or negative",
         lambda e, s: ~(e[c.QUANTITY] > 0), needs=(c.QUANTITY,)),
    Rule("non_positive_price", "unit price is missing, zero or negative",
         lambda e, s: ~(e[c.UNIT_PRICE] > 0), needs=(c.UNIT_PRICE,)),
    Rule("non_product_item", "item id is not a product (postage, fees, manual adjustments)",
         _is_non_product, setting="product_item_pattern"),
    Rule("missing_description", "product description is missing (or a literal like 'nan')",
         lambda e, s: e[c.DESCRIPTION].isna(), needs=(c.DESCRIPTION,)),
    Rule("duplicate", "exact duplicate of an earlier row (all fields equal)", _is_duplicate),
)  # fmt: skip

RULE_CODES: tuple[str, ...] = tuple(rule.code for rule in RULES)


def applicable_rules(spec: SourceSpec) -> tuple[Rule, ...]:
    """Rules whose inputs the source provides (no price column: no price rule) and whose
    setting is configured (no cancellation prefix: no cancellation rule)."""
    present = set(spec.present_fields)
    return tuple(
        rule
        for rule in RULES
        if set(rule.needs) <= present and (rule.setting is None or getattr(spec, rule.setting))
    )


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    reason_counts: dict[str, int]  # rows breaking each rule (a row may break several)
    primary_reason_counts: dict[str, int]  # rows by their first reason (sums to quarantined)


def split_valid_and_quarantined(events: pd.DataFrame, spec: SourceSpec) -> ValidationResult:
    """Apply every applicable rule; rows breaking none are valid, the rest are quarantined."""
    reasons = pd.Series("", index=events.index, dtype="object")
    primary = pd.Series(None, index=events.index, dtype="object")
    reason_counts: dict[str, int] = {}
    for rule in applicable_rules(spec):
        broken = rule.mask(events, spec).to_numpy(dtype=bool)
        reason_counts[rule.code] = int(broken.sum())
        if broken.any():
            reasons.loc[broken] += rule.code + ";"
            primary.loc[broken & primary.isna().to_numpy()] = rule.code
    bad = primary.notna().to_numpy()
    valid = events.loc[~bad].reset_index(drop=True)
    quarantined = events.loc[bad].reset_index(drop=True)
    quarantined[c.REASON] = pd.array(primary[bad].to_numpy(), dtype="string")
    quarantined[c.REASONS] = pd.array(reasons[bad].str.rstrip(";").to_numpy(), dtype="string")
    counts = quarantined[c.REASON].value_counts()
    return ValidationResult(
        valid=valid,
        quarantined=quarantined,
        reason_counts=reason_counts,
        primary_reason_counts={code: int(counts.get(code, 0)) for code in reason_counts},
    )


# --- pandera contracts --------------------------------------------------------------------

_TEXT = pa.Column("string", nullable=True)
_BASE_COLUMNS = {
    c.EVENT_ID: pa.Column("string", nullable=False, unique=True),
    c.SOURCE_ROW: pa.Column("int64", pa.Check.ge(0)),
    c.EVENT_TS: pa.Column("datetime64[ns]", nullable=False),
    c.USER_ID: _TEXT,
    c.ITEM_ID: _TEXT,
    c.EVENT_TYPE: _TEXT,
    c.QUANTITY: pa.Column("float64", nullable=True),
    c.UNIT_PRICE: pa.Column("float64", nullable=True),
    c.ORDER_ID: _TEXT,
    c.DESCRIPTION: _TEXT,
    c.COUNTRY: _TEXT,
    c.DEVICE: _TEXT,
}

RawEventSchema = pa.DataFrameSchema(
    _BASE_COLUMNS, strict=True, ordered=True, name="raw_events",
    description="Canonical events as read from the source, before any business rule.",
)  # fmt: skip

ValidatedEventSchema = RawEventSchema.update_columns(
    {
        c.USER_ID: {"nullable": False},
        c.ITEM_ID: {"nullable": False},
        c.EVENT_TYPE: {"nullable": False, "checks": [pa.Check.isin(c.EVENT_TYPES)]},
        c.QUANTITY: {"nullable": False, "checks": [pa.Check.gt(0)]},
        # Prices may be absent for a whole source; where present they must be positive.
        c.UNIT_PRICE: {"checks": [pa.Check.gt(0, ignore_na=True)]},
    }
).set_name("validated_events")

QuarantinedEventSchema = RawEventSchema.add_columns(
    {
        c.REASON: pa.Column("string", pa.Check.isin(RULE_CODES), nullable=False),
        c.REASONS: pa.Column("string", nullable=False),
    }
).set_name("quarantined_events")


def contract_violations(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Failure cases of a pandera schema (empty when the frame honours the contract)."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])


def restore_event_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Event tables read back from DuckDB come as object columns; give them canonical types."""
    dtypes = {name: str(column.dtype) for name, column in QuarantinedEventSchema.columns.items()}
    return frame.astype({name: dtypes[name] for name in frame.columns if name in dtypes})
