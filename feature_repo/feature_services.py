"""Feature services: the versioned sets of features a model is trained and served with.

A new model version that needs other features gets a new service (ranker_v3 next); a service
that a promoted model uses is never edited in place. ranker_v2 is what the ranker reads today;
ranker_v1 listed more than it reads and stays for the models recorded under it.
"""

from feast import FeatureService
from feature_views import (
    customer_item,
    customer_profile,
    item_popularity,
    request_features,
    session_context,
)

from recsys_assets.core import constants as c

# Fields are listed, not whole views: a field added to a view later must not slip into a
# service that a trained model depends on.
# fmt: off
ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        customer_profile[
            [
                c.ORDERS_TOTAL,
                c.UNITS_TOTAL,
                c.REVENUE_TOTAL,
                c.AVG_BASKET_VALUE,
                c.AVG_BASKET_SIZE,
                c.FIRST_ORDER_TS,
                c.LAST_ORDER_TS,
                c.PRICE_BAND,
                c.HOME_COUNTRY,
                c.CUSTOMER_RETURN_RATE,
            ]
        ],
        item_popularity[
            [
                c.SALES_7D,
                c.SALES_30D,
                c.SALES_90D,
                c.BUYERS_30D,
                c.TREND_7_30,
                c.ITEM_PRICE,
                c.REPURCHASE_RATE,
                c.ITEM_RETURN_RATE,
                c.ITEM_AGE_DAYS,
            ]
        ],
        customer_item[[c.TIMES_BOUGHT, c.UNITS_BOUGHT, c.LAST_BOUGHT_TS]],
        session_context[[c.DEVICE, c.COUNTRY]],
        request_features[
            [
                c.HOUR_OF_DAY,
                c.DAY_OF_WEEK,
                c.IS_WEEKEND,
                c.DAYS_SINCE_LAST_ORDER,
                c.CUSTOMER_TENURE_DAYS,
                c.DAYS_SINCE_LAST_BOUGHT,
            ]
        ],
    ],
    description="The first ranker service: customer, item, customer-item, session context and "
    "request-time features. The ranker reads only the customer, item and customer-item ones "
    "(ranker_v2); kept for the models whose lineage names it.",
    owner="recsys-data@example.com",
    tags={"model": "ranker", "version": "1"},
)

# Exactly the stored features the XGBoost ranker joins (recsys_assets.training.ranker
# .feature_refs; tests/integration/test_feature_store.py holds them equal). Its derived inputs
# (recency, cadence, ratios, encodings) are computed by the ranker from these, not read.
ranker_v2 = FeatureService(
    name="ranker_v2",
    features=[
        customer_profile[
            [
                c.ORDERS_TOTAL,
                c.UNITS_TOTAL,
                c.REVENUE_TOTAL,
                c.AVG_BASKET_VALUE,
                c.AVG_BASKET_SIZE,
                c.FIRST_ORDER_TS,
                c.LAST_ORDER_TS,
                c.PRICE_BAND,
                c.HOME_COUNTRY,
                c.CUSTOMER_RETURN_RATE,
            ]
        ],
        item_popularity[
            [
                c.SALES_7D,
                c.SALES_30D,
                c.SALES_90D,
                c.BUYERS_30D,
                c.TREND_7_30,
                c.ITEM_PRICE,
                c.REPURCHASE_RATE,
                c.ITEM_RETURN_RATE,
                c.ITEM_AGE_DAYS,
            ]
        ],
        customer_item[[c.TIMES_BOUGHT, c.UNITS_BOUGHT, c.LAST_BOUGHT_TS]],
    ],
    description="What the XGBoost ranker reads: the stored customer, item and customer-item "
    "features, no session context and no request-time features.",
    owner="recsys-data@example.com",
    tags={"model": "ranker", "version": "2"},
)
# fmt: on
