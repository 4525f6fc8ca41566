"""Working with the Feast repository: apply, write feature tables, read online features safely.

The repository itself (entities, sources, feature views, services) is declarative and lives in
``feature_repo/``; this module is what the Dagster assets and the serving path call on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_assets.config import variables
from recsys_assets.core import constants as c
from recsys_assets.features.ttl import TTL_FILE, read_ttls, table_ttls, write_ttls

# Views whose values are stored (batch) and must read the same offline and online.
STORED_VIEWS = ("customer_profile", "item_popularity", "customer_item")
# The parquet tables feature_repo/data_sources.py reads, one per batch source.
FEATURE_TABLES = (*STORED_VIEWS, "session_context")
# Views an entity can be unknown to; each gets a `<view>_known` flag on online reads.
FLAGGED_VIEWS = FEATURE_TABLES
# The feature service the ranker is registered under (feature_repo/feature_services.py): exactly
# the stored features it joins (training.ranker.feature_refs). ranker_v1, the first service, also
# lists session context and request-time features that no model reads; it stays registered for
# the models whose lineage names it.
FEATURE_SERVICE = "ranker_v2"
FEATURE_SERVICE_V1 = "ranker_v1"
KNOWN_FLAG = "{}_known"  # e.g. customer_profile_known: False when defaults were filled in


class FeatureRepoError(RuntimeError):
    """`feast apply` refused the repository; the message carries Feast's own explanation."""


