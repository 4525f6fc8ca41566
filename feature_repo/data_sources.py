"""Where feature values come from: parquet tables written by the Dagster `features` assets, and
a push source for request context at serving time. Nothing pushes to it yet: the service does
not write request context to the feature store, so `session_context` is not filled online."""

from pathlib import Path

from feast import FileSource, PushSource

from recsys_assets.core import constants as c

# The Dagster assets write the tables here. Absolute, resolved when `feast apply` imports this
# module: Feast's DuckDB offline store resolves relative paths against the caller's working
# directory, not the repository.
FEATURE_TABLES_DIR = Path(__file__).resolve().parent / "data"


def _table(name: str, description: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str(FEATURE_TABLES_DIR / f"{name}.parquet"),
        timestamp_field=c.FEATURE_TS,
        created_timestamp_column=c.CREATED_TS,
        description=description,
    )


customer_profile_source = _table(
    "customer_profile", "Customer RFM profile, one row per customer and day they bought."
)
item_popularity_source = _table(
    "item_popularity", "Item popularity, price and quality, a daily snapshot per item."
)
customer_item_source = _table(
    "customer_item", "Purchase history of a customer with an item, one row per day bought."
)
session_context_batch = _table(
    "session_context", "Device and country of each customer event, from the event log."
)
session_context_push = PushSource(
    name="session_context_push",
    batch_source=session_context_batch,
    description="For each request's device and country at serving time. Nothing pushes here "
    "yet, so the session_context view holds no online values.",
)
