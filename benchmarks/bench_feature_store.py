"""Benchmark: the Feast online path on the full dataset, SQLite and Redis online stores.

For each online store, in its own scratch copy of feature_repo/ (the four feature tables copied
from feature_repo/data/, which is never touched):

- materialisation of the three stored views over the explicit range of the tables, as the
  `online_features` asset does it (min event_timestamp - 1 s .. max + 1 s);
- online reads through the Python SDK, each --calls times after 20 warm-up calls, a different
  seeded-random customer per call:
  a. one customer-item row: customer_profile + customer_item (explicit refs, no on-demand view);
  b. one customer and 100 items: customer_item + item_popularity for 100 rows;
  b2. the same, but .to_df() instead of .to_dict() (what the wrapper in d calls);
  c. the ranker_v1 feature service for one customer-item row (adds session_context and the
     pandas on-demand view request_features);
  c0. the same row and the service's stored views (explicit refs) without the on-demand view;
  d. the project's online_features() wrapper (defaults + <view>_known flags) for the batch of b;
- a raw baseline on the same storage: sqlite3 SELECT of a customer's rows by entity-key bytes
  in the table Feast created, or redis-py HGETALL of a customer's hash. The keys are serialised
  before timing and the values are not decoded: this is the storage floor, nothing more.

    python benchmarks/bench_feature_store.py [--calls 1000] [--skip-redis] [--redis-db 11]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_assets.config import variables  # noqa: E402
from recsys_assets.core import constants as c  # noqa: E402
from recsys_assets.features.store import (  # noqa: E402
    FEATURE_SERVICE_V1,
    STORED_VIEWS,
    FeatureRepo,
    materialize,
    online_features,
)

SOURCE_REPO = ROOT / "feature_repo"
TABLES = (*STORED_VIEWS, "session_context")
WARMUP = 20
BATCH_ITEMS = 100
REQUEST_AT = datetime(2011, 12, 10, 12, 0, tzinfo=UTC)  # just after the last snapshot
PROJECT = "recsys"

REFS_ONE = [f"customer_profile:{n}" for n in c.CUSTOMER_FEATURES] + [
    f"customer_item:{n}" for n in c.CUSTOMER_ITEM_FEATURES
]
REFS_BATCH = [f"customer_item:{n}" for n in c.CUSTOMER_ITEM_FEATURES] + [
    f"item_popularity:{n}" for n in c.ITEM_FEATURES
]


# --- set-up ---------------------------------------------------------------------------------
def machine_info(redis_version: str | None) -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import feast

    parts = [
        f"{platform.machine()}, {os.cpu_count()} cores ({model or 'unknown CPU'}), {mem:.0f} GiB",
        f"Python {platform.python_version()}",
        f"feast {feast.__version__}",
        f"pandas {pd.__version__}",
        f"SQLite {sqlite3.sqlite_version}",
    ]
    if redis_version:
        parts.append(f"Redis server {redis_version}")
    return "machine: " + ", ".join(parts)


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def scratch_repo(target: Path) -> Path:
    """Declarations of feature_repo/ plus the four feature tables; no registry, no online store."""
    shutil.copytree(
        SOURCE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__", "*.db")
    )
    (target / "data").mkdir()
    for name in TABLES:
        shutil.copy2(SOURCE_REPO / "data" / f"{name}.parquet", target / "data" / f"{name}.parquet")
    return target


def quiet(fn: Callable[[], object]) -> object:
    """Run fn with Feast's progress bars and banners kept off the benchmark's output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def materialise(repo: FeatureRepo, tables: dict[str, pd.DataFrame]) -> tuple[object, float]:
    """Apply the scratch repo, then time the materialisation exactly as the asset runs it."""
    repo.apply()
    store = repo.store()
    start = min(t[c.FEATURE_TS].min() for t in tables.values()).to_pydatetime()
    end = max(t[c.FEATURE_TS].max() for t in tables.values()).to_pydatetime()
    started = time.perf_counter()
    quiet(
        lambda: materialize(
            store, start - timedelta(seconds=1), end + timedelta(seconds=1), STORED_VIEWS
        )
    )
    return store, time.perf_counter() - started


