"""The Feast feature store end to end: tables from real assets, apply, materialise, read.

One scratch copy of feature_repo/ per module; events come from the synthetic shop, ingested by
the real ingestion assets into a scratch DuckDB warehouse.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pandas as pd
import pytest

from recsys_assets.core import constants as c
from recsys_assets.defs.features.assets import feature_registry, feature_tables, online_features
from recsys_assets.features.store import (
    FEATURE_SERVICE,
    FEATURE_SERVICE_V1,
    FeatureRepo,
    FeatureRepoError,
)
from recsys_assets.features.store import online_features as read
from recsys_assets.training.ranker import feature_refs
from tests.conftest import copy_feature_repo
from tests.integration.support import INGESTION_ASSETS, ingest_partition, scratch_resources

pytestmark = pytest.mark.integration

SYNTHETIC = """name: synthetic_small
kind: synthetic
synthetic:
  n_users: 80
  n_items: 50
  start: 2011-01-01
  days: 40
  seed: 11
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Ingest two months of synthetic events, then run the features assets once."""
    root = tmp_path_factory.mktemp("features")
    (root / "synthetic.yaml").write_text(SYNTHETIC)
    repo = copy_feature_repo(root / "feature_repo")
    resources = scratch_resources(root / "synthetic.yaml", root / "w.duckdb", repo)
    with dg.instance_for_test() as instance:
        for key in ("2011-01-01", "2011-02-01"):
            assert ingest_partition(
                root / "synthetic.yaml", root / "w.duckdb", key, instance
            ).success
        result = dg.materialize(
            [*INGESTION_ASSETS, feature_tables, feature_registry, online_features],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.groups("features"),
        )
    events = pd.read_parquet(repo / "data" / "customer_profile.parquet")
    return {"result": result, "repo": FeatureRepo(repo), "customer_profile": events}


def test_assets_materialise_and_online_matches_offline(built):
    result = built["result"]
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "training_serving_consistency" and check.passed
    assert check.metadata["values_compared"].value > 500
    assert check.metadata["mismatches"].value == 0
    # the online side also as the service reads it (FeastOnlineReader), on the ranker's features
    assert check.metadata["served_values_compared"].value > 500
    assert check.metadata["served_mismatches"].value == 0


def test_registry_lists_every_view_and_a_versioned_service(built):
    store = built["repo"].store()
    views = {v.name for v in store.list_feature_views()}
    assert {"customer_profile", "item_popularity", "customer_item", "session_context"} <= views
    service = store.get_feature_service(FEATURE_SERVICE_V1)  # kept for lineage that names it
    assert service.tags["version"] == "1"
    ranker = store.get_feature_service(FEATURE_SERVICE)  # what the ranker reads, and only that
    assert ranker.tags["version"] == FEATURE_SERVICE.removeprefix("ranker_v")
    refs = [f"{p.name}:{f.name}" for p in ranker.feature_view_projections for f in p.features]
    assert refs == feature_refs()
    views = store.list_feature_views()
    registered = {f"{view.name}:{field.name}" for view in views for field in view.features}
    assert set(refs) <= registered
    for view in store.list_feature_views():
        assert view.description and view.owner
        assert all(field.description for field in view.features), view.name


def test_unknown_entities_get_defaults_and_a_flag(built):
    store = built["repo"].store()
    known = built["customer_profile"][c.USER_ID].iloc[0]
    at = pd.Timestamp("2011-02-10", tz="UTC")
    rows = [
        {c.USER_ID: known, c.ITEM_ID: "I00001", c.REQUEST_TS: at},
        {c.USER_ID: "nobody", c.ITEM_ID: "nothing", c.REQUEST_TS: at},
    ]
    frame = read(store, rows).set_index(c.USER_ID)  # keyed by name, never by position
    assert bool(frame.loc[known, "customer_profile_known"])
    assert not bool(frame.loc["nobody", "customer_profile_known"])
    assert not bool(frame.loc["nobody", "item_popularity_known"])
    assert frame.loc["nobody", c.ORDERS_TOTAL] == c.DEFAULT_FEATURE_VALUES[c.ORDERS_TOTAL]
    assert frame.loc["nobody", c.PRICE_BAND] == c.DEFAULT_FEATURE_VALUES[c.PRICE_BAND]
    assert frame.loc[known, c.ORDERS_TOTAL] >= 1
    assert frame[c.ORDERS_TOTAL].dtype == "int64"  # counts stay integers after filling
    assert c.DEVICE not in frame.columns  # the ranker's service has no session context
    first = read(store, rows, service=FEATURE_SERVICE_V1).set_index(c.USER_ID)
    assert first.loc["nobody", c.DEVICE] == "unknown"  # no session context: a default, flagged
    assert not bool(first.loc["nobody", "session_context_known"])


def test_point_in_time_join_never_sees_the_future(built):
    """A training row at time t sees only the customer's profile stamped at or before t."""
    store = built["repo"].store()
    profile = built["customer_profile"]
    history = profile.groupby(c.USER_ID).filter(lambda rows: len(rows) >= 2)
    customer = history[c.USER_ID].iloc[0]
    rows = history[history[c.USER_ID] == customer].sort_values(c.FEATURE_TS)
    first, second = rows.iloc[0], rows.iloc[1]
    just_before_second = second[c.FEATURE_TS] - pd.Timedelta(seconds=1)
    entity_df = pd.DataFrame(
        {c.USER_ID: [customer] * 3,
         c.FEATURE_TS: [first[c.FEATURE_TS] - pd.Timedelta(seconds=1), just_before_second,
                        second[c.FEATURE_TS]]}
    )  # fmt: skip
    got = store.get_historical_features(
        entity_df=entity_df, features=[f"customer_profile:{c.ORDERS_TOTAL}"]
    ).to_df().sort_values(c.FEATURE_TS)  # fmt: skip
    values = got[c.ORDERS_TOTAL].tolist()
    assert pd.isna(values[0])  # nothing known before the first day closed
    assert values[1] == first[c.ORDERS_TOTAL]  # a leaky join would show the second day here
    assert values[2] == second[c.ORDERS_TOTAL]
    assert second[c.ORDERS_TOTAL] > first[c.ORDERS_TOTAL]


