"""Feature views: one definition of every feature, read offline for training sets (point in
time) and online for serving. Field descriptions come from recsys_assets.core.constants."""

import pandas as pd
from data_sources import (
    FEATURE_TABLES_DIR,
    customer_item_source,
    customer_profile_source,
    item_popularity_source,
    session_context_push,
)
from entities import customer, item
from feast import FeatureView, Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String, UnixTimestamp

from recsys_assets.core import constants as c
from recsys_assets.features.ttl import TTL_FILE, read_ttls

OWNER = "recsys-data@example.com"
TAGS = {"team": "recsys-data", "domain": "features"}
# Each view's TTL follows the data (recsys_assets/features/ttl.py): FeatureRepo.apply derives
# them from the feature tables and writes them beside the tables just before `feast apply`.
# Without that file (a repository applied by hand before any), today's fixed values: 3,650 days
# for the values to date, 7 days for the daily item snapshot, 1 day for session context.
TTLS = read_ttls(FEATURE_TABLES_DIR / TTL_FILE)


def fields(dtypes: dict[str, object]) -> list[Field]:
    """Fields with their meaning from constants.FEATURE_DESCRIPTIONS (every field described)."""
    return [
        Field(name=name, dtype=dtype, description=c.FEATURE_DESCRIPTIONS[name])
        for name, dtype in dtypes.items()
    ]


customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=TTLS["customer_profile"],  # values to date: never expire within the data
    schema=fields(
        {
            c.ORDERS_TOTAL: Int64,
            c.UNITS_TOTAL: Float64,
            c.REVENUE_TOTAL: Float64,
            c.AVG_BASKET_VALUE: Float64,
            c.AVG_BASKET_SIZE: Float64,
            c.FIRST_ORDER_TS: Float64,
            c.LAST_ORDER_TS: Float64,
            c.PRICE_BAND: String,
            c.HOME_COUNTRY: String,
            c.CUSTOMER_RETURN_RATE: Float64,
        }
    ),
    source=customer_profile_source,
    online=True,
    description="What a customer has bought so far: frequency, monetary value, baskets, "
    "price band, country and returns. Updated at the close of each day they buy.",
    owner=OWNER,
    tags=TAGS,
)

item_popularity = FeatureView(
    name="item_popularity",
    entities=[item],
    ttl=TTLS["item_popularity"],  # a snapshot older than the shop's quiet spells is stale
    schema=fields(
        {
            c.SALES_7D: Float64,
            c.SALES_30D: Float64,
            c.SALES_90D: Float64,
            c.BUYERS_30D: Float64,
            c.TREND_7_30: Float64,
            c.ITEM_PRICE: Float64,
            c.REPURCHASE_RATE: Float64,
            c.ITEM_RETURN_RATE: Float64,
            c.ITEM_AGE_DAYS: Float64,
        }
    ),
    source=item_popularity_source,
    online=True,
    description="How an item sells: popularity over 7, 30 and 90 days, trend, price, "
    "repurchase and return rates, age in the catalogue. A snapshot per item per day.",
    owner=OWNER,
    tags=TAGS,
)

customer_item = FeatureView(
    name="customer_item",
    entities=[customer, item],
    ttl=TTLS["customer_item"],  # values to date: never expire within the data
    schema=fields({c.TIMES_BOUGHT: Int64, c.UNITS_BOUGHT: Float64, c.LAST_BOUGHT_TS: Float64}),
    source=customer_item_source,
    online=True,
    description="A customer's history with one item; what makes repeat purchase learnable.",
    owner=OWNER,
    tags=TAGS,
)

session_context = FeatureView(
    name="session_context",
    entities=[customer],
    ttl=TTLS["session_context"],  # context belongs to the current session
    schema=fields({c.DEVICE: String, c.COUNTRY: String}),
    source=session_context_push,
    online=True,
    description="The device and country of the customer's latest event, from the event history "
    "(offline). Its source is the push source session_context_push, which nothing pushes to "
    "yet, and it is not materialised: online it holds no values and reads get the defaults. "
    "No model reads it.",
    owner=OWNER,
    tags=TAGS,
)

request = RequestSource(
    name="request",
    schema=[Field(name=c.REQUEST_TS, dtype=UnixTimestamp, description="When the request is made")],
    description="Values known only when a recommendation is requested.",
)


REQUEST_FEATURES = {
    c.HOUR_OF_DAY: Int64,
    c.DAY_OF_WEEK: Int64,
    c.IS_WEEKEND: Int64,
    c.DAYS_SINCE_LAST_ORDER: Float64,
    c.CUSTOMER_TENURE_DAYS: Float64,
    c.DAYS_SINCE_LAST_BOUGHT: Float64,
}


# Feast compares declared on-demand fields with inferred ones including their descriptions, so
# a described field fails `apply`; the descriptions go into the view's tags instead.
@on_demand_feature_view(
    sources=[customer_profile, customer_item, request],
    schema=[Field(name=name, dtype=dtype) for name, dtype in REQUEST_FEATURES.items()],
    mode="pandas",
    description="Time of the request, and recency computed at request time so it never goes "
    "stale between feature refreshes. Field meanings are in the tags 'field:<name>'.",
    owner=OWNER,
    tags={**TAGS, **{f"field:{name}": c.FEATURE_DESCRIPTIONS[name] for name in REQUEST_FEATURES}},
)
def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Imports inside: Feast stores this function by value and runs it without this module.
    import pandas as pd

    from recsys_assets.core import constants as c
    from recsys_assets.features.tables import recency_features, request_context_features

    request_ts = pd.to_datetime(inputs[c.REQUEST_TS], utc=True)
    seconds = {
        name: pd.to_datetime(inputs[name], unit="s", utc=True)
        for name in (c.LAST_ORDER_TS, c.FIRST_ORDER_TS, c.LAST_BOUGHT_TS)
    }
    recency = recency_features(
        request_ts, seconds[c.LAST_ORDER_TS], seconds[c.FIRST_ORDER_TS], seconds[c.LAST_BOUGHT_TS]
    )
    return pd.concat([request_context_features(request_ts), recency], axis=1)
