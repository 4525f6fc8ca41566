"""A model's lineage names the features it actually reads, and they exist in the Feast repo."""

from __future__ import annotations

import importlib
import sys

import dagster as dg
import numpy as np
import pytest
from feast import FeatureService, FeatureView

from recsys_assets.cli.pipeline import _print_features
from recsys_assets.core import constants as c
from recsys_assets.defs.lineage import model_lineage, model_version
from recsys_assets.features.store import FEATURE_SERVICE, FEATURE_SERVICE_V1
from recsys_assets.training.ranker import (
    CANDIDATE,
    DERIVED,
    DERIVED_FEATURES,
    DERIVED_INPUTS,
    RAW_FEATURES,
    STORED,
    RankerConfig,
    derive_arrays,
    feature_columns,
    feature_lineage,
    feature_refs,
)
from tests.conftest import PROJECT_ROOT

CONTEXT_FEATURES = (c.DEVICE, c.COUNTRY, c.HOUR_OF_DAY, c.DAY_OF_WEEK, c.IS_WEEKEND)
CONTEXT_VIEWS = ("session_context", "request_features")
_REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")


@pytest.fixture(scope="module")
def repo():
    """The declarations of feature_repo/, imported as `feast apply` imports them."""
    path = str(PROJECT_ROOT / "feature_repo")
    sys.path.insert(0, path)
    try:
        yield {name: importlib.import_module(name) for name in _REPO_MODULES}
    finally:
        sys.path.remove(path)
        for name in _REPO_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def lineage():
    columns = feature_columns(RankerConfig().generator_names())  # what fit_ranker trains on
    with dg.DagsterInstance.ephemeral() as instance:
        return columns, model_lineage(
            instance,
            [],
            code_version="1",
            params={},
            feature_service=FEATURE_SERVICE,
            features=feature_lineage(columns),
        )


def _declared(module, kind):
    return {obj.name: obj for obj in vars(module).values() if isinstance(obj, kind)}


def test_lineage_records_exactly_the_ranker_feature_columns(lineage):
    columns, recorded = lineage
    assert [f["name"] for f in recorded["features"]] == columns
    assert recorded["feature_service"] == FEATURE_SERVICE
    kinds = {f["name"]: f["kind"] for f in recorded["features"]}
    assert kinds["repeat_score"] == kinds["n_sources"] == CANDIDATE
    assert kinds[c.ORDERS_TOTAL] == STORED and kinds["price_band_code"] == DERIVED
    orders = next(f for f in recorded["features"] if f["name"] == c.ORDERS_TOTAL)
    assert orders["feast_refs"] == ["customer_profile:orders_total"]


def test_every_recorded_feast_reference_exists_in_the_repo_views(lineage, repo):
    _, recorded = lineage
    views = _declared(repo["feature_views"], FeatureView)
    fields = {f"{name}:{field.name}" for name, view in views.items() for field in view.features}
    refs = {ref for f in recorded["features"] for ref in f["feast_refs"]}
    assert refs and refs <= fields, refs - fields
    assert refs == set(feature_refs())  # every joined feature feeds some model input


def test_the_ranker_service_lists_exactly_what_the_ranker_reads(repo):
    services = _declared(repo["feature_services"], FeatureService)
    assert {FEATURE_SERVICE, FEATURE_SERVICE_V1} <= set(services)
    service = services[FEATURE_SERVICE]
    refs = [
        f"{projection.name}:{field.name}"
        for projection in service.feature_view_projections
        for field in projection.features
    ]
    assert refs == feature_refs()
    assert service.tags["version"] == FEATURE_SERVICE.removeprefix("ranker_v")


def test_context_features_the_ranker_does_not_use_are_not_in_the_lineage(lineage, repo):
    _, recorded = lineage
    names = {f["name"] for f in recorded["features"]}
    refs = {ref for f in recorded["features"] for ref in f["feast_refs"]}
    assert not names & set(CONTEXT_FEATURES)
    assert not {ref.split(":")[1] for ref in refs} & set(CONTEXT_FEATURES)
    assert not {ref.split(":")[0] for ref in refs} & set(CONTEXT_VIEWS)
    # the first service listed them although no model read them; it is not what is recorded
    v1 = _declared(repo["feature_services"], FeatureService)[FEATURE_SERVICE_V1]
    assert set(CONTEXT_VIEWS) <= {p.name for p in v1.feature_view_projections}


def test_derived_inputs_name_exactly_the_stored_features_each_is_computed_from():
    """Change one stored feature at a time: exactly the derived inputs that declare it move."""
    rng = np.random.default_rng(0)
    n = 8
    raw = {name: rng.uniform(2.0, 50.0, n) for name in RAW_FEATURES}
    for name in (c.FIRST_ORDER_TS, c.LAST_ORDER_TS, c.LAST_BOUGHT_TS):
        raw[name] = rng.uniform(1.0e9, 1.2e9, n)
    raw[c.PRICE_BAND] = np.array([c.PRICE_BAND_LOW] * n, dtype=object)
    raw[c.HOME_COUNTRY] = np.array(["France"] * n, dtype=object)
    changed = {
        c.PRICE_BAND: np.array([c.PRICE_BAND_HIGH] * n, dtype=object),
        c.HOME_COUNTRY: np.array([c.HOME_MARKET] * n, dtype=object),
    }
    now = 1.3e9
    base = derive_arrays(raw, now)
    assert set(DERIVED_INPUTS) == set(DERIVED_FEATURES) == set(base)
    moved: dict[str, set[str]] = {name: set() for name in base}
    for name in RAW_FEATURES:
        other = changed.get(name, raw[name] * 1.5 if raw[name].dtype != object else None)
        after = derive_arrays({**raw, name: other}, now)
        for derived, values in after.items():
            if not np.allclose(values, base[derived], equal_nan=True):
                moved[derived].add(name)
    assert moved == {name: set(sources) for name, sources in DERIVED_INPUTS.items()}


def test_an_unknown_model_input_is_refused():
    with pytest.raises(ValueError, match="neither a candidate nor a feature"):
        feature_lineage([c.DEVICE])


def test_model_version_follows_the_inputs_and_keeps_feature_free_models_as_they_were():
    plain = {"code_version": "1", "params": {"k": 1}, "feature_service": None}
    assert model_version("t", {**plain, "features": None}) == model_version("t", plain)
    ranker = {**plain, "feature_service": FEATURE_SERVICE}
    fewer = feature_lineage(["repeat_score", c.ORDERS_TOTAL])
    more = feature_lineage(["repeat_score", c.ORDERS_TOTAL, c.SALES_7D])
    assert model_version("t", {**ranker, "features": fewer}) != model_version(
        "t", {**ranker, "features": more}
    )


def test_audit_prints_each_input_and_where_it_comes_from(lineage, capsys):
    _, recorded = lineage
    _print_features(recorded)
    out = capsys.readouterr().out
    assert f"{len(recorded['features'])} model inputs (" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines[c.ORDERS_TOTAL].endswith("customer_profile:orders_total")
    assert "derived from customer_profile:price_band" in lines["price_band_code"]
    assert lines["als_rank"].endswith("candidate generators")
    assert not set(lines) & set(CONTEXT_FEATURES)
    _print_features({"feature_service": None})
    assert "not recorded" in capsys.readouterr().out
    _print_features({"feature_service": None, "features": None})
    assert "reads no features" in capsys.readouterr().out