def _catalogue(built) -> list[str]:
    items = pd.read_parquet(built["repo"].table_path("item_popularity"))[c.ITEM_ID]
    return items.astype(str).unique().tolist()


def test_the_check_compares_what_the_services_reader_serves(built):
    """A reader that serves something else than the offline store (here: a catalogue without the
    items, so their features come back missing) fails the report on the served path alone."""
    from recsys_assets.features.store import STORED_VIEWS, consistency_report
    from recsys_assets.serving.model import FeastOnlineReader

    store = built["repo"].store()
    tables = {name: pd.read_parquet(built["repo"].table_path(name)) for name in STORED_VIEWS}
    end = max(t[c.FEATURE_TS].max() for t in tables.values()).to_pydatetime()
    served = FeastOnlineReader(store, _catalogue(built))
    right = consistency_report(store, tables, end, reader=served)
    assert right.passed and right.served_values > 500 and right.served_mismatches == 0
    wrong = consistency_report(store, tables, end, reader=FeastOnlineReader(store, []))
    assert wrong.mismatches == 0 and wrong.served_mismatches > 0 and not wrong.passed
    assert "| item_popularity |" in wrong.examples and "| service reader |" in wrong.examples


@pytest.mark.parametrize("outage", ["sqlite_tables_missing", "sqlite_not_a_database", "redis_down"])
def test_a_store_that_is_down_raises_what_serving_falls_back_on(
    built, tmp_path, monkeypatch, outage
):
    """The service's reader over a real Feast store whose online store is gone raises one of
    FEATURE_STORE_ERRORS (the fallback), not an error that would be taken for a bug."""
    import numpy as np

    from recsys_assets.serving.model import FEATURE_STORE_ERRORS, FeastOnlineReader
    from tests.integration.support import free_port

    repo = built["repo"]
    if outage == "redis_down":
        monkeypatch.setenv("RECSYS_FEAST_REDIS", f"127.0.0.1:{free_port()}")  # nothing listens
        config = str(repo.path / "environments" / "redis.yaml")
    else:
        online = tmp_path / "online_store.db"  # missing: SQLite creates it, without tables
        if outage == "sqlite_not_a_database":
            online.write_bytes(b"not a database\n" * 1000)
        text = (repo.path / "feature_store.yaml").read_text()
        assert "path: data/online_store.db" in text
        config = tmp_path / "feature_store.yaml"
        config.write_text(text.replace("path: data/online_store.db", f"path: {online}"))
    store = FeatureRepo(repo.path, str(config)).store()  # the registry is intact
    reader = FeastOnlineReader(store, _catalogue(built))
    customer = str(built["customer_profile"][c.USER_ID].iloc[0])
    with pytest.raises(FEATURE_STORE_ERRORS):
        reader.read(customer, np.array(_catalogue(built)[:3], dtype=object), pd.Timestamp.now())


