"""Benchmark: the whole pipeline on a matrix of retail datasets, each from a source config alone.

The promise to a retailer: point the project at your export (a source config, no code change)
and get a recommender never worse than a simple baseline. For each dataset this runs the demo
(``python -m recsys_assets demo --data-config <config>``, the main job end to end: ingestion,
features, models, evaluation, quality gate, promotion, bento) in a subprocess of its own, on a
state folder of its own (Dagster home, warehouse, Feast repository copy, models, reports,
BentoML store, logs and ledger), and records:

- rows read and quarantined: the ``raw_events`` / ``validated_events`` / ``quarantined_events``
  row counts of the ingestion runs (their materialisations' ``dagster/row_count``, summed over
  the partitions; the quarantined rows also by first reason);
- every model's NDCG@10 on the test period with its bootstrap 5-95% band over the evaluated
  customers (``<reports>/evaluation.json``, ``models.<name>.bootstrap_ndcg``), and, where the
  report has a ``selection`` (the model chosen on a validation period), the chosen model, the
  rule and the validation figures;
- the quality gate's result (the ``quality_gate`` check of ``challenger_model`` in the run's
  Dagster instance) and the model promoted (``promoted_model``'s tag and stage);
- wall time, and peak memory: the kernel's peak resident set of the demo process or its
  largest child (``os.wait4``), and the peak of the process tree's summed RSS, sampled every
  half second (psutil);
- the aim: whether the promoted model's NDCG@10 is at least the best simple baseline's (every
  model but the ranker), or reaches it within its bootstrap band.

Datasets (``--small``: the quick matrix, 4-10 minutes on 2 shared cores, the synthetic shop's
million events the longest; default: the full one):

- ``online_retail``: UCI Online Retail, data/sources/online_retail.yaml (full only);
- ``online_retail_ii``: Online Retail II, sheet 2009-2010, from the shared datasets folder;
- ``online_retail_joined``: that sheet before 2010-12-01 joined to UCI Online Retail (the two
  overlap on 2010-12-01 .. 2010-12-09; that period is kept once), written to the scratch folder;
- ``ta_feng``: Ta-Feng, read from the shared folder only (its licence is not established);
- ``example_shop``, ``synthetic``: data/sources/example_shop.yaml and synthetic.yaml;
- ``grocery``, ``ratings``: two generated shapes (seeded files in the scratch folder, smaller
  with ``--small``): a popularity-dominated grocery export with date-only DD-MM-YYYY dates and
  no order, quantity or price; a sparse headerless ratings history in Unix seconds, most
  customers seen once.

The source configs of the shared and generated datasets are benchmarks/datasets/*.yaml; each is
copied into the dataset's scratch folder with ``path`` pointing at its file.

    python benchmarks/bench_datasets.py [--small] [--only NAME ...] [--out FILE] [--json FILE]
        [--check-sources] [--workdir DIR] [--shared DIR] [--timeout S]

``--check-sources`` runs no pipeline: it reads and validates each source (the assets' rules)
and prints its rows, time span, customers, items and evaluated customers under the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import ROOT, machine  # puts the project on the path

from recsys_assets.config import variables

TEMPLATES = ROOT / "benchmarks" / "datasets"
SOURCES = ROOT / "data" / "sources"
DEFAULT_SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "datasets.md"
RANKER = "ranker"  # the report's name of the production model; every other one is a baseline
ENVIRONMENT = "dev"  # the demo's default environment: what a retailer runs
OVERLAP_START = pd.Timestamp("2010-12-01")  # Online Retail II's rows from here on are UCI's too


# --- generated shapes ------------------------------------------------------------------------

_QUALIFIERS = ("", "whole", "other", "tropical", "root", "canned", "bottled", "frozen", "brown",
               "white", "domestic", "long life", "specialty", "organic", "sliced")  # fmt: skip
_PRODUCTS = ("milk", "vegetables", "rolls/buns", "soda", "yogurt", "water", "fruit", "sausage",
             "pastry", "beer", "coffee", "butter", "cheese", "eggs", "bread", "chocolate",
             "juice", "chicken", "beef", "pork", "fish", "rice", "pasta", "flour", "sugar",
             "tea", "napkins", "detergent", "cream", "onions", "potatoes", "herbs", "ham",
             "margarine", "candy", "wine", "newspapers", "shopping bags")  # fmt: skip


@dataclass(frozen=True)
class GroceryShape:
    """A loyalty-card grocery export: member, date, item name."""

    n_members: int = 3_800
    n_items: int = 167
    start: str = "2014-01-01"
    days: int = 729  # two years
    baskets_per_member: float = 3.0  # 1 + Poisson(this) visits per member
    items_per_basket: float = 1.6  # 1 + Poisson(this) lines per visit
    zipf: float = 1.0  # item popularity ~ 1 / (rank + offset) ** zipf
    offset: float = 4.0
    repeat: float = 0.3  # share of lines drawn from the member's own favourites
    favourites: int = 4
    seed: int = 7


@dataclass(frozen=True)
class RatingsShape:
    """A sparse ratings history: item, user, rating 1-5, Unix seconds; most users rate once."""

    rows: int = 90_000
    n_items: int = 12_000
    n_categories: int = 40
    start: str = "1998-01-01"
    years: int = 17
    growth: float = 3.0  # activity grows e**growth-fold over the span (more ratings lately)
    user_zipf: float = 2.1  # ratings per user ~ Zipf(this): about two thirds rate once
    max_per_user: int = 400
    active_years: float = 1.5  # mean span of a user's ratings
    item_zipf: float = 0.95
    affinity: float = 0.5  # share of a user's ratings in their favourite category
    seed: int = 11


# --small: a quarter of the members over one year; an eighth of the ratings over three years.
GROCERY = {
    "full": GroceryShape(),
    "small": GroceryShape(n_members=950, start="2015-01-01", days=365),
}
RATINGS = {
    "full": RatingsShape(),
    "small": RatingsShape(rows=12_000, n_items=3_000, start="2012-01-01", years=3, growth=1.5),
}


def _item_names(n: int, rng: np.random.Generator) -> list[str]:
    names = [f"{q} {p}".strip() for q in _QUALIFIERS for p in _PRODUCTS]
    if n > len(names):
        raise ValueError(f"at most {len(names)} grocery item names, asked for {n}")
    return [names[i] for i in rng.permutation(len(names))[:n]]


def _zipf_weights(n: int, exponent: float, offset: float = 1.0) -> np.ndarray:
    weights = 1.0 / (np.arange(n) + offset) ** exponent
    return weights / weights.sum()


def grocery_export(shape: GroceryShape, path: Path) -> int:
    """Write the grocery CSV (``Member_number,Date,itemDescription``, DD-MM-YYYY dates, rows in
    no particular order); returns its rows."""
    rng = np.random.default_rng(shape.seed)
    items = np.array(_item_names(shape.n_items, rng), dtype=object)
    popularity = _zipf_weights(shape.n_items, shape.zipf, shape.offset)
    members = 1000 + rng.permutation(shape.n_members * 2)[: shape.n_members]
    favourites = rng.choice(shape.n_items, size=(shape.n_members, shape.favourites), p=popularity)
    visits = 1 + rng.poisson(shape.baskets_per_member, size=shape.n_members)
    basket_member = np.repeat(np.arange(shape.n_members), visits)
    basket_day = rng.integers(0, shape.days, size=len(basket_member))
    sizes = 1 + rng.poisson(shape.items_per_basket, size=len(basket_member))
    line_member = np.repeat(basket_member, sizes)
    line_day = np.repeat(basket_day, sizes)
    item = rng.choice(shape.n_items, size=len(line_member), p=popularity)
    own = rng.random(len(line_member)) < shape.repeat
    pick = rng.integers(0, shape.favourites, size=len(line_member))
    item[own] = favourites[line_member[own], pick[own]]
    dates = pd.Timestamp(shape.start) + pd.to_timedelta(line_day, unit="D")
    frame = pd.DataFrame(
        {
            "Member_number": members[line_member],
            "Date": dates.strftime("%d-%m-%Y"),
            "itemDescription": items[item],
        }
    ).iloc[rng.permutation(len(line_member))]
    frame.to_csv(path, index=False)
    return len(frame)


def _growth_offsets(u: np.ndarray, span: float, growth: float) -> np.ndarray:
    """Times in [0, span) with a density growing e**growth-fold from start to end."""
    return span * np.log1p(u * np.expm1(growth)) / growth


def ratings_export(shape: RatingsShape, path: Path) -> int:
    """Write the ratings CSV without a header (``item,user,rating,timestamp``, ratings as
    ``5.0``, Unix seconds, grouped by item like a review dump); returns its rows."""
    rng = np.random.default_rng(shape.seed)
    start = pd.Timestamp(shape.start, tz="UTC")
    span = (start + pd.DateOffset(years=shape.years) - start).total_seconds()
    # Users until there are rows to spare: ratings past the end and repeats are dropped below.
    counts = np.minimum(rng.zipf(shape.user_zipf, size=shape.rows), shape.max_per_user)
    counts = counts[: int(np.searchsorted(np.cumsum(counts), shape.rows * 2.0)) + 1]
    n_users = len(counts)
    first = _growth_offsets(rng.random(n_users), span, shape.growth)
    active = rng.exponential(shape.active_years * 365.25 * 86_400, size=n_users)
    user = np.repeat(np.arange(n_users), counts)
    offsets = first[user] + rng.random(len(user)) * active[user] * (counts[user] > 1)

    popularity = _zipf_weights(shape.n_items, shape.item_zipf)
    category = rng.integers(0, shape.n_categories, size=shape.n_items)
    favourite = rng.integers(0, shape.n_categories, size=n_users)
    item = rng.choice(shape.n_items, size=len(user), p=popularity)
    in_favourite = rng.random(len(user)) < shape.affinity
    for cat in range(shape.n_categories):
        rows = np.flatnonzero(in_favourite & (favourite[user] == cat))
        members = np.flatnonzero(category == cat)
        if len(rows) and len(members):
            weights = popularity[members] / popularity[members].sum()
            item[rows] = rng.choice(members, size=len(rows), p=weights)

    frame = pd.DataFrame({"item": item, "user": user, "offset": offsets})
    frame = frame.loc[frame["offset"] < span].drop_duplicates(["user", "item"])  # rated once
    if len(frame) < shape.rows:
        raise ValueError(f"generated {len(frame):,} ratings, fewer than {shape.rows:,}")
    frame = frame.iloc[np.sort(rng.permutation(len(frame))[: shape.rows])]
    # Item ids like ASINs; one in ten numeric with a leading zero, like an ISBN.
    numeric = frame["item"] % 10 == 0
    frame["item"] = np.where(
        numeric,
        frame["item"].map(lambda i: f"{i * 7919 % 10**9:010d}"),
        frame["item"].map(lambda i: f"B{i * 104729 % 10**9:09d}"),
    )
    frame["user"] = frame["user"].map(lambda u: f"A{u * 2654435761 % 36**10:010X}")
    stars = rng.choice([1, 2, 3, 4, 5], size=len(frame), p=[0.08, 0.06, 0.10, 0.21, 0.55])
    frame["rating"] = [f"{s:.1f}" for s in stars]
    frame["timestamp"] = (start.timestamp() + frame["offset"]).astype("int64")
    frame = frame.sort_values(["item", "timestamp"], kind="stable")
    frame[["item", "user", "rating", "timestamp"]].to_csv(path, index=False, header=False)
    return len(frame)


# --- datasets ---------------------------------------------------------------------------------


def _config_from_template(template: str, data: Path, folder: Path) -> Path:
    """benchmarks/datasets/<template> copied into ``folder`` with ``path`` set to ``data``
    (comments kept); the copy is the source config the demo reads."""
    text = (TEMPLATES / template).read_text()
    text, n = re.subn(r"(?m)^path: .*$", lambda _: f"path: {json.dumps(str(data))}", text)
    if n != 1:
        raise ValueError(f"{template}: expected one top-level 'path:' line, found {n}")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / template
    config.write_text(text)
    return config


def _shared_file(shared: Path, relative: str) -> Path:
    path = shared / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (set --shared to the shared datasets folder)")
    return path


def prepare_online_retail_ii(folder: Path, small: bool, shared: Path) -> Path:
    data = _shared_file(shared, "uci_online_retail_ii/online_retail_ii_2009_2010.parquet")
    return _config_from_template("online_retail_ii.yaml", data, folder)


def prepare_online_retail_joined(folder: Path, small: bool, shared: Path) -> Path:
    """Online Retail II before the overlap, renamed to UCI's columns, then all of UCI."""
    sheet = pd.read_parquet(
        _shared_file(shared, "uci_online_retail_ii/online_retail_ii_2009_2010.parquet")
    )
    uci = pd.read_parquet(ROOT / "data" / "online_retail" / "online_retail.parquet")
    before = sheet.loc[sheet["InvoiceDate"] < OVERLAP_START].rename(
        columns={"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
    )
    if uci["InvoiceDate"].min() < OVERLAP_START:
        raise ValueError("UCI Online Retail starts before 2010-12-01: the overlap rule is wrong")
    joined = pd.concat([before[list(uci.columns)], uci], ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "online_retail_joined.parquet"
    joined.to_parquet(data, index=False, compression="zstd")
    return _config_from_template("online_retail_joined.yaml", data, folder)


def prepare_ta_feng(folder: Path, small: bool, shared: Path) -> Path:
    data = _shared_file(shared, "ta_feng/ta_feng.parquet")  # read in place, never copied
    return _config_from_template("ta_feng.yaml", data, folder)


def prepare_grocery(folder: Path, small: bool, shared: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "grocery.csv"
    grocery_export(GROCERY["small" if small else "full"], data)
    return _config_from_template("grocery.yaml", data, folder)


def prepare_ratings(folder: Path, small: bool, shared: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "ratings.csv"
    ratings_export(RATINGS["small" if small else "full"], data)
    return _config_from_template("ratings.yaml", data, folder)


def _project_source(name: str) -> Callable[[Path, bool, Path], Path]:
    return lambda folder, small, shared: SOURCES / name


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    prepare: Callable[[Path, bool, Path], Path]  # (scratch folder, small, shared) -> config
    small: bool  # part of the --small matrix


DATASETS = (
    Dataset("online_retail", "UCI Online Retail (the default source)",
            _project_source("online_retail.yaml"), small=False),
    Dataset("online_retail_ii", "Online Retail II, sheet 2009-2010",
            prepare_online_retail_ii, small=False),
    Dataset("online_retail_joined", "Online Retail II 2009-2010 + UCI Online Retail, overlap once",
            prepare_online_retail_joined, small=False),
    Dataset("ta_feng", "Ta-Feng grocery (shared copy, licence not established)",
            prepare_ta_feng, small=False),
    Dataset("example_shop", "Example web shop (views, add-to-carts, purchases; no prices)",
            _project_source("example_shop.yaml"), small=True),
    Dataset("synthetic", "Synthetic shop with drift (generator source)",
            _project_source("synthetic.yaml"), small=True),
    Dataset("grocery", "Generated grocery export (member, DD-MM-YYYY date, item name)",
            prepare_grocery, small=True),
    Dataset("ratings", "Generated sparse ratings (headerless, Unix seconds, ratings 1-5)",
            prepare_ratings, small=True),
)  # fmt: skip
BY_NAME = {d.name: d for d in DATASETS}


# --- one pipeline run ----------------------------------------------------------------------


def state_env(state: Path) -> dict[str, str]:
    """The demo's environment with every store under ``state``: this process's environment
    without any of the project's variables (no stray source, store or key), then the state's."""
    declared = set(variables.VARIABLES)
    declared |= {n for family in variables.FAMILIES.values() for n in family.names()}
    env = {k: v for k, v in os.environ.items() if k not in declared}
    paths = {
        variables.WAREHOUSE: state / "warehouse.duckdb",
        variables.FEATURE_REPO: state / "feature_repo",
        variables.MODELS: state / "models",
        variables.REPORTS: state / "reports",
        variables.FEEDBACK_LOG: state / "feedback" / "feedback.jsonl",
        variables.SERVED_LOG: state / "feedback" / "served.jsonl",
        variables.AUDIT_LOG: state / "feedback" / "audit.jsonl",
        variables.LOOP_LOG: state / "loop" / "events.jsonl",
        variables.CANARY_STATE: state / "loop" / "canary.json",
        variables.RELEASE_LEDGER: state / "releases" / "ledger.jsonl",
        variables.BENTOML_HOME: state / "bentoml",
    }
    env.update({variable.name: str(path) for variable, path in paths.items()})
    env[variables.ENV.name] = ENVIRONMENT
    env["DAGSTER_HOME"] = str(state / "dagster_home")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    return env


class TreeSampler(threading.Thread):
    """The peak of a process tree's summed resident set size, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.wait(self.interval):
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)


def run_demo(config: Path, state: Path, timeout: float) -> dict[str, Any]:
    """``python -m recsys_assets demo --data-config config`` on ``state``: exit code, wall
    time, peak memory; its stdout and stderr go to demo.out / demo.err in ``state``."""
    state.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        ROOT / "feature_repo",
        state / "feature_repo",
        ignore=shutil.ignore_patterns("data", "__pycache__"),
        dirs_exist_ok=True,
    )
    command = [sys.executable, "-m", "recsys_assets", "demo", "--data-config", str(config)]
    with open(state / "demo.out", "w") as out, open(state / "demo.err", "w") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=ROOT, env=state_env(state), stdout=out, stderr=err,
            start_new_session=True,  # its own process group: a timeout ends the whole tree
        )  # fmt: skip
        sampler = TreeSampler(process.pid)
        sampler.start()
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            os.killpg(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            # wait4: this child's own resource use, its waited-for children included
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
            sampler.done.set()
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
    sampler.join()
    return {
        "returncode": process.returncode,
        "timed_out": timed_out.is_set(),
        "wall_s": wall,
        "peak_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_peak_mb": sampler.peak / 2**20,
    }


def _metadata(entry: Any) -> dict[str, Any]:
    return {k: v.value for k, v in entry.asset_materialization.metadata.items()}


def run_figures(home: Path) -> dict[str, Any]:
    """What the run's Dagster instance recorded: rows per ingestion table (latest per partition,
    summed), the quality gate's result and the promoted model."""
    import dagster as dg

    figures: dict[str, Any] = {}
    if not (home / "dagster.yaml").exists():
        return figures
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for table in ("raw_events", "validated_events", "quarantined_events"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(table)), limit=10_000
            ).records
            latest: dict[str | None, dict[str, Any]] = {}
            for record in records:  # newest first
                entry = record.event_log_entry
                meta = _metadata(entry)
                if meta.get("dagster/row_count") is not None:
                    latest.setdefault(entry.asset_materialization.partition, meta)
            rows = [int(meta["dagster/row_count"]) for meta in latest.values()]
            figures[table] = sum(rows) if rows else None
            figures[f"{table}_partitions"] = len(rows)
            if table == "quarantined_events":
                reasons: dict[str, int] = {}
                for meta in latest.values():
                    for reason, n in (meta.get("rows_by_first_reason") or {}).items():
                        reasons[reason] = reasons.get(reason, 0) + int(n)
                figures["quarantine_reasons"] = {k: n for k, n in reasons.items() if n}
        key = dg.AssetCheckKey(dg.AssetKey("challenger_model"), "quality_gate")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
        if record is not None and record.evaluation is not None:
            meta = {k: v.value for k, v in record.evaluation.metadata.items()}
            figures["gate"] = {
                "passed": bool(record.evaluation.passed),
                "reasons": meta.get("reasons") or [],
                "warnings": meta.get("warnings") or [],
                "champion_basis": meta.get("champion_basis"),
            }
        for asset in ("challenger_model", "promoted_model"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=1
            ).records
            meta = _metadata(records[0].event_log_entry) if records else {}
            if asset == "challenger_model" and meta.get("model"):
                figures["challenger_model"] = meta["model"]  # the model made servable
            if asset == "promoted_model" and meta:
                figures["promoted"] = {"tag": meta.get("tag"), "stage": meta.get("stage")}
    return figures


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def model_figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's test NDCG@k with its bootstrap 5-95% band, and its evaluated customers."""
    out = {}
    for name, figures in report.get("models", {}).items():
        band = figures.get("bootstrap_ndcg") or {}
        out[name] = {
            "ndcg": _finite(figures.get("ndcg")),
            "low": _finite(band.get("p5")),
            "high": _finite(band.get("p95")),
            "n_users": figures.get("n_users"),
        }
    return out


def promoted_model(result: dict[str, Any]) -> tuple[str | None, str]:
    """The model promoted (a report model name, or None) and how that is known: the challenger's
    ``model`` metadata, else the report's ``selection.chosen``, else the ranker (what the
    pipeline promoted before it selected a model)."""
    promoted = result.get("promoted") or {}
    if promoted.get("stage") != "promoted":
        gate = result.get("gate") or {}
        if gate.get("reasons"):
            return None, "nothing promoted: the gate refused (" + "; ".join(gate["reasons"]) + ")"
        return None, "nothing promoted" + (f": {result['error']}" if result.get("error") else "")
    if result.get("challenger_model"):
        name = result["challenger_model"]
        return name, f"{name} (the challenger's model), as {promoted['tag']}"
    if result.get("chosen"):
        return result["chosen"], f"{result['chosen']} (selection.chosen), as {promoted['tag']}"
    return RANKER, (
        f"{RANKER} (no selection in the report: the pipeline promotes the ranker), "
        f"as {promoted['tag']}"
    )


def aim(result: dict[str, Any]) -> tuple[str, str]:
    """(verdict, sentence): is the promoted model's NDCG@10 at least the best simple
    baseline's, or within its band of it? Verdicts: met, met within its band, NOT met, n/a."""
    models = result.get("models") or {}
    baselines = {n: m for n, m in models.items() if n != RANKER and m["ndcg"] is not None}
    name, how = promoted_model(result)
    if not baselines:
        return "n/a", "no baseline figures (the models did not run)"
    best = max(baselines, key=lambda n: baselines[n]["ndcg"])
    b = baselines[best]["ndcg"]
    if name is None or name not in models or models[name]["ndcg"] is None:
        return "NOT met", f"{how}; best baseline {best} {b:.3f}"
    m = models[name]
    figure = f"{name} {m['ndcg']:.3f} [{_num(m['low'])}, {_num(m['high'])}]"
    if m["ndcg"] >= b:
        return "met", f"{figure} >= best baseline {best} {b:.3f}"
    if m["high"] is not None and m["high"] >= b:
        return (
            "met within its band",
            f"{figure}: below best baseline {best} {b:.3f}, band reaches it",
        )
    return "NOT met", f"{figure} < best baseline {best} {b:.3f}, beyond its band"


# The demo's own messages on stderr: "error: ...", "<stage> failed: ...", "    refused: ...".
_DEMO_MESSAGE = re.compile(r"^\s*(error|refused|\w+ failed|\d+ partition\(s\) failed):? ")


def demo_error(stderr: Path, returncode: int) -> str:
    """What the demo said went wrong: its own messages (not Dagster's log lines or warnings)."""
    lines = stderr.read_text(errors="replace").splitlines()
    said = [line.strip() for line in lines if _DEMO_MESSAGE.match(line)]
    if said:
        return " | ".join(said)
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1] if tail else f"exit code {returncode}"


def run_dataset(dataset: Dataset, workdir: Path, small: bool, shared: Path, timeout: float):
    folder = workdir / dataset.name
    result: dict[str, Any] = {"name": dataset.name, "title": dataset.title}
    started = time.perf_counter()
    try:
        config = dataset.prepare(folder / "source", small, shared)
    except Exception as error:  # a missing shared file, a bad template: this dataset only
        result.update(status="not run", error=f"{type(error).__name__}: {error}")
        return result
    result["prepare_s"] = time.perf_counter() - started
    result["config"] = str(config)
    state = folder / "state"
    result.update(run_demo(config, state, timeout))
    if result["timed_out"]:
        result["error"] = f"timed out after {timeout:.0f} s"
    elif result["returncode"] != 0:
        result["error"] = demo_error(state / "demo.err", result["returncode"])
    return collect(state, result)


def collect(state: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Add what a finished run left in ``state`` to ``result`` (which holds its exit code):
    the instance's figures, the evaluation report's, the aim and a status."""
    try:
        result.update(run_figures(state / "dagster_home"))
    except Exception as error:  # an instance the run left unreadable: say so, keep the rest
        result["figures_error"] = f"{type(error).__name__}: {error}"
    report_path = state / "reports" / "evaluation.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        result["k"] = report.get("k")
        result["protocol"] = report.get("protocol")
        result["best_model"] = report.get("best_model")
        result["models"] = model_figures(report)
        selection = report.get("selection")
        if isinstance(selection, dict):
            result["chosen"] = selection.get("chosen")
            result["rule"] = selection.get("rule")
            result["selection_best_baseline"] = selection.get("best_baseline")
            result["validation"] = {
                name: {key: _finite(v.get(key)) for key in ("ndcg", "low", "high")}
                for name, v in (selection.get("validation") or {}).items()
            }
    result["promoted_model"], result["promoted_how"] = promoted_model(result)
    result["aim"], result["aim_why"] = aim(result)
    gate = result.get("gate")
    refused = bool(gate and gate["reasons"])
    result["status"] = "ok" if result["returncode"] == 0 else ("refused" if refused else "failed")
    return result


# --- sources only ------------------------------------------------------------------------


def check_source(config: Path) -> dict[str, Any]:
    """Read and validate one source as the assets do; its rows, span, customers, items and the
    customers the protocol would evaluate."""
    from recsys_assets.core import constants as c
    from recsys_assets.evaluation.protocol import temporal_split
    from recsys_assets.ingestion.sources import load_events, load_source_spec
    from recsys_assets.ingestion.validation import split_valid_and_quarantined

    started = time.perf_counter()
    spec = load_source_spec(config)
    events = load_events(spec)
    checked = split_valid_and_quarantined(events, spec)
    valid = checked.valid
    out: dict[str, Any] = {
        "rows": len(events),
        "validated": len(valid),
        "quarantined": len(checked.quarantined),
        "first": str(events[c.EVENT_TS].min()),
        "last": str(events[c.EVENT_TS].max()),
        "customers": int(valid[c.USER_ID].nunique()),
        "items": int(valid[c.ITEM_ID].nunique()),
        "fields": ", ".join(spec.present_fields),
    }
    try:
        out["evaluated"] = len(temporal_split(valid).users)
    except Exception as error:  # no purchases left, or a protocol that changed shape
        out["evaluated"] = f"n/a ({error})"
    out["seconds"] = time.perf_counter() - started
    return out


def check_sources(datasets: list[Dataset], workdir: Path, small: bool, shared: Path) -> int:
    failed = 0
    for dataset in datasets:
        try:
            config = dataset.prepare(workdir / dataset.name / "source", small, shared)
            figures = check_source(config)
        except Exception as error:
            failed += 1
            print(f"{dataset.name}: FAILED: {type(error).__name__}: {error}", flush=True)
            continue
        print(
            f"{dataset.name}: {figures['rows']:,} rows ({figures['validated']:,} validated, "
            f"{figures['quarantined']:,} quarantined), {figures['first']} .. {figures['last']}, "
            f"{figures['customers']:,} customers, {figures['items']:,} items, evaluated "
            f"{figures['evaluated']}; fields: {figures['fields']}; {figures['seconds']:.1f} s "
            f"(config {config})",
            flush=True,
        )
    return 1 if failed else 0


# --- the results page -------------------------------------------------------------------------


def _num(value: Any, spec: str = ".3f") -> str:
    number = _finite(value)
    return "n/a" if number is None else format(number, spec)


def _count(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _band(figures: dict[str, Any] | None) -> str:
    if not figures:
        return ""
    return f"{_num(figures.get('ndcg'))} [{_num(figures.get('low'))}, {_num(figures.get('high'))}]"


def _quarantined(result: dict[str, Any]) -> str:
    raw, quarantined = result.get("raw_events"), result.get("quarantined_events")
    if quarantined is None:
        return "n/a"
    share = f" ({quarantined / raw:.1%})" if raw else ""
    return f"{quarantined:,}{share}"


def _gate(result: dict[str, Any]) -> str:
    gate = result.get("gate")
    if gate is None:
        return "not run"
    if gate["reasons"]:
        return "refused"
    return "passed" + (f", {len(gate['warnings'])} warning(s)" if gate["warnings"] else "")


def _promoted(result: dict[str, Any]) -> str:
    name = result.get("promoted_model")
    if name is None:
        return "none"
    return name if result.get("chosen") else f"{name} (today: always the ranker)"


def command_line(argv: list[str]) -> str:
    python = Path(os.path.abspath(sys.executable))  # normalised, links not followed
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else Path("python")
    return shlex.join([str(shown), "benchmarks/bench_datasets.py", *argv])


# One paragraph of the page (markdown joins its lines).
METHOD = """\
Each dataset ran `python -m recsys_assets demo --data-config <config>` in a subprocess of
its own, on a fresh state folder of its own (Dagster home, warehouse, Feast repository, models,
reports, BentoML store, logs), environment `{environment}`. Rows: the ingestion runs' row counts
(rows read = raw rows in the partitions; quarantined with its share). NDCG@10: the test period of
the fixed protocol, with the bootstrap 5-95% band over the evaluated customers (`bootstrap_ndcg`,
200 resamples). Chosen: `selection.chosen` of the evaluation report (picked on a validation
period); where the report has no `selection`, the pipeline promotes the ranker and the column
says so. The gate runs against no champion (fresh state): it checks that the NDCG is usable and
the latency (a warning only, in dev). Peak MB: the kernel's peak RSS of the demo process or its
largest child (`wait4`); tree MB: the peak of the tree's summed RSS, sampled every 0.5 s."""


def code_version() -> str:
    """The commit the pipeline ran from, and whether tracked files differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.splitlines()  # fmt: skip
    except OSError:
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    return f"commit {head}" + (f" with {len(changed)} changed tracked file(s)" if changed else "")


def render(
    results: list[dict[str, Any]], *, argv: list[str], small: bool, total_s: float, code: str
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "small (--small: quick matrix, scaled-down generated shapes)" if small else "full"
    lines = [
        "# The pipeline on a matrix of datasets (bench_datasets)",
        "",
        f"Command: `{command_line(argv)}` (from the repository root), run {when}, mode {mode}, "
        f"total wall time {total_s:.0f} s.",
        "",
        f"Machine: {machine()}",
        "",
        f"Code: {code}.",
        "",
        *(
            [
                "The small matrix leaves out the UCI-size datasets and scales the generated shapes "
                "down; the full matrix is `.venv/bin/python benchmarks/bench_datasets.py`.",
                "",
            ]
            if small
            else []
        ),
        METHOD.format(environment=ENVIRONMENT),
        "",
        "## Summary",
        "",
        "| dataset | status | rows read | quarantined | evaluated | chosen | gate | promoted | "
        "aim | wall s | peak MB | tree MB |",
        "|---|---|---:|---:|---:|---|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        models = r.get("models") or {}
        evaluated = next((m["n_users"] for m in models.values() if m.get("n_users")), None)
        lines.append(
            f"| {r['name']} | {r.get('status', 'not run')} | {_count(r.get('raw_events'))} | "
            f"{_quarantined(r)} | {_count(evaluated)} | {r.get('chosen') or 'n/a'} | {_gate(r)} | "
            f"{_promoted(r)} | {r.get('aim', 'n/a')} | {_num(r.get('wall_s'), '.0f')} | "
            f"{_num(r.get('peak_mb'), ',.0f')} | {_num(r.get('tree_peak_mb'), ',.0f')} |"
        )
    lines += ["", "## The aim: the promoted model at least the best simple baseline", ""]
    lines += [
        f"- {r['name']}: **{r.get('aim', 'n/a')}**: {r.get('aim_why', r.get('error'))}"
        for r in results
    ]
    for r in results:
        lines += ["", f"## {r['name']}: {r['title']}", ""]
        if r.get("config"):
            lines.append(f"Source config: `{_shown_path(r['config'])}`.")
        if r.get("error"):
            lines.append(f"Error: `{r['error']}`.")
        reasons = r.get("quarantine_reasons")
        if reasons:
            ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
            lines.append(
                "Quarantined by first reason: " + ", ".join(f"{k} {n:,}" for k, n in ranked) + "."
            )
        if r.get("protocol"):
            lines.append(f"Protocol: {r['protocol']}.")
        if r.get("rule"):
            lines.append(f"Selection rule: {r['rule']}.")
        lines.append(f"Promoted: {r.get('promoted_how', 'n/a')}.")
        lines += [
            "",
            "| rows read | validated | quarantined | partitions | chosen | gate | promoted | "
            "wall s | peak MB | tree MB |",
            "|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
            f"| {_count(r.get('raw_events'))} | {_count(r.get('validated_events'))} | "
            f"{_quarantined(r)} | {_count(r.get('raw_events_partitions'))} | "
            f"{r.get('chosen') or 'n/a'} | {_gate(r)} | {_promoted(r)} | "
            f"{_num(r.get('wall_s'), '.0f')} | {_num(r.get('peak_mb'), ',.0f')} | "
            f"{_num(r.get('tree_peak_mb'), ',.0f')} |",
        ]
        models = r.get("models") or {}
        if models:
            validation = r.get("validation") or {}
            lines += [
                "",
                "| model | test NDCG@10 [p5, p95] | validation NDCG@10 [low, high] | evaluated |",
                "|---|---|---|---:|",
            ]
            for name in sorted(models, key=lambda n: -(models[n]["ndcg"] or 0)):
                m = models[name]
                mark = " (chosen)" if name == r.get("chosen") else ""
                lines.append(
                    f"| {name}{mark} | {_band(m)} | {_band(validation.get(name)) or 'n/a'} | "
                    f"{_count(m.get('n_users'))} |"
                )
        gate = r.get("gate") or {}
        for warning in gate.get("warnings", []):
            lines.append(f"\nGate warning: {warning}")
        for reason in gate.get("reasons", []):
            lines.append(f"\nGate refused: {reason}")
    return "\n".join(lines) + "\n"


def _shown_path(path: str) -> str:
    """A config path as the page shows it: relative to the project, or its scratch copy's name."""
    p = Path(path)
    if p.is_relative_to(ROOT):
        return str(p.relative_to(ROOT))
    return f"<scratch>/{p.parent.parent.name}/{p.parent.name}/{p.name}"


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the quick matrix (a few minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"of {list(BY_NAME)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the results page")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--check-sources", action="store_true", help="read and validate only")
    parser.add_argument("--workdir", type=Path, help="scratch folder (kept); default a temp one")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared datasets")
    parser.add_argument("--timeout", type=float, help="seconds per dataset (900 small, 3600)")
    args = parser.parse_args(argv)

    matrix = [d for d in DATASETS if d.small or not args.small]
    if args.only:
        unknown = [n for n in args.only if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown dataset(s) {unknown}; known: {list(BY_NAME)}")
        outside = [n for n in args.only if n not in {d.name for d in matrix}]
        if outside:
            parser.error(f"{outside} not in the small matrix: {[d.name for d in matrix]}")
        matrix = [d for d in matrix if d.name in args.only]
    timeout = args.timeout or (900.0 if args.small else 3600.0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shared = args.shared.resolve()

    print(f"# bench_datasets: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"datasets: {[d.name for d in matrix]}; scratch: {workdir}", flush=True)
    try:
        if args.check_sources:
            return check_sources(matrix, workdir, args.small, shared)
        started, results, code = time.perf_counter(), [], code_version()
        for dataset in matrix:
            print(f"\n{dataset.name}: {dataset.title} ...", flush=True)
            result = run_dataset(dataset, workdir, args.small, shared, timeout)
            results.append(result)
            print(
                f"  {result['status']}: rows {_count(result.get('raw_events'))}, quarantined "
                f"{_quarantined(result)}, chosen {result.get('chosen') or 'n/a'}, gate "
                f"{_gate(result)}, promoted {_promoted(result)}, wall "
                f"{_num(result.get('wall_s'), '.0f')} s, peak {_num(result.get('peak_mb'), ',.0f')}"
                f" MB (tree {_num(result.get('tree_peak_mb'), ',.0f')} MB)",
                flush=True,
            )
            for name, m in sorted((result.get("models") or {}).items()):
                print(f"    {name:<22}NDCG@10 {_band(m)}")
            print(f"  aim: {result['aim']}: {result['aim_why']}", flush=True)
            if result.get("error"):
                print(f"  error: {result['error']}", flush=True)
        total = time.perf_counter() - started
        page = render(results, argv=argv, small=args.small, total_s=total, code=code)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page)
        print(f"\nwrote {args.out} (total {total:.0f} s)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, default=str))
            print(f"wrote {args.json}")
        return 0 if all(r["status"] in ("ok", "refused") for r in results) else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