@dataclass(frozen=True)
class FeatureRepo:
    """A Feast repository folder and the config file of the environment."""

    path: Path
    config_file: str = "feature_store.yaml"

    @property
    def tables_dir(self) -> Path:
        return self.path / "data"

    def table_path(self, name: str) -> Path:
        return self.tables_dir / f"{name}.parquet"

    @property
    def ttl_path(self) -> Path:
        """The views' TTLs that ``feature_views.py`` declares (written by :meth:`apply`)."""
        return self.tables_dir / TTL_FILE

    def derived_ttls(self, ttl_days: Mapping[str, float] | None = None) -> dict[str, timedelta]:
        """Each view's TTL derived from the stored tables in the data folder
        (:func:`~recsys_assets.features.ttl.table_ttls`, from their stamps), with ``ttl_days``
        (days per view, the setting ``features.ttl_days``) replacing the derived values."""
        tables = {
            name: pd.read_parquet(self.table_path(name), columns=[c.FEATURE_TS])
            for name in STORED_VIEWS
        }
        return table_ttls(tables, ttl_days)

    def declared_ttls(self) -> dict[str, timedelta]:
        """The TTLs ``feast apply`` gives the views: the last ones :meth:`apply` wrote, today's
        defaults before any was written."""
        return read_ttls(self.ttl_path)

    def missing_settings(self) -> list[str]:
        """Environment variables the config file refers to (``${NAME}``) that are not set."""
        text = (self.path / self.config_file).read_text()
        return sorted({name for name in re.findall(r"\$\{(\w+)\}", text) if name not in os.environ})

    def _require_settings(self) -> None:
        missing = self.missing_settings()
        if missing:
            raise FeatureRepoError(
                f"{self.path / self.config_file} needs the environment variable(s) {missing} "
                f"(for example {variables.FEAST_REDIS.name}=127.0.0.1:6379)"
            )

    def store(self):
        """A FeatureStore on this repository (imported lazily: Feast is slow to import)."""
        from feast import FeatureStore

        self._require_settings()
        return FeatureStore(repo_path=str(self.path), fs_yaml_file=self.path / self.config_file)

    def apply(self, timeout_s: float = 300, ttl_days: Mapping[str, float] | None = None) -> str:
        """Run `feast apply` in a child process; raise FeatureRepoError with Feast's message.

        First the views' TTLs are derived from the feature tables (:meth:`derived_ttls`, with
        the overrides ``ttl_days``) and written to :attr:`ttl_path`, which
        ``feature_views.py`` reads: the registry holds the TTLs of the data it serves.

        A child process keeps Feast's chdir and sys.exit away from the caller. Feast parses and
        validates the whole repository before it writes the registry, so a broken repository
        leaves the previous registry as it was. Missing feature tables are refused up front:
        Feast itself would register a source whose file does not exist.
        """
        self._require_settings()
        missing = [name for name in FEATURE_TABLES if not self.table_path(name).exists()]
        if missing:
            raise FeatureRepoError(
                f"feast apply refused in {self.path}: feature table(s) {missing} not found in "
                f"{self.tables_dir}; materialise the feature tables first"
            )
        write_ttls(self.ttl_path, self.derived_ttls(ttl_days))
        command = [sys.executable, "-m", "feast.cli.cli", "-f", self.config_file, "apply"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(
            command,
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            detail = _last_error_line(done.stderr) or done.stdout.strip()[-500:]
            raise FeatureRepoError(f"feast apply failed in {self.path}: {detail}")
        return done.stdout


def _last_error_line(stderr: str) -> str:
    """Feast prints a traceback; its last non-empty line names the problem."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or [""])[-1]


def to_feast_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Feature timestamps as Unix seconds (Float64) except the event and created timestamps.

    Feast's online writer cannot convert Arrow timestamp features; seconds are exact and every
    store handles them.
    """
    out = frame.copy()
    for name in out.columns:
        if name in (c.FEATURE_TS, c.CREATED_TS):
            continue
        if pd.api.types.is_datetime64_any_dtype(out[name].dtype):
            ts = out[name]
            if ts.dt.tz is None:
                ts = ts.dt.tz_localize("UTC")
            out[name] = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return out


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write a parquet table atomically: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".parquet.partial")
    frame.to_parquet(partial, index=False)
    os.replace(partial, path)


def expired(stamps_s, at: datetime | pd.Timestamp, ttl: timedelta | None) -> np.ndarray:
    """Which rows stamped at ``stamps_s`` (Unix seconds, NaN: no row) a view with ``ttl`` no
    longer gives at ``at``: the rule of Feast's point-in-time join, which the training sets
    follow (a row older than ``at - ttl`` is not returned; one stamped exactly then still is).
    A TTL of None or zero never expires, as in Feast.

    The online store holds each entity's latest row whatever its age, so every online read
    that must serve what training saw applies this rule with the view's registered TTL
    (:func:`view_ttls`): the service's reader (``FeastOnlineReader``), :func:`online_features`
    given ``as_of``, and the online side of :func:`consistency_report`.
    """
    stamps = np.asarray(stamps_s, dtype=np.float64)
    if not ttl:
        return np.zeros(stamps.shape, dtype=bool)
    cutoff = (_utc(at) - pd.Timestamp(0, tz="UTC") - pd.Timedelta(ttl)).total_seconds()
    return stamps < cutoff  # NaN (no row) compares False: nothing to expire


def view_ttls(store, views: Iterable[str]) -> dict[str, timedelta | None]:
    """Each view's TTL as registered: what ``feature_repo/feature_views.py`` declared at the
    last apply, derived from the data (:meth:`FeatureRepo.apply`)."""
    return {view: store.get_feature_view(view).ttl for view in views}


def _utc(ts: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _sdk_online(store, refs, entity_rows, as_of, views: Iterable[str]) -> pd.DataFrame:
    """``get_online_features`` as a frame; with ``as_of``, the features of ``views`` whose
    row is older than the view's TTL at ``as_of`` are missing (:func:`expired`)."""
    response = store.get_online_features(features=refs, entity_rows=list(entity_rows))
    if as_of is None:
        return response.to_df()
    frame = response.to_df(include_event_timestamps=True)
    fields = {view: names for view, names in _view_fields(store, refs).items() if view in views}
    for view, ttl in view_ttls(store, fields).items():
        for name in fields[view]:
            stale = expired(frame[f"{name}{_TS_SUFFIX}"], as_of, ttl)
            if stale.any():
                frame[name] = frame[name].mask(stale)
    return frame.drop(columns=[n for n in frame.columns if n.endswith(_TS_SUFFIX)])


_TS_SUFFIX = "__ts"  # Feast's column of a feature's event time (Unix seconds) in to_df


def online_features(
    store,
    entity_rows: Sequence[dict[str, object]],
    features: Sequence[str] | None = None,
    service: str = FEATURE_SERVICE,
    as_of: datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Online features for entity rows, keyed by name; unknown entities get defaults and a flag.

    Feast returns None for an entity it has never seen; a ranker must not see None, and the
    caller must know it happened, so each stored view adds ``<view>_known`` (False: defaults).
    Values are matched by name, never by position. The default service (the ranker's) needs
    ``user_id`` and ``item_id`` per row; ``ranker_v1`` adds session context and the on-demand
    request features, whose rows need ``request_ts`` too.

    With ``as_of``, a stored view's row older than the view's TTL at ``as_of`` counts as
    unknown, as the offline store (and so training) sees it (:func:`expired`); without it, the
    latest row is returned whatever its age. On-demand features are computed by Feast from the
    rows before that rule.
    """
    refs = features if features is not None else store.get_feature_service(service)
    raw = _sdk_online(store, refs, entity_rows, as_of, FEATURE_TABLES)
    return fill_defaults(raw, _view_fields(store, refs))


def _view_fields(store, refs) -> dict[str, list[str]]:
    """View name -> its feature names, for the views the request touched."""
    if isinstance(refs, list | tuple):
        views: dict[str, list[str]] = {}
        for ref in refs:
            view, name = ref.split(":", 1)
            views.setdefault(view, []).append(name)
        return views
    return {
        projection.name: [f.name for f in projection.features]
        for projection in refs.feature_view_projections
    }


def fill_defaults(frame: pd.DataFrame, view_fields: dict[str, list[str]]) -> pd.DataFrame:
    """Add ``<view>_known`` flags for stored views, then fill missing values with defaults."""
    out = frame.copy()
    for view, names in view_fields.items():
        present = [n for n in names if n in out.columns]
        if view in FLAGGED_VIEWS and present:
            out[KNOWN_FLAG.format(view)] = out[present].notna().any(axis=1)
    for name in out.columns:
        default = c.DEFAULT_FEATURE_VALUES.get(name)
        if default is None or (isinstance(default, float) and np.isnan(default)):
            continue  # NaN defaults (unknown price) stay NaN
        column = out[name]
        missing = column.isna()
        if missing.any():
            if pd.api.types.is_numeric_dtype(column) and not isinstance(default, str):
                column = column.fillna(default)
            else:  # object columns (strings, or all-None) are re-typed after filling
                column = column.astype(object).where(~missing, default).infer_objects()
        out[name] = column.astype("int64") if isinstance(default, int) else column
    return out


def historical_features(
    store, entity_df: pd.DataFrame, service: str = FEATURE_SERVICE
) -> pd.DataFrame:
    """Point-in-time correct features for (entity, event_timestamp) rows from the offline store."""
    job = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(service)
    )
    return job.to_df()


def materialize(store, start: datetime, end: datetime, views: Iterable[str] | None = None):
    """Load the latest values inside [start, end] into the online store (explicit range: an
    incremental first run would start at now minus the TTL and load nothing for old data)."""
    with quiet_feast():
        store.materialize(
            start_date=start, end_date=end, feature_views=list(views) if views else None
        )


@contextlib.contextmanager
def quiet_feast():
    """Silence Feast's progress lines and the DuckDB deprecation warnings its offline store
    triggers (ibis calls a method newer DuckDB deprecates); errors still raise."""
    with open(os.devnull, "w") as devnull, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.redirect_stdout(devnull):
            yield


@dataclass(frozen=True)
class ConsistencyReport:
    """Online vs offline values for sampled entities at one moment: online as Feast's SDK
    reads it (``get_online_features``) and, when a reader was given, as the service reads it."""

    compared: int  # entities compared
    values: int  # feature values compared (online through get_online_features)
    mismatches: int
    examples: str  # markdown table of the first mismatches, empty when none
    served_values: int | None = None  # values compared through the service's reader (None: none)
    served_mismatches: int = 0

    @property
    def passed(self) -> bool:
        """Values were compared on every read path asked for, and none differed: a sample
        that compared nothing (empty tables, keys that never join) proves nothing, so fails."""
        if self.values == 0 or self.mismatches:
            return False
        return self.served_values is None or (
            self.served_values > 0 and self.served_mismatches == 0
        )


def _equal(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality that treats two missing values as equal and floats with a tolerance."""
    both_missing = a.isna() & b.isna()
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        close = np.isclose(a.astype(float), b.astype(float), rtol=1e-9, atol=1e-9)
        return pd.Series(close, index=a.index) | both_missing
    return (a.astype(object) == b.astype(object)) | both_missing


def consistency_report(
    store,
    tables: dict[str, pd.DataFrame],
    at: datetime,
    sample_size: int = 50,
    seed: int = c.SEED,
    reader=None,
) -> ConsistencyReport:
    """Compare online values with point-in-time offline values at ``at`` for sampled entities.

    ``tables`` maps a stored view name to the table it was materialised from (for sampling keys
    and knowing the feature columns). Offline and online results are joined on the entity keys,
    never matched by position. With ``reader``, the online side is also read the way the
    service reads it: through its feature reader (``read(customer_id, items, as_of, bought)``,
    each feature an array aligned with ``items``: the caller passes
    :class:`recsys_assets.serving.model.FeastOnlineReader`, as features come before serving),
    on the features the reader returns.

    Both sides follow the views' TTL (as registered): the offline point-in-time join returns
    nothing for a row older than ``at - ttl``, and the online store holds the latest row
    whatever its age, so the SDK's online values are read under the same rule
    (:func:`expired`: such a row is missing). The reader is compared as it returns its
    values, without that adjustment: it must apply the rule itself, as the service does, so a
    reader that serves expired rows the model never saw in training fails the report.
    """
    compared = values = mismatches = served_values = served_mismatches = 0
    examples: list[str] = []
    for view, table in tables.items():
        keys = entity_keys(table)
        names = [n for n in table.columns if n not in (*keys, c.FEATURE_TS, c.CREATED_TS)]
        refs = [f"{view}:{name}" for name in names]
        sample = table[keys].drop_duplicates()
        sample = sample.sample(n=min(sample_size, len(sample)), random_state=seed)
        entity_df = sample.assign(**{c.FEATURE_TS: pd.Timestamp(at)})
        with quiet_feast():
            offline = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        online = _sdk_online(store, refs, sample.to_dict("records"), at, [view])
        joined = offline.merge(online, on=keys, suffixes=("_offline", "_online"))
        compared += len(joined)
        n, bad = _compare(joined, view, keys, names, "get_online_features", examples)
        values, mismatches = values + n, mismatches + bad
        if reader is not None:
            served = _read_served(reader, sample, keys, pd.Timestamp(at))
            read = [name for name in names if name in served.columns]
            joined = offline.merge(
                served[[*keys, *read]], on=keys, suffixes=("_offline", "_online")
            )
            n, bad = _compare(joined, view, keys, read, "service reader", examples)
            served_values, served_mismatches = served_values + n, served_mismatches + bad
    header = "| view | entity | feature | offline | online | read by |\n|---|---|---|---|---|---|\n"
    return ConsistencyReport(
        compared=compared,
        values=values,
        mismatches=mismatches,
        examples=header + "\n".join(examples[:10]) if examples else "",
        served_values=served_values if reader is not None else None,
        served_mismatches=served_mismatches,
    )


def _compare(
    joined: pd.DataFrame,
    view: str,
    keys: list[str],
    names: list[str],
    path: str,
    examples: list[str],
) -> tuple[int, int]:
    """(values compared, mismatches) of ``<name>_offline`` against ``<name>_online`` in
    ``joined``; the first three mismatches of each feature are added to ``examples``."""
    values = mismatches = 0
    for name in names:
        same = _equal(joined[f"{name}_offline"], joined[f"{name}_online"])
        values += len(same)
        mismatches += int((~same).sum())
        for _, row in joined.loc[~same].head(3).iterrows():
            key = ", ".join(str(row[k]) for k in keys)
            examples.append(
                f"| {view} | {key} | {name} | {row[f'{name}_offline']} | "
                f"{row[f'{name}_online']} | {path} |"
            )
    return values, mismatches


# The id a read gets for the key a view lacks (item rows are read for this customer, customer
# rows with this item): only the view's own features are compared, so what it finds is unused.
_NO_ENTITY = ""


def _read_served(reader, sample: pd.DataFrame, keys: list[str], at: pd.Timestamp) -> pd.DataFrame:
    """The sampled entities' features as the service's reader returns them: one read per
    customer with the sample's items, every customer-item pair looked up (``bought=None``)."""
    fill = pd.Series(_NO_ENTITY, index=sample.index, dtype=object)
    users = sample[c.USER_ID].astype(str) if c.USER_ID in keys else fill
    items = sample[c.ITEM_ID].astype(str) if c.ITEM_ID in keys else fill
    parts = []
    for user, rows in sample.groupby(users, sort=False):
        got = reader.read(str(user), items.loc[rows.index].to_numpy(dtype=object), at, None)
        part = rows[keys].reset_index(drop=True)
        parts.append(part.assign(**{name: np.asarray(value) for name, value in got.items()}))
    return pd.concat(parts, ignore_index=True) if parts else sample[keys].iloc[:0]


def entity_keys(table: pd.DataFrame) -> list[str]:
    """The join keys present in a feature table (customer, item, or both)."""
    return [key for key in (c.USER_ID, c.ITEM_ID) if key in table.columns]