def test_pushed_context_is_served(built):
    store = built["repo"].store()
    now = pd.Timestamp.now(tz="UTC")
    pushed = pd.DataFrame(
        {c.USER_ID: ["U-push"], c.FEATURE_TS: [now], c.CREATED_TS: [now],
         c.DEVICE: ["app"], c.COUNTRY: ["France"]}
    )  # fmt: skip
    from feast.data_source import PushMode

    store.push("session_context_push", pushed, to=PushMode.ONLINE)
    got = store.get_online_features(
        features=["session_context:device", "session_context:country"],
        entity_rows=[{c.USER_ID: "U-push"}],
    ).to_dict()
    assert got[c.DEVICE] == ["app"] and got[c.COUNTRY] == ["France"]


def test_broken_repo_fails_apply_clearly_and_keeps_the_registry(built, tmp_path):
    repo = built["repo"]
    before = {v.name for v in repo.store().list_feature_views()}
    broken = repo.path / "broken_view.py"
    broken.write_text("from feast import FeatureView\nbroken = FeatureView(name='broken')\n")
    try:
        with pytest.raises(FeatureRepoError, match="feast apply failed"):
            repo.apply()
    finally:
        broken.unlink()
    store = repo.store()
    assert {v.name for v in store.list_feature_views()} == before
    online = store.get_online_features(
        features=[f"customer_profile:{c.ORDERS_TOTAL}"],
        entity_rows=[{c.USER_ID: built["customer_profile"][c.USER_ID].iloc[0]}],
    ).to_dict()
    assert online[c.ORDERS_TOTAL][0] is not None  # the previous registry still serves

    bad_yaml = FeatureRepo(repo.path, config_file="bad.yaml")
    (repo.path / "bad.yaml").write_text("project: [unclosed\n")
    with pytest.raises(FeatureRepoError, match=r"feast apply failed"):
        bad_yaml.apply()


@pytest.fixture
def redis_db(monkeypatch):
    """A scratch Redis database on the loopback server (CI starts it; see .ci/run)."""
    import redis  # a hard dependency (feast[redis]): a broken install fails here, never skips

    client = redis.Redis(host="127.0.0.1", port=6379, db=15)
    try:
        client.ping()  # no server is an error, not a skip: the production-like profile needs it
    except redis.exceptions.ConnectionError as error:
        pytest.fail(
            f"no Redis server on 127.0.0.1:6379 ({error}); the Redis online-store test needs "
            "one: run scripts/ensure_redis.sh (make test does) or apt-get install redis-server",
            pytrace=False,
        )
    client.flushdb()
    monkeypatch.setenv("RECSYS_FEAST_REDIS", "127.0.0.1:6379,db=15")
    yield client
    client.flushdb()