# --- workload -------------------------------------------------------------------------------
class Workload:
    """Seeded entity rows: one per call (warm-up calls first), each with a different customer."""

    def __init__(self, tables: dict[str, pd.DataFrame], n: int, seed: int = c.SEED):
        rng = np.random.default_rng(seed)
        pairs = tables["customer_item"][[c.USER_ID, c.ITEM_ID]].drop_duplicates()
        pairs = pairs.sample(frac=1.0, random_state=seed)
        # One real (customer, item) pair per customer, customers in random order.
        firsts = pairs.drop_duplicates(c.USER_ID)
        picks = firsts.iloc[np.resize(np.arange(len(firsts)), n)]
        self.customers = picks[c.USER_ID].tolist()
        self.pairs = [
            {c.USER_ID: u, c.ITEM_ID: i}
            for u, i in zip(picks[c.USER_ID], picks[c.ITEM_ID], strict=True)
        ]
        self.requests = [{**row, c.REQUEST_TS: REQUEST_AT} for row in self.pairs]
        # 100 candidates: the customer's own items first (up to 100), then random catalogue items.
        catalogue = tables["item_popularity"][c.ITEM_ID].drop_duplicates().to_numpy()
        bought = pairs.groupby(c.USER_ID)[c.ITEM_ID].agg(list).to_dict()
        self.batches = []
        for user in self.customers:
            items = list(dict.fromkeys(bought.get(user, [])))[:BATCH_ITEMS]
            seen = set(items)
            for item in rng.permutation(catalogue):
                if len(items) == BATCH_ITEMS:
                    break
                if item not in seen:
                    items.append(item)
                    seen.add(item)
            self.batches.append([{c.USER_ID: user, c.ITEM_ID: i} for i in items])


