"""Quarantine rules on a tiny hand-checked table: one row per problem, plus clean rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.ingestion.sources import SourceSpec, to_canonical
from recsys_assets.ingestion.validation import (
    RULE_CODES,
    QuarantinedEventSchema,
    RawEventSchema,
    ValidatedEventSchema,
    applicable_rules,
    contract_violations,
    split_valid_and_quarantined,
)

MAPPING = {f: f for f in c.REQUIRED_FIELDS + c.OPTIONAL_FIELDS if f != c.DEVICE}
SPEC = SourceSpec(
    name="t",
    columns=MAPPING,
    cancellation_prefix="C",
    product_item_pattern=r"^\d",
    missing_tokens=("nan",),
)

# user, item, qty, price, order, description, event type  -> expected reasons
ROWS = [
    (("1", "10001", 2, 1.5, "500", "MUG", "purchase"), ""),
    (("2", "10002", 1, 3.0, "501", "CUP", "view"), ""),
    ((None, "10003", 1, 1.0, "502", "JAR", "purchase"), "missing_user"),
    (("3", "10004", -2, 1.0, "C503", "TIN", "purchase"), "cancellation;non_positive_quantity"),
    (("4", "10005", 0, 1.0, "504", "BOX", "purchase"), "non_positive_quantity"),
    (("5", "10006", 1, 0.0, "505", "BAG", "purchase"), "non_positive_price"),
    (("6", "POST", 1, 18.0, "506", "POSTAGE", "purchase"), "non_product_item"),
    (("7", "10007", 1, 1.0, "507", "nan", "purchase"), "missing_description"),
    (("1", "10001", 2, 1.5, "500", "MUG", "purchase"), "duplicate"),  # same as the first row
    (("8", "10008", 1, 1.0, "508", "PEN", "refund"), "unknown_event_type"),
    ((None, "M", -1, 0.0, "C509", "nan", "purchase"),
     "missing_user;cancellation;non_positive_quantity;non_positive_price;non_product_item;"
     "missing_description"),
]  # fmt: skip


def _events(rows=ROWS, spec=SPEC) -> pd.DataFrame:
    fields = [c.USER_ID, c.ITEM_ID, c.QUANTITY, c.UNIT_PRICE, c.ORDER_ID, c.DESCRIPTION]
    fields.append(c.EVENT_TYPE)
    frame = pd.DataFrame([values for values, _ in rows], columns=fields)
    frame[c.EVENT_TS] = pd.Timestamp("2011-01-05 10:00")
    frame[c.COUNTRY] = "United Kingdom"
    frame = frame.astype({c.USER_ID: "string", c.ORDER_ID: "string", c.DESCRIPTION: "string"})
    return to_canonical(frame, spec)


def test_each_row_gets_exactly_its_reasons():
    result = split_valid_and_quarantined(_events(), SPEC)
    expected = {i: reasons for i, (_, reasons) in enumerate(ROWS) if reasons}
    got = dict(zip(result.quarantined[c.SOURCE_ROW], result.quarantined[c.REASONS], strict=True))
    assert got == expected
    assert result.valid[c.SOURCE_ROW].tolist() == [0, 1]


def test_first_reason_follows_rule_order():
    result = split_valid_and_quarantined(_events(), SPEC)
    first = dict(zip(result.quarantined[c.SOURCE_ROW], result.quarantined[c.REASON], strict=True))
    assert first[3] == "cancellation"  # before non_positive_quantity in RULES
    assert first[10] == "missing_user"


def test_row_accounting_and_counts():
    result = split_valid_and_quarantined(_events(), SPEC)
    assert len(result.valid) + len(result.quarantined) == len(ROWS)
    assert sum(result.primary_reason_counts.values()) == len(result.quarantined)
    assert result.reason_counts["non_positive_quantity"] == 3  # rows 3, 4 and 10
    assert result.reason_counts["missing_item"] == 0


def test_rules_needing_an_absent_field_are_skipped():
    no_price = replace(SPEC, columns={k: v for k, v in MAPPING.items() if k != c.UNIT_PRICE})
    codes = [rule.code for rule in applicable_rules(no_price)]
    assert "non_positive_price" not in codes
    result = split_valid_and_quarantined(_events(spec=no_price), no_price)
    assert 5 in result.valid[c.SOURCE_ROW].tolist()  # the zero-price row is fine without prices
    assert "non_positive_price" not in result.reason_counts


def test_no_cancellation_or_product_rule_without_config():
    plain = replace(SPEC, cancellation_prefix=None, product_item_pattern=None)
    result = split_valid_and_quarantined(_events(spec=plain), plain)
    assert "cancellation" not in result.reason_counts
    assert "non_product_item" not in result.reason_counts
    assert 6 in result.valid[c.SOURCE_ROW].tolist()  # POST is an item like any other here


def test_empty_partition():
    empty = _events().iloc[0:0]
    result = split_valid_and_quarantined(empty, SPEC)
    assert result.valid.empty and result.quarantined.empty
    assert contract_violations(ValidatedEventSchema, result.valid).empty
    assert contract_violations(QuarantinedEventSchema, result.quarantined).empty


def test_outputs_honour_their_contracts():
    events = _events()
    result = split_valid_and_quarantined(events, SPEC)
    assert contract_violations(RawEventSchema, events).empty
    assert contract_violations(ValidatedEventSchema, result.valid).empty
    assert contract_violations(QuarantinedEventSchema, result.quarantined).empty
    assert set(result.quarantined[c.REASON]) <= set(RULE_CODES)


def test_contract_catches_a_bad_validated_row():
    valid = split_valid_and_quarantined(_events(), SPEC).valid.copy()
    valid.loc[0, c.QUANTITY] = -1.0
    valid.loc[1, c.USER_ID] = None
    failures = contract_violations(ValidatedEventSchema, valid)
    assert set(failures["column"]) == {c.QUANTITY, c.USER_ID}


def test_raw_contract_rejects_wrong_types():
    events = _events()
    events[c.QUANTITY] = events[c.QUANTITY].astype(str)
    assert not contract_violations(RawEventSchema, events).empty


@pytest.mark.parametrize("price", [np.nan, -0.01])
def test_missing_or_negative_price_is_quarantined(price):
    rows = [(("1", "10001", 1, price, "500", "MUG", "purchase"), "non_positive_price")]
    result = split_valid_and_quarantined(_events(rows), SPEC)
    assert result.quarantined[c.REASON].tolist() == ["non_positive_price"]