def test_redis_online_store_serves_the_same_values(built, tmp_path, redis_db):
    """The production-like profile: same declarations, Redis online store, one setting apart."""
    from recsys_assets.features.store import STORED_VIEWS, consistency_report, materialize
    from recsys_assets.serving.model import FeastOnlineReader

    repo = FeatureRepo(copy_feature_repo(tmp_path / "repo"), "environments/redis.yaml")
    shutil.copytree(built["repo"].tables_dir, repo.tables_dir, ignore=lambda *_: ["registry.db",
                    "online_store.db"])  # fmt: skip
    repo.apply()
    store = repo.store()
    assert type(store._get_provider().online_store).__name__ == "RedisOnlineStore"
    tables = {name: pd.read_parquet(repo.tables_dir / f"{name}.parquet") for name in STORED_VIEWS}
    end = max(t[c.FEATURE_TS].max() for t in tables.values()).to_pydatetime()
    start = min(t[c.FEATURE_TS].min() for t in tables.values()).to_pydatetime()
    materialize(store, start - pd.Timedelta(seconds=1), end + pd.Timedelta(seconds=1), STORED_VIEWS)
    assert redis_db.dbsize() > 0
    catalogue = tables["item_popularity"][c.ITEM_ID].astype(str).unique().tolist()
    report = consistency_report(store, tables, end, reader=FeastOnlineReader(store, catalogue))
    assert report.values > 500 and report.mismatches == 0, report.examples
    assert report.served_values > 500 and report.passed, report.examples  # the service's reads
    frame = read(store, [{c.USER_ID: "nobody", c.ITEM_ID: "nothing",
                          c.REQUEST_TS: pd.Timestamp("2011-02-10", tz="UTC")}])  # fmt: skip
    assert not bool(frame.loc[0, "customer_profile_known"])


def test_apply_refuses_a_repo_whose_feature_table_is_missing(built, tmp_path):
    repo = FeatureRepo(copy_feature_repo(tmp_path / "repo"))
    shutil.copytree(built["repo"].tables_dir, repo.tables_dir)
    repo.table_path("item_popularity").unlink()
    before = {v.name for v in repo.store().list_feature_views()}  # the copied registry
    with pytest.raises(FeatureRepoError, match=r"\['item_popularity'\] not found"):
        repo.apply()
    assert {v.name for v in repo.store().list_feature_views()} == before


def test_redis_config_without_its_secret_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_FEAST_REDIS", raising=False)
    repo = FeatureRepo(copy_feature_repo(tmp_path / "repo"), "environments/redis.yaml")
    with pytest.raises(FeatureRepoError, match=r"needs the environment variable\(s\) "
                       r"\['RECSYS_FEAST_REDIS'\]"):  # fmt: skip
        repo.store()


def _ttl_case_tables() -> dict[str, pd.DataFrame]:
    """A customer last seen in 2000, more than 3,650 days (the customer views' TTL) before the
    end of the tables, and one seen in 2011, both buying the same item; Feast-form tables."""
    import numpy as np

    from recsys_assets.features import tables as f
    from recsys_assets.features.store import to_feast_table

    rows = [  # ts, user, item, quantity, price, order
        ("2000-01-10 10:00", "old", "I1", 2.0, 3.0, "o1"),
        ("2011-01-10 10:00", "new", "I1", 1.0, 3.0, "o2"),
        ("2011-01-10 10:00", "new", "I2", 4.0, 1.5, "o2"),
    ]
    events = pd.DataFrame(
        rows, columns=[c.EVENT_TS, c.USER_ID, c.ITEM_ID, c.QUANTITY, c.UNIT_PRICE, c.ORDER_ID]
    )
    events[c.EVENT_TS] = pd.to_datetime(events[c.EVENT_TS]).astype("datetime64[ns]")
    events = events.assign(**{c.EVENT_TYPE: c.PURCHASE, c.COUNTRY: "France", c.DEVICE: "web"})
    text = [c.USER_ID, c.ITEM_ID, c.ORDER_ID, c.COUNTRY, c.EVENT_TYPE, c.DEVICE]
    events = events.astype(dict.fromkeys(text, "string") | {c.QUANTITY: np.float64})
    built = {
        "customer_profile": f.customer_features(events),
        "item_popularity": f.item_features(events),
        "customer_item": f.customer_item_features(events),
        "session_context": f.session_context_features(events),
    }
    return {name: to_feast_table(frame) for name, frame in built.items()}


