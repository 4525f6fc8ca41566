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


def test_the_registry_holds_the_ttls_the_asset_derived_from_the_tables(built):
    """feature_registry applies the repository with the TTLs derived from the tables it wrote
    (40 days of daily synthetic trading: today's values) and records them."""
    from recsys_assets.features.store import STORED_VIEWS
    from recsys_assets.features.ttl import DEFAULT_TTL_DAYS, table_ttls, ttl_days

    repo = built["repo"]
    tables = {name: pd.read_parquet(repo.table_path(name)) for name in STORED_VIEWS}
    derived = table_ttls(tables)
    assert ttl_days(derived) == DEFAULT_TTL_DAYS
    store = repo.store()
    assert {view: store.get_feature_view(view).ttl for view in derived} == derived
    assert repo.declared_ttls() == derived
    [registry] = [
        m.materialization
        for m in built["result"].get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("feature_registry")
    ]
    assert registry.metadata["ttl_days"].value == ttl_days(derived)
    assert registry.metadata["ttl_overrides"].value == {}


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


def _sparse_decade_tables() -> dict[str, pd.DataFrame]:
    """A decade of sparse history in Feast form: one purchase on the first of every month from
    2000-01 to 2011-01, each by a customer never seen again (c000 in 2000, c132 on 2011-01-01),
    and a customer "new" buying two items on the last day; three items."""
    import numpy as np

    from recsys_assets.features import tables as f
    from recsys_assets.features.store import to_feast_table

    months = pd.date_range("2000-01-01", "2011-01-01", freq="MS") + pd.Timedelta(hours=10)
    rows = [(ts, f"c{k:03d}", f"I{k % 3 + 1}", 1.0, 3.0, f"o{k}") for k, ts in enumerate(months)]
    last = months[-1] + pd.Timedelta(hours=1)
    rows += [(last, "new", "I1", 1.0, 3.0, "o-new"), (last, "new", "I2", 4.0, 1.5, "o-new")]
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


CATALOGUE = ["I1", "I2", "I3"]


def _sparse_decade_store(tmp_path, ttl_days=None):
    """A scratch repository applied (with ``ttl_days`` set) and materialised over the sparse
    decade; returns the repository, the stored tables and the end of the data."""
    from recsys_assets.features.store import STORED_VIEWS, materialize, write_table

    repo = FeatureRepo(copy_feature_repo(tmp_path / "repo"))
    tables = _sparse_decade_tables()
    for name, table in tables.items():
        write_table(table, repo.table_path(name))
    repo.apply(ttl_days=ttl_days)
    stored = {name: tables[name] for name in STORED_VIEWS}
    start = min(t[c.FEATURE_TS].min() for t in stored.values()).to_pydatetime()
    end = max(t[c.FEATURE_TS].max() for t in stored.values()).to_pydatetime()
    store = repo.store()
    materialize(store, start - pd.Timedelta(seconds=1), end + pd.Timedelta(seconds=1), STORED_VIEWS)
    assert end == pd.Timestamp("2011-01-02", tz="UTC")
    return repo, stored, end


def _served_equals_trained(reader, trained, customer: str, when: pd.Timestamp) -> None:
    """What the service's reader serves equals what the training join gives, feature by
    feature (``trained``: a ``(customer, items, when)`` read of the pandas join)."""
    import numpy as np

    from recsys_assets.training.ranker import RAW_FEATURES

    items = np.array(CATALOGUE, dtype=object)
    served = reader.read(customer, items, when, None)
    expected = trained(customer, items, when)
    for name in RAW_FEATURES:
        for got, want in zip(served[name], expected[name], strict=True):
            same = (pd.isna(got) and pd.isna(want)) or got == want
            assert same, (customer, str(when), name, got, want)


