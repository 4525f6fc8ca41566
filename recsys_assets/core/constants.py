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

# === Feature tables (recsys_assets.features.tables) and the Feast repository =====================
# Appended as one block. Names of the feature tables' columns; FEATURE_DESCRIPTIONS describes
# every field a Feast view declares. Customer and item return rates, and the customer's home
# country, have distinct names: one feature service joins them into one row next to the session's
# `country`, and Feast refuses two features of the same name.

FEATURE_TS = "event_timestamp"  # when a row's values became known (the close of their day), UTC
CREATED_TS = "created_ts"  # equal to FEATURE_TS; Feast breaks ties on it
REQUEST_TS = "request_ts"  # when a recommendation is requested (request source of Feast)

# Customer profile: one row per customer and day they bought, cumulative to that day.
ORDERS_TOTAL = "orders_total"
UNITS_TOTAL = "units_total"
REVENUE_TOTAL = "revenue_total"
AVG_BASKET_VALUE = "avg_basket_value"
AVG_BASKET_SIZE = "avg_basket_size"
FIRST_ORDER_TS = "first_order_ts"
LAST_ORDER_TS = "last_order_ts"
PRICE_BAND = "price_band"
HOME_COUNTRY = "home_country"
CUSTOMER_RETURN_RATE = "customer_return_rate"

# Item popularity: a daily snapshot per item from its first sale on.
SALES_7D = "sales_7d"
SALES_30D = "sales_30d"
SALES_90D = "sales_90d"
BUYERS_30D = "buyers_30d"
TREND_7_30 = "trend_7_30"
ITEM_PRICE = "item_price"
REPURCHASE_RATE = "repurchase_rate"
ITEM_RETURN_RATE = "item_return_rate"
ITEM_AGE_DAYS = "item_age_days"

# Customer-item history: one row per customer, item and day the customer bought the item.
TIMES_BOUGHT = "times_bought"
UNITS_BOUGHT = "units_bought"
LAST_BOUGHT_TS = "last_bought_ts"

# Request-time features (on-demand: computed when a recommendation is requested).
HOUR_OF_DAY = "hour_of_day"
DAY_OF_WEEK = "day_of_week"
IS_WEEKEND = "is_weekend"
DAYS_SINCE_LAST_ORDER = "days_since_last_order"
CUSTOMER_TENURE_DAYS = "customer_tenure_days"
DAYS_SINCE_LAST_BOUGHT = "days_since_last_bought"

# Price bands (terciles of the purchased unit prices).
PRICE_BAND_LOW = "low"
PRICE_BAND_MID = "mid"
PRICE_BAND_HIGH = "high"
PRICE_BAND_UNKNOWN = "unknown"  # the source has no prices
PRICE_BANDS: tuple[str, ...] = (PRICE_BAND_LOW, PRICE_BAND_MID, PRICE_BAND_HIGH, PRICE_BAND_UNKNOWN)

# The feature columns of each table (entity keys, FEATURE_TS and CREATED_TS come first).
CUSTOMER_FEATURES: tuple[str, ...] = (
    ORDERS_TOTAL,
    UNITS_TOTAL,
    REVENUE_TOTAL,
    AVG_BASKET_VALUE,
    AVG_BASKET_SIZE,
    FIRST_ORDER_TS,
    LAST_ORDER_TS,
    PRICE_BAND,
    HOME_COUNTRY,
    CUSTOMER_RETURN_RATE,
)
ITEM_FEATURES: tuple[str, ...] = (
    SALES_7D,
    SALES_30D,
    SALES_90D,
    BUYERS_30D,
    TREND_7_30,
    ITEM_PRICE,
    REPURCHASE_RATE,
    ITEM_RETURN_RATE,
    ITEM_AGE_DAYS,
)
CUSTOMER_ITEM_FEATURES: tuple[str, ...] = (TIMES_BOUGHT, UNITS_BOUGHT, LAST_BOUGHT_TS)
REQUEST_CONTEXT_FEATURES: tuple[str, ...] = (HOUR_OF_DAY, DAY_OF_WEEK, IS_WEEKEND)
RECENCY_FEATURES: tuple[str, ...] = (
    DAYS_SINCE_LAST_ORDER,
    CUSTOMER_TENURE_DAYS,
    DAYS_SINCE_LAST_BOUGHT,
)