def test_the_check_and_the_service_apply_the_views_ttl_like_training(tmp_path):
    """Online rows older than the view's TTL at the check's time are served as missing, as the
    point-in-time join (and so training) gives them: the check passes on this healthy data, and
    what the service's reader serves equals what training joins, for both customers."""
    import numpy as np

    from recsys_assets.features.store import (
        STORED_VIEWS,
        consistency_report,
        materialize,
        write_table,
    )
    from recsys_assets.serving.model import FeastOnlineReader, TableReader
    from recsys_assets.training.ranker import RAW_FEATURES

    repo = FeatureRepo(copy_feature_repo(tmp_path / "repo"))
    tables = _ttl_case_tables()
    for name, table in tables.items():
        write_table(table, repo.table_path(name))
    repo.apply()
    store = repo.store()
    stored = {name: tables[name] for name in STORED_VIEWS}
    start = min(t[c.FEATURE_TS].min() for t in stored.values()).to_pydatetime()
    end = max(t[c.FEATURE_TS].max() for t in stored.values()).to_pydatetime()
    materialize(store, start - pd.Timedelta(seconds=1), end + pd.Timedelta(seconds=1), STORED_VIEWS)
    ttl = store.get_feature_view("customer_profile").ttl
    assert pd.Timestamp("2000-01-11", tz="UTC") < pd.Timestamp(end) - ttl  # "old" has expired
    online = store.get_online_features(
        features=[f"customer_profile:{c.ORDERS_TOTAL}"],
        entity_rows=[{c.USER_ID: "old"}, {c.USER_ID: "new"}],
    ).to_dict()
    assert online[c.ORDERS_TOTAL] == [1, 1]  # the online store still holds the expired row

    catalogue = ["I1", "I2"]
    reader = FeastOnlineReader(store, catalogue)
    report = consistency_report(store, stored, end, reader=reader)
    assert report.passed, report.examples
    assert report.mismatches == 0 and report.served_mismatches == 0
    assert report.values > 0 and report.served_values > 0

    trained = TableReader(stored)  # the ranker's point-in-time join (via_pandas)
    items = np.array(catalogue, dtype=object)
    at = pd.Timestamp(end)
    week_later = at + pd.Timedelta(days=8)  # item snapshots past their 7-day TTL
    for customer, when in [("old", at), ("new", at), ("old", week_later), ("new", week_later)]:
        served = reader.read(customer, items, when, None)
        expected = trained.read(customer, items, when, None)
        for name in RAW_FEATURES:
            for got, want in zip(served[name], expected[name], strict=True):
                same = (pd.isna(got) and pd.isna(want)) or got == want
                assert same, (customer, str(when), name, got, want)
    assert np.isnan(reader.read("new", items, week_later)[c.SALES_30D]).all()

    # the project's wrapper under the same rule when given the moment (defaults and flag)
    rows = [{c.USER_ID: u, c.ITEM_ID: "I1", c.REQUEST_TS: at} for u in ("old", "new")]
    frame = read(store, rows, as_of=end).set_index(c.USER_ID)
    assert not frame.loc["old", "customer_profile_known"]
    assert frame.loc["old", c.ORDERS_TOTAL] == c.DEFAULT_FEATURE_VALUES[c.ORDERS_TOTAL]
    assert frame.loc["new", "customer_profile_known"] and frame.loc["new", c.ORDERS_TOTAL] == 1
    first = read(store, rows, service=FEATURE_SERVICE_V1, as_of=end).set_index(c.USER_ID)
    assert not first.loc["old", "customer_item_known"] and first.loc["new", "customer_item_known"]
    assert np.isnan(reader.read("old", items, at)[c.ORDERS_TOTAL]).all()  # unknown, as trained
    assert (reader.read("new", items, at)[c.ORDERS_TOTAL] == 1).all()
    assert np.isnan(reader.read("old", items, at)[c.TIMES_BOUGHT]).all()  # the 2000 pair too

    ignores_ttl = FeastOnlineReader(store, catalogue)  # a reader serving expired rows: skew
    ignores_ttl._ttls = dict.fromkeys(ignores_ttl._ttls)
    skewed = consistency_report(store, stored, end, reader=ignores_ttl)
    assert skewed.mismatches == 0 and skewed.served_mismatches > 0 and not skewed.passed
    assert "| customer_profile | old |" in skewed.examples