def entity_key(**keys: str) -> bytes:
    """Feast's serialised entity key (version 3), as its online stores key their rows."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    names = sorted(keys)
    proto = EntityKey(
        join_keys=names, entity_values=[Value(string_val=keys[name]) for name in names]
    )
    return serialize_entity_key(proto, entity_key_serialization_version=3)


# --- timing ---------------------------------------------------------------------------------
def timed(fn: Callable[[object], object], inputs: Sequence[object], calls: int) -> dict:
    """WARMUP untimed calls, then `calls` timed ones, each on the next input."""
    for i in range(WARMUP):
        fn(inputs[i])
    times = np.empty(calls)
    total_started = time.perf_counter()
    for i in range(calls):
        started = time.perf_counter()
        fn(inputs[WARMUP + i])
        times[i] = time.perf_counter() - started
    total = time.perf_counter() - total_started
    ms = times * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "per_s": calls / total,
    }


def sdk_reads(store, work: Workload, calls: int) -> list[tuple[str, dict]]:
    """The SDK cases a, b, b2, c, d, after a check that the reads return stored values."""
    service = store.get_feature_service(FEATURE_SERVICE_V1)  # case c: with the ODFV
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    stored_refs = [  # the service's stored views only: c minus the on-demand transformation
        f"{projection.name}:{feature.name}"
        for projection in service.feature_view_projections
        if projection.name not in on_demand
        for feature in projection.features
    ]

    def one(row):
        return store.get_online_features(features=REFS_ONE, entity_rows=[row]).to_dict()

    def batch(rows):
        return store.get_online_features(features=REFS_BATCH, entity_rows=rows).to_dict()

    def batch_df(rows):
        return store.get_online_features(features=REFS_BATCH, entity_rows=rows).to_df()

    def ranker(row):
        return store.get_online_features(features=service, entity_rows=[row]).to_dict()

    def ranker_stored(row):
        return store.get_online_features(features=stored_refs, entity_rows=[row]).to_dict()

    def wrapper(rows):
        return online_features(store, rows, features=REFS_BATCH)

    # Not timed: the rows are real and the store serves them (a silent miss would be fast).
    got = one(work.pairs[0])
    assert got[c.ORDERS_TOTAL][0] is not None and got[c.TIMES_BOUGHT][0] is not None, got
    got = ranker(work.requests[0])
    assert got[c.DAYS_SINCE_LAST_BOUGHT][0] is not None, got
    frame = wrapper(work.batches[0])
    assert frame["customer_item_known"].any() and frame["item_popularity_known"].any()

    return [
        ("a. 1 customer-item, explicit refs", timed(one, work.pairs, calls)),
        (f"b. 1 customer x {BATCH_ITEMS} items", timed(batch, work.batches, calls)),
        ("b2. as b, .to_df()", timed(batch_df, work.batches, calls)),
        ("c. ranker_v1 service (ODFV)", timed(ranker, work.requests, calls)),
        ("c0. as c, stored views only, no ODFV", timed(ranker_stored, work.pairs, calls)),
        ("d. online_features() wrapper", timed(wrapper, work.batches, calls)),
    ]


def sqlite_baseline(db_path: Path, work: Workload, calls: int) -> list[tuple[str, dict]]:
    """Raw sqlite3: the rows of one customer (and of a's customer-item pair) by key bytes."""
    conn = sqlite3.connect(str(db_path))
    tables = [name for (name,) in conn.execute("select name from sqlite_master where type='table'")]
    profile_table = f"{PROJECT}_customer_profile"
    pair_table = f"{PROJECT}_customer_item"
    assert {profile_table, pair_table} <= set(tables), tables
    profile_sql = f"SELECT feature_name, value, event_ts FROM {profile_table} WHERE entity_key = ?"
    pair_sql = f"SELECT feature_name, value, event_ts FROM {pair_table} WHERE entity_key = ?"
    keys = [
        (entity_key(user_id=row[c.USER_ID]), entity_key(**row)) for row in work.pairs
    ]  # serialised before timing
    assert len(conn.execute(profile_sql, (keys[0][0],)).fetchall()) == len(c.CUSTOMER_FEATURES)
    assert len(conn.execute(pair_sql, (keys[0][1],)).fetchall()) == len(c.CUSTOMER_ITEM_FEATURES)

    def customer(key_pair):
        return conn.execute(profile_sql, (key_pair[0],)).fetchall()

    def customer_and_pair(key_pair):
        return (
            conn.execute(profile_sql, (key_pair[0],)).fetchall(),
            conn.execute(pair_sql, (key_pair[1],)).fetchall(),
        )

    try:
        return [
            ("raw sqlite3: 1 customer's rows", timed(customer, keys, calls)),
            ("raw sqlite3: a's rows (2 SELECTs)", timed(customer_and_pair, keys, calls)),
        ]
    finally:
        conn.close()


def redis_baseline(client, work: Workload, calls: int) -> list[tuple[str, dict]]:
    """Raw redis-py: HGETALL of one customer's hash (and of a's two hashes, pipelined)."""
    all_keys = client.keys("*")  # once, to see how Feast keys a customer
    customer_keys = [k for k in all_keys if b"user_id" in k and b"item_id" not in k]
    keys = [
        (
            entity_key(user_id=row[c.USER_ID]) + PROJECT.encode(),
            entity_key(**row) + PROJECT.encode(),
        )
        for row in work.pairs
    ]
    known = set(customer_keys)
    assert keys[0][0] in known, (keys[0][0], customer_keys[:3])
    assert client.hgetall(keys[0][0]) and client.hgetall(keys[0][1])
    print(
        f"  redis: {len(all_keys):,} keys, {len(customer_keys):,} customer keys; e.g. {keys[0][0]}"
    )

    def customer(key_pair):
        return client.hgetall(key_pair[0])

    def customer_and_pair(key_pair):
        with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(key_pair[0])
            pipe.hgetall(key_pair[1])
            return pipe.execute()

    return [
        ("raw redis-py: HGETALL 1 customer", timed(customer, keys, calls)),
        ("raw redis-py: a's 2 hashes, pipelined", timed(customer_and_pair, keys, calls)),
    ]


# --- main -----------------------------------------------------------------------------------
def run_store(
    label: str,
    repo: FeatureRepo,
    tables: dict[str, pd.DataFrame],
    work: Workload,
    calls: int,
    baseline: Callable[[], list[tuple[str, dict]]],
) -> tuple[float, list[tuple[str, str, dict]]]:
    print(f"[{label}] apply + materialise ...", flush=True)
    store, seconds = materialise(repo, tables)
    print(f"[{label}] materialised in {seconds:.1f} s; reading ({load_line()}) ...", flush=True)
    rows = sdk_reads(store, work, calls) + baseline()
    return seconds, [(label, name, stats) for name, stats in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per read")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--redis-host", default="127.0.0.1:6379")
    parser.add_argument(
        "--redis-db", type=int, default=11, help="scratch Redis db; must be empty, flushed at end"
    )
    args = parser.parse_args()

    client = None
    if not args.skip_redis:
        import redis

        host, port = args.redis_host.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), db=args.redis_db)
        if client.dbsize():
            sys.exit(f"Redis db {args.redis_db} is not empty; choose another with --redis-db")

    print(machine_info(client.info("server")["redis_version"] if client else None))
    print(load_line())
    tables = {
        name: pd.read_parquet(SOURCE_REPO / "data" / f"{name}.parquet") for name in STORED_VIEWS
    }
    sizes = ", ".join(f"{name} {len(t):,}" for name, t in tables.items())
    print(f"feature tables (rows): {sizes}")
    work = Workload(tables, WARMUP + args.calls)
    print(
        f"workload: {args.calls} timed calls per read after {WARMUP} warm-up calls, "
        f"{len(set(work.customers)):,} distinct customers, request_ts {REQUEST_AT:%Y-%m-%d %H:%M}"
    )

    materialised: list[tuple[str, float]] = []
    results: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench_feature_store_") as scratch:
        repo = FeatureRepo(scratch_repo(Path(scratch) / "sqlite" / "feature_repo"))
        db_path = repo.tables_dir / "online_store.db"
        seconds, rows = run_store(
            "sqlite",
            repo,
            tables,
            work,
            args.calls,
            lambda: sqlite_baseline(db_path, work, args.calls),
        )
        size = db_path.stat().st_size / 2**20
        materialised.append(("sqlite", seconds, f"online_store.db {size:,.0f} MiB"))
        results += rows

        if client is not None:
            os.environ[variables.FEAST_REDIS.name] = f"{args.redis_host},db={args.redis_db}"
            repo = FeatureRepo(
                scratch_repo(Path(scratch) / "redis" / "feature_repo"), "environments/redis.yaml"
            )
            try:
                seconds, rows = run_store(
                    "redis",
                    repo,
                    tables,
                    work,
                    args.calls,
                    lambda: redis_baseline(client, work, args.calls),
                )
                mem = client.info("memory")["used_memory_human"]
                materialised.append(
                    (
                        "redis",
                        seconds,
                        f"{client.dbsize():,} keys, server used_memory {mem} (all dbs)",
                    )
                )
                results += rows
            finally:
                client.flushdb()  # only the scratch db this run checked was empty

    print(f"\n{load_line()}")
    print("\nmaterialisation (customer_profile, item_popularity, customer_item):")
    for label, seconds, note in materialised:
        print(f"  {label:<7}{seconds:>8.1f} s   {note}")
    print(f"\n{'store':<7}{'read':<39}{'p50':>8}{'p95':>8}{'p99':>8}{'mean ms':>9}{'calls/s':>9}")
    for label, name, s in results:
        print(
            f"{label:<7}{name:<39}{s['p50']:>8.2f}{s['p95']:>8.2f}{s['p99']:>8.2f}"
            f"{s['mean']:>9.2f}{s['per_s']:>9,.0f}"
        )
    single = next(s for label, name, s in results if label == "sqlite" and name.startswith("a."))
    verdict = "met" if single["p99"] < 2 else "NOT met"
    print(f"\ntarget: SQLite single-customer p99 < 2 ms: {verdict} (p99 {single['p99']:.2f} ms)")


if __name__ == "__main__":
    main()
