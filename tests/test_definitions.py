"""All definitions load, and every asset is catalogued (description, owner, group, tags)."""

import dagster as dg

from recsys_assets.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("ingestion_job") is not None


def test_every_asset_is_catalogued():
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {"raw_events", "validated_events", "quarantined_events"} <= {
        key.to_user_string() for key in keys
    }
    for key in keys:
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 40, f"{name} lacks a description"
        assert node.owners, f"{name} has no owner"
        assert node.group_name != "default", f"{name} has no group"
        assert node.tags.get("domain"), f"{name} has no domain tag"
        assert node.code_version, f"{name} has no code version"


def test_blocking_checks_guard_validated_events():
    graph = defs.resolve_asset_graph()
    specs = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key)
        for key in graph.asset_check_keys
    }
    assert specs[("validated_events", "row_accounting")].blocking
    assert specs[("validated_events", "contract")].blocking


def test_every_table_column_is_described():
    """The catalogue explains every column the tables can carry (events and features)."""
    import pandas as pd

    from recsys_assets.core import constants as c
    from recsys_assets.defs.metadata import table_schema
    from recsys_assets.features import tables as features

    columns = [*c.CANONICAL_COLUMNS, c.REASON, c.REASONS, *features.CUSTOMER_COLUMNS,
               *features.ITEM_COLUMNS, *features.CUSTOMER_ITEM_COLUMNS]  # fmt: skip
    schema = table_schema(pd.DataFrame(columns=list(dict.fromkeys(columns))))
    undescribed = [column.name for column in schema.columns if not column.description]
    assert undescribed == []
