"""Feature services: the versioned sets of features a model is trained and served with.

A new model version that needs other features gets a new service (ranker_v2); a service that
a promoted model uses is never edited in place.
"""

from feast import FeatureService
from feature_views import (
    customer_item,
    customer_profile,
    item_popularity,
    request_features,
    session_context,
)

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[customer_profile, item_popularity, customer_item, session_context, request_features],
    description="Features of the first XGBoost ranker: customer, item, customer-item, session "
    "context and request-time features.",
    owner="recsys-data@example.com",
    tags={"model": "ranker", "version": "1"},
)
