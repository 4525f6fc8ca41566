"""Write data/example_shop/events.csv: a small "bring your own data" export.

It comes from the seeded synthetic shop, renamed and reshaped the way a retailer's web-analytics
export might look: its own column names, ISO timestamps with a 'T', no prices, devices as
channels, and a few guest rows without a customer (which the pipeline quarantines).

    python scripts/make_example_shop.py
"""

from __future__ import annotations

from pathlib import Path

from recsys_assets.core import constants as c
from recsys_assets.ingestion.synthetic import SyntheticConfig, generate_events

OUT = Path(__file__).resolve().parents[1] / "data" / "example_shop" / "events.csv"
RENAME = {
    c.USER_ID: "customer",
    c.ITEM_ID: "sku",
    c.EVENT_TS: "ts",
    c.EVENT_TYPE: "event",
    c.QUANTITY: "qty",
    c.ORDER_ID: "basket",
    c.DEVICE: "channel",
    c.COUNTRY: "store_country",
}


def main() -> None:
    config = SyntheticConfig(n_users=150, n_items=120, start="2024-03-01", days=61, seed=7)
    events = generate_events(config)[list(RENAME)].rename(columns=RENAME)
    events["ts"] = events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    guests = events.sample(n=25, random_state=7).index  # guest checkouts: no customer id
    events.loc[guests, "customer"] = None
    OUT.parent.mkdir(parents=True, exist_ok=True)
    events.to_csv(OUT, index=False)
    print(f"wrote {len(events):,} rows to {OUT}")


if __name__ == "__main__":
    main()
