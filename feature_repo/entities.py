"""Entities: who and what features describe. Join keys are the canonical event columns."""

from feast import Entity, ValueType

from recsys_assets.core import constants as c

customer = Entity(
    name="customer",
    join_keys=[c.USER_ID],
    value_type=ValueType.STRING,
    description="A shopper, identified by the source's customer id (as text).",
    tags={"pii": "customer_id"},
)

item = Entity(
    name="item",
    join_keys=[c.ITEM_ID],
    value_type=ValueType.STRING,
    description="A product, identified by the source's stock code (as text).",
)