# What each feature-store field means, with its unit (Feast field descriptions come from here).
FEATURE_DESCRIPTIONS: dict[str, str] = {
    FEATURE_TS: "When the row's values became known: the end (UTC midnight) of the day they cover",
    CREATED_TS: "Equal to event_timestamp; Feast breaks ties between rows on it",
    REQUEST_TS: "When the recommendation is requested (UTC)",
    ORDERS_TOTAL: "Distinct orders the customer has placed so far (count; frequency)",
    UNITS_TOTAL: "Units the customer has bought so far (count of units)",
    REVENUE_TOTAL: "Money the customer has spent so far, sum of quantity x unit price "
    "(source currency; null without prices)",
    AVG_BASKET_VALUE: "Mean value of the customer's orders so far: revenue_total / orders_total "
    "(source currency; null without prices)",
    AVG_BASKET_SIZE: "Mean number of distinct items per order of the customer so far (items)",
    FIRST_ORDER_TS: "Time of the customer's first purchase (UTC; Unix seconds in the store)",
    LAST_ORDER_TS: "Time of the customer's latest purchase so far (UTC; Unix seconds in the store)",
    PRICE_BAND: "Band (low, mid, high) of the customer's median purchased unit price among the "
    "terciles of all purchased unit prices; unknown without prices",
    HOME_COUNTRY: "The country the customer has bought from most often so far (ties: "
    "alphabetical; null if unknown)",
    CUSTOMER_RETURN_RATE: "Returned lines / purchased lines of the customer so far (ratio; 0 "
    "without returns)",
    SALES_7D: "Purchase lines containing the item in the last 7 closed days (count; popularity)",
    SALES_30D: "Purchase lines containing the item in the last 30 closed days (count)",
    SALES_90D: "Purchase lines containing the item in the last 90 closed days (count)",
    BUYERS_30D: "Distinct customers who bought the item in the last 30 closed days (count)",
    TREND_7_30: "Daily sales of the last 7 days over those of the last 30, each + 0.001 "
    "(ratio; 1 is flat, above 1 rising)",
    ITEM_PRICE: "Median unit price of the item's purchase lines in the last 90 days, else its "
    "latest known price (source currency; null without prices)",
    REPURCHASE_RATE: "Share of the item's buyers so far who bought it in two or more orders "
    "(ratio)",
    ITEM_RETURN_RATE: "Returned lines / sold lines of the item so far (ratio; 0 without returns)",
    ITEM_AGE_DAYS: "Days from the item's first sale to the snapshot (days, fractional)",
    TIMES_BOUGHT: "Distinct orders of the customer that contained the item so far (count)",
    UNITS_BOUGHT: "Units of the item the customer has bought so far (count of units)",
    LAST_BOUGHT_TS: "Time the customer last bought the item so far (UTC; Unix seconds in the "
    "store)",
    HOUR_OF_DAY: "Hour of the request, 0-23 (UTC)",
    DAY_OF_WEEK: "Day of the week of the request, Monday = 0 .. Sunday = 6 (UTC)",
    IS_WEEKEND: "1 if the request falls on a Saturday or Sunday (UTC), else 0",
    DAYS_SINCE_LAST_ORDER: "Days from the customer's latest purchase to the request (days, "
    "fractional; null for a customer without purchases)",
    CUSTOMER_TENURE_DAYS: "Days from the customer's first purchase to the request (days, "
    "fractional; null for a customer without purchases)",
    DAYS_SINCE_LAST_BOUGHT: "Days from the customer's latest purchase of the item to the request "
    "(days, fractional; null if never bought)",
    DEVICE: "Device or channel of the customer's current session (web, app, ...)",
    COUNTRY: "Country of the customer's current session",
}

# Values a server uses for an unknown customer, item or pair (what no history means). NaN:
# unknown or undefined (no price, no purchase time, 0 / 0); None: no value (no country).
DEFAULT_FEATURE_VALUES: dict[str, object] = {
    ORDERS_TOTAL: 0,
    UNITS_TOTAL: 0.0,
    REVENUE_TOTAL: 0.0,
    AVG_BASKET_VALUE: float("nan"),
    AVG_BASKET_SIZE: float("nan"),
    FIRST_ORDER_TS: float("nan"),
    LAST_ORDER_TS: float("nan"),
    PRICE_BAND: PRICE_BAND_UNKNOWN,
    HOME_COUNTRY: None,
    CUSTOMER_RETURN_RATE: 0.0,
    SALES_7D: 0.0,
    SALES_30D: 0.0,
    SALES_90D: 0.0,
    BUYERS_30D: 0.0,
    TREND_7_30: 1.0,
    ITEM_PRICE: float("nan"),
    REPURCHASE_RATE: 0.0,
    ITEM_RETURN_RATE: 0.0,
    ITEM_AGE_DAYS: 0.0,
    TIMES_BOUGHT: 0,
    UNITS_BOUGHT: 0.0,
    LAST_BOUGHT_TS: float("nan"),
    DAYS_SINCE_LAST_ORDER: float("nan"),
    CUSTOMER_TENURE_DAYS: float("nan"),
    DAYS_SINCE_LAST_BOUGHT: float("nan"),
    DEVICE: "unknown",  # no session context pushed (or none in the event history)
    COUNTRY: "unknown",
}
# === end of the feature block =================================================================

# === Evaluation metrics (recsys_assets.evaluation.metrics)
# ===========================================
# Appended as one block. Columns of a recommendation list and of the purchases it is scored on.
PREDICTION = "prediction"  # a model's score for a customer-item pair (higher is better)
RANK = "rank"  # 1-based position of an item in a customer's recommendation list
VALUE = "value"  # money of a purchase line, quantity x unit price (source currency)
# === end of the evaluation block ==============================================================

# === Offline evaluation protocol and candidate generators (recsys_assets.evaluation.protocol, ====
# recsys_assets.training.candidates). Appended as one block.
DEFAULT_SPLIT = "2011-11-01"  # train on events before it, test on events from it on (UCI)
FALLBACK_TEST_FRACTION = 0.1  # split date outside the data: the last 10% of the time range
DEFAULT_KS: tuple[int, ...] = (5, 10, 20)  # cut-offs of the metric-at-K curve
CANDIDATES_N = 100  # candidates per customer handed to a re-ranker
SCORE = "score"  # a candidate generator's score for a customer-item pair (higher is better)
HOME_MARKET = "United Kingdom"  # the country of the "uk" segment (the rest is "rest")
# === end of the offline evaluation block ======================================================

# === Serving (bentos/recommender, recsys_assets.serving.model, deploy/) ==========================
BENTO_NAME = "recommender"  # bento and container image name; tag = the promoted model version
SERVING_MODEL_NAME = "recsys-ranker"  # name of the promoted model in the BentoML model store
SERVICE_PORT = 3000  # HTTP port of the service (bentoml serve default)
LIVENESS_PATH = "/livez"  # BentoML's built-in liveness endpoint
READINESS_PATH = "/readyz"  # BentoML's built-in readiness endpoint (false until a model loads)
METRICS_PATH = "/metrics"  # Prometheus metrics
MAX_K = 100  # largest list a client may ask for
# === end of the serving block =================================================================