def test_a_sparse_decade_keeps_its_customers_known_on_both_sides(tmp_path):
    """A customer last seen more than ten years before the check is known: the registry holds
    the TTLs derived from the tables (23 years for the values to date, the monthly cadence for
    the item snapshot), the check passes comparing real values, and the service's reader serves
    what the training join gives, before and after the item snapshot expires."""
    import numpy as np

    from recsys_assets.features.store import consistency_report
    from recsys_assets.features.ttl import table_ttls
    from recsys_assets.serving.model import FeastOnlineReader, TableReader

    repo, stored, end = _sparse_decade_store(tmp_path)
    store = repo.store()
    derived = table_ttls(stored)
    assert {view: store.get_feature_view(view).ttl for view in derived} == derived
    assert repo.declared_ttls() == derived  # what feature_views.py read at apply
    assert derived["customer_profile"] == derived["customer_item"] == pd.Timedelta(days=23 * 365)
    assert derived["item_popularity"] == pd.Timedelta(days=31)  # one sale day a month
    at = pd.Timestamp(end)
    assert pd.Timestamp("2000-01-02", tz="UTC") < at - pd.Timedelta(days=3650)  # over 10 years

    reader = FeastOnlineReader(store, CATALOGUE)
    report = consistency_report(store, stored, end, reader=reader)
    assert report.passed, report.examples
    assert report.compared > 50 and report.values > 0 and report.served_values > 0
    items = np.array(CATALOGUE, dtype=object)
    assert (reader.read("c000", items, at)[c.ORDERS_TOTAL] == 1).all()  # 2000: still known
    assert reader.read("c000", items, at)[c.TIMES_BOUGHT].tolist()[0] == 1
    frame = read(store, [{c.USER_ID: "c000", c.ITEM_ID: "I1", c.REQUEST_TS: at}], as_of=end)
    assert bool(frame.loc[0, "customer_profile_known"]) and frame.loc[0, c.ORDERS_TOTAL] == 1

    trained = TableReader(stored)  # the ranker's point-in-time join (via_pandas)
    expiry = at + derived["item_popularity"] + pd.Timedelta(days=1)  # the snapshot expired
    for customer in ("c000", "c066", "new"):
        for when in (at, at + pd.Timedelta(days=8), expiry):
            _served_equals_trained(reader, lambda u, i, w: trained.read(u, i, w), customer, when)
    assert reader.read("new", items, at + pd.Timedelta(days=8))[c.SALES_30D].tolist() == [2, 1, 0]
    assert np.isnan(reader.read("new", items, expiry)[c.SALES_30D]).all()


def test_a_ttl_set_in_the_settings_reaches_the_registry_and_both_sides(tmp_path):
    """``features.ttl_days`` replaces the derived TTL: with today's 3,650 days the customer of
    2000 has expired at the check, as missing on both sides, and a reader serving expired
    rows fails the check."""
    import numpy as np

    from recsys_assets.features.store import consistency_report, view_ttls
    from recsys_assets.serving.model import FeastOnlineReader
    from recsys_assets.training.ranker import RAW_FEATURES, via_pandas

    decade = {"customer_profile": 3650, "customer_item": 3650}
    repo, stored, end = _sparse_decade_store(tmp_path, ttl_days=decade)
    store = repo.store()
    registered = view_ttls(store, ["customer_profile", "customer_item", "item_popularity"])
    assert registered["customer_profile"] == registered["customer_item"] == pd.Timedelta(days=3650)
    assert registered["item_popularity"] == pd.Timedelta(days=31)  # still derived
    at = pd.Timestamp(end)
    online = store.get_online_features(
        features=[f"customer_profile:{c.ORDERS_TOTAL}"],
        entity_rows=[{c.USER_ID: "c000"}, {c.USER_ID: "new"}],
    ).to_dict()
    assert online[c.ORDERS_TOTAL] == [1, 1]  # the online store still holds the expired row

    reader = FeastOnlineReader(store, CATALOGUE)
    report = consistency_report(store, stored, end, reader=reader)
    assert report.passed and report.values > 0 and report.served_values > 0, report.examples

    def trained(customer, items, when):  # the training join under the same TTLs
        rows = pd.DataFrame({c.USER_ID: customer, c.ITEM_ID: items, c.FEATURE_TS: when})
        frame = via_pandas(stored, rows, registered)
        return {name: frame[name].to_numpy() for name in RAW_FEATURES}

    for customer in ("c000", "c125", "new"):  # c125: 2010-06-01, within 3,650 days
        for when in (at, at + pd.Timedelta(days=8)):
            _served_equals_trained(reader, trained, customer, when)
    items = np.array(CATALOGUE, dtype=object)
    assert np.isnan(reader.read("c000", items, at)[c.ORDERS_TOTAL]).all()  # unknown, as trained
    assert np.isnan(reader.read("c000", items, at)[c.TIMES_BOUGHT]).all()  # the 2000 pair too
    assert (reader.read("new", items, at)[c.ORDERS_TOTAL] == 1).all()

    # the project's wrapper under the same rule when given the moment (defaults and flag)
    rows = [{c.USER_ID: u, c.ITEM_ID: "I1", c.REQUEST_TS: at} for u in ("c000", "new")]
    frame = read(store, rows, as_of=end).set_index(c.USER_ID)
    assert not frame.loc["c000", "customer_profile_known"]
    assert frame.loc["c000", c.ORDERS_TOTAL] == c.DEFAULT_FEATURE_VALUES[c.ORDERS_TOTAL]
    assert frame.loc["new", "customer_profile_known"] and frame.loc["new", c.ORDERS_TOTAL] == 1
    first = read(store, rows, service=FEATURE_SERVICE_V1, as_of=end).set_index(c.USER_ID)
    assert not first.loc["c000", "customer_item_known"] and first.loc["new", "customer_item_known"]

    ignores_ttl = FeastOnlineReader(store, CATALOGUE)  # a reader serving expired rows: skew
    ignores_ttl._ttls = dict.fromkeys(ignores_ttl._ttls)
    skewed = consistency_report(store, stored, end, reader=ignores_ttl, sample_size=200)
    assert skewed.mismatches == 0 and skewed.served_mismatches > 0 and not skewed.passed
    assert "| customer_profile | c0" in skewed.examples
