"""Column names and defaults shared by every part of the project.

One place for names, so a rename is one edit and the training path, the serving path and the
reports cannot disagree about what a column is called.
"""

from __future__ import annotations

# --- Canonical event table (what every source is mapped to) -------------------------------
EVENT_ID = "event_id"  # "<source name>:<row number in the source file>", unique per source
SOURCE_ROW = "source_row"  # 0-based row number in the source file (lineage back to the file)
EVENT_TS = "event_ts"  # when the event happened (timezone-naive, in the source's local time)
USER_ID = "user_id"  # customer identifier, as a string
ITEM_ID = "item_id"  # product identifier (stock code), as a string
EVENT_TYPE = "event_type"  # one of EVENT_TYPES
QUANTITY = "quantity"  # units in the event; 1 when the source has no quantity
UNIT_PRICE = "unit_price"  # price per unit; null when the source has no prices
ORDER_ID = "order_id"  # order / invoice / basket identifier; null when unknown
DESCRIPTION = "description"  # product name
COUNTRY = "country"  # customer's country or the store
DEVICE = "device"  # device or channel (web, app, ...)

# Quarantine columns: the first reason that applies, and all of them (';'-separated).
REASON = "reason"
REASONS = "reasons"

REQUIRED_FIELDS: tuple[str, ...] = (USER_ID, ITEM_ID, EVENT_TS)
OPTIONAL_FIELDS: tuple[str, ...] = (
    QUANTITY,
    UNIT_PRICE,
    ORDER_ID,
    EVENT_TYPE,
    DESCRIPTION,
    COUNTRY,
    DEVICE,
)
CANONICAL_COLUMNS: tuple[str, ...] = (
    EVENT_ID,
    SOURCE_ROW,
    EVENT_TS,
    USER_ID,
    ITEM_ID,
    EVENT_TYPE,
    QUANTITY,
    UNIT_PRICE,
    ORDER_ID,
    DESCRIPTION,
    COUNTRY,
    DEVICE,
)

# --- Event types ------------------------------------------------------------------------
VIEW = "view"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
EVENT_TYPES: tuple[str, ...] = (VIEW, ADD_TO_CART, PURCHASE)
DEFAULT_EVENT_TYPE = PURCHASE  # transaction exports (invoices) hold purchases only
DEFAULT_QUANTITY = 1

# --- Defaults ---------------------------------------------------------------------------
DEFAULT_K = 10
SEED = 42

# What each canonical column means; shown in the Dagster catalogue as the tables' column schema.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    EVENT_ID: "Event id: '<source name>:<row number in the source file>'",
    SOURCE_ROW: "0-based row number in the source file (lineage back to the file)",
    EVENT_TS: "When the event happened (timezone-naive, the source's local time)",
    USER_ID: "Customer id, as text",
    ITEM_ID: "Product id (stock code), as text",
    EVENT_TYPE: f"Event type, one of {', '.join(EVENT_TYPES)}",
    QUANTITY: "Units in the event (1 when the source has no quantity)",
    UNIT_PRICE: "Price per unit in the source's currency (null when the source has no prices)",
    ORDER_ID: "Order, invoice or basket id (null when unknown)",
    DESCRIPTION: "Product name",
    COUNTRY: "Customer's country or the store",
    DEVICE: "Device or channel (web, app, ...)",
    REASON: "Quarantine: the first rule the row breaks",
    REASONS: "Quarantine: every rule the row breaks, ';'-separated",
}

# Who answers for the assets (Dagster owners) and how the catalogue groups them.
OWNER_DATA = "team:recsys-data"
