"""The Prometheus rules and scrape configuration (deploy/prometheus/) and the Grafana dashboard
(deploy/grafana/recsys.json): promtool accepts them, the rules' unit tests pass, and every
metric, label and label value they read is one the code exports.

The exported metrics are read from the code, never listed here: the service's from
:class:`~bentos.recommender.metrics.ServiceMetrics` (created on a private registry), the
pipeline's from :class:`~recsys_assets.defs.observability.pipeline_metrics.PipelineCollector`
(collected from an empty instance: every family is yielded, samples or not), and BentoML's request
metrics from its own middleware, set up with a client that records what it creates. promtool is
required: without it these tests fail and name ``scripts/ensure_promtool.sh``.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
RULE_TESTS = (PROMETHEUS / "alerts_test.yml", PROMETHEUS / "alerts_days_test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "recsys.json"
SERVICE = ROOT / "bentos" / "recommender" / "service.py"
INSTALL = "scripts/ensure_promtool.sh"

# Labels Prometheus adds to every scraped series, and the series it makes itself per target.
TARGET_LABELS = frozenset({"job", "instance"})
SYNTHETIC = {"up": frozenset()}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}
# Grafana's interval variables, read as a plain range for parsing and for promtool.
GRAFANA_INTERVALS = re.compile(r"\$__(?:rate_interval|interval|range)\b")
# The environments a production Prometheus watches: the latency alert holds their budget.
WATCHED_ENVIRONMENTS = ("acceptance", "prod")


def find_promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            f"promtool is not installed: run {INSTALL} (make test runs it before the tests)",
            pytrace=False,
        )
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess:
    """promtool with ``args``; the test fails (never skips) without promtool."""
    return subprocess.run(
        [find_promtool(), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


# --- what the code exports -----------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str  # without a counter's _total
    kind: str  # counter, gauge, histogram, summary
    labels: frozenset[str]

    def samples(self) -> dict[str, frozenset[str]]:
        """The series names a scrape shows for this family, each with its label names."""
        return {
            self.name + suffix: self.labels | ({"le"} if suffix == "_bucket" else set())
            for suffix in SUFFIXES[self.kind]
        }


def service_families() -> list[Family]:
    """The service's own metrics: a ServiceMetrics, its constructors pointed at a private
    registry (the process-wide one stays untouched)."""
    import prometheus_client
    from prometheus_client.metrics import MetricWrapperBase

    from bentos.recommender.metrics import ServiceMetrics

    registry = prometheus_client.CollectorRegistry()
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("Counter", "Gauge", "Histogram", "Summary"):
            constructor = getattr(prometheus_client, kind)
            patch.setattr(
                prometheus_client, kind, functools.partial(constructor, registry=registry)
            )
        metrics = ServiceMetrics()
    created = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert created, "ServiceMetrics created no metric"
    return [Family(m._name, m._type, frozenset(m._labelnames)) for m in created]


def pipeline_families() -> list[Family]:
    """The pipeline exporter's gauges, collected from an empty Dagster instance."""
    import dagster as dg

    from recsys_assets.defs.observability.pipeline_metrics import PipelineCollector

    with dg.DagsterInstance.ephemeral() as instance:
        families = list(PipelineCollector(instance).collect())
    return [Family(f.name, f.type, frozenset(getattr(f, "_labelnames", ()))) for f in families]


def bentoml_namespace() -> str:
    """The prefix of BentoML's request metrics in a served service: its v2 configuration's
    ``services.metrics.namespace``, which the recommender does not override."""
    import bentoml._internal.configuration as configuration

    decorator = next(
        node
        for node in ast.walk(ast.parse(SERVICE.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "bentoml.service"
    )
    assert "metrics" not in {k.arg for k in decorator.keywords}, "the service sets its own"
    defaults = Path(configuration.__file__).parent / "v2" / "default_configuration.yaml"
    return yaml.safe_load(defaults.read_text())["services"]["metrics"]["namespace"]


def bentoml_families() -> list[Family]:
    """BentoML's request metrics as its traffic middleware (the one a 1.4 service runs) creates
    them, recorded by a stand-in metrics client."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    class Recorder:
        def __init__(self) -> None:
            self.made: list[Family] = []

        def _make(self, kind: str, namespace: str, name: str, labelnames=(), **_) -> Recorder:
            full = f"{namespace}_{name}"
            if kind == "counter":
                full = full.removesuffix("_total")
            self.made.append(Family(full, kind, frozenset(labelnames)))
            return self

        def labels(self, *_, **__) -> Recorder:
            return self

        def __getattr__(self, kind: str):
            if kind not in ("Counter", "Gauge", "Histogram", "Summary"):
                raise AttributeError(kind)
            return functools.partial(self._make, kind.lower())

    recorder = Recorder()
    middleware = RunnerTrafficMetricsMiddleware(app=None, namespace=bentoml_namespace())
    middleware._setup(metrics_client=recorder, duration_buckets=(1.0,))
    assert recorder.made, "BentoML's middleware created no metric"
    return recorder.made


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Every series name the service, BentoML and the pipeline exporter export, with its labels."""
    series: dict[str, frozenset[str]] = dict(SYNTHETIC)
    for family in [*service_families(), *bentoml_families(), *pipeline_families()]:
        series.update(family.samples())
    return series


@functools.cache
def known_values() -> dict[str, frozenset[str]]:
    """Label values the rules and panels may match on, read from the code."""
    from recsys_assets.core import constants as c
    from recsys_assets.defs.features.assets import online_features
    from recsys_assets.defs.monitoring.assets import MONITORS
    from recsys_assets.defs.observability.pipeline_metrics import MONITOR_FIGURES
    from recsys_assets.serving import model

    assets = [*MONITORS, online_features]
    apis = {
        node.name
        for node in ast.walk(ast.parse(SERVICE.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any("bentoml.api" in ast.unparse(d) for d in node.decorator_list)
    }
    return {
        "reason": frozenset(
            {
                model.FALLBACK_UNKNOWN_CUSTOMER,
                model.FALLBACK_FEATURES_UNAVAILABLE,
                model.FALLBACK_NO_CANDIDATES,
            }
        ),
        "asset": frozenset(a.key.to_user_string() for a in assets),
        "check": frozenset(spec.name for a in assets for spec in a.check_specs),
        "figure": frozenset(f for figures in MONITOR_FIGURES.values() for f in figures),
        # BentoML's label is the path (/recommend), recsys_errors_total's the API's name
        "endpoint": frozenset({c.LIVENESS_PATH, c.READINESS_PATH, *apis, *(f"/{a}" for a in apis)}),
    }


def scrape_jobs() -> frozenset[str]:
    config = yaml.safe_load(CONFIG.read_text())
    return frozenset(job["job_name"] for job in config["scrape_configs"])


# --- reading PromQL --------------------------------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][\w:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", *GROUPING}
# Aggregations may put their grouping before their argument: `sum by (x) (...)`.
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
}  # fmt: skip


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position : position + 30]!r} in {expr!r}")
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        position = match.end()
    return found


def _matchers(toks: list[tuple[str, str]], i: int) -> tuple[list[tuple[str, str, str]], int]:
    """The label matchers of ``{...}`` starting at ``toks[i]``; the index after the ``}``."""
    found, i = [], i + 1
    while toks[i][1] != "}":
        if toks[i][1] == ",":
            i += 1
            continue
        (_, label), (_, op), (kind, value) = toks[i : i + 3]
        assert kind == "string", f"matcher {label}{op}{value} has no string value"
        found.append((label, op, ast.literal_eval(value) if value[0] != "`" else value[1:-1]))
        i += 3
    return found, i + 1


def read_promql(expr: str) -> tuple[list[Selector], set[str]]:
    """The series selectors of a PromQL expression and the labels of its grouping clauses."""
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if text == "[":  # a range or a subquery: durations only
            i = next(j for j in range(i, len(toks)) if toks[j][1] == "]") + 1
        elif kind == "name" and text in GROUPING and following == "(":
            j = i + 2
            while toks[j][1] != ")":
                if toks[j][0] == "name":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
        elif kind == "name" and (
            text in KEYWORDS or following == "(" or (text in AGGREGATIONS and following in GROUPING)
        ):  # a keyword, a function or an aggregation
            i += 1
        elif kind == "name":
            matchers: list = []
            i += 1
            if following == "{":
                matchers, i = _matchers(toks, i)
            selectors.append(Selector(text, tuple(matchers)))
        elif text == "{":
            matchers, i = _matchers(toks, i)
            selectors.append(Selector(None, tuple(matchers)))
        else:
            i += 1
    return selectors, grouping


def _values(op: str, value: str) -> list[str] | None:
    """The label values a matcher names: the value of = and !=, the alternatives of a regex
    that is only alternatives; None for any other regex."""
    if op in ("=", "!="):
        return [value]
    if re.fullmatch(r"[\w/.-]+(\|[\w/.-]+)*", value):
        return value.split("|")
    return None


def problems(expr: str, recorded: dict[str, frozenset[str]]) -> list[str]:
    """What in ``expr`` the code does not export: metric names, their labels, label values
    (fallback reasons, assets, checks, monitor figures, endpoints, scrape jobs)."""
    series = exported() | recorded
    values = known_values()
    selectors, grouping = read_promql(GRAFANA_INTERVALS.sub("5m", expr))
    found, labels_seen = [], set(TARGET_LABELS)
    for selector in selectors:
        if selector.name not in series:
            found.append(f"{selector.name} is not an exported metric")
            continue
        labels = series[selector.name] | TARGET_LABELS
        labels_seen |= labels
        for label, op, value in selector.matchers:
            if label not in labels:
                found.append(f"{selector.name} has no label {label}")
                continue
            allowed = (
                scrape_jobs() if (selector.name, label) == ("up", "job") else values.get(label)
            )
            if allowed is None:
                continue
            unknown = sorted(set(_values(op, value) or []) - allowed)
            if unknown:
                found.append(f"{selector.name}: {label} {unknown} not among {sorted(allowed)}")
    found += [
        f"grouping label {label} is on none of its metrics" for label in grouping - labels_seen
    ]
    return found


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def recorded() -> dict[str, frozenset[str]]:
    """The recording rules' names, each with the labels its expression keeps."""
    return {
        rule["record"]: frozenset(read_promql(rule["expr"])[1])
        for rule in rules()
        if "record" in rule
    }


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_panels(panels: Iterable[dict] | None = None) -> Iterator[dict]:
    for panel in json.loads(DASHBOARD.read_text())["panels"] if panels is None else panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_missing_fails_and_names_the_install_script(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=re.escape(INSTALL)):
        find_promtool()


def test_promtool_accepts_the_rules():
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config():
    result = run_promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_say():
    result = run_promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never seen quiet"
    assert (firing | quiet) - names == set(), "cases of alerts that do not exist"


def test_dashboard_queries_are_valid_promql(tmp_path):
    rules_file = tmp_path / "dashboard.yml"
    rules_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {
                                "record": f"dashboard_query_{i}",
                                "expr": GRAFANA_INTERVALS.sub("5m", e),
                            }
                            for i, (_, e) in enumerate(dashboard_exprs())
                        ],
                    }
                ]
            }
        )
    )
    result = run_promtool("check", "rules", rules_file)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the rules read what the code exports ------------------------------------------------------


def test_exported_metrics_are_read_from_the_code():
    series = exported()
    assert series["recsys_recommend_latency_seconds_bucket"] == {
        "model_version",
        "fallback",
        "variant",
        "le",
    }
    assert series["recsys_fallbacks_total"] == {"reason", "variant"}
    assert series["bentoml_service_request_total"] >= {"endpoint", "http_response_code"}
    assert series["recsys_pipeline_asset_check_not_judged"] == {"asset", "check"}
    assert series["recsys_pipeline_last_run_success"] == {"job"}


def test_reading_promql_finds_selectors_labels_and_grouping():
    selectors, grouping = read_promql(
        'sum by (reason) (rate(a_total{x="1",y=~"p|q"}[5m] offset 1h)) / ignoring (reason) '
        "group_left sum(rate(b_count[5m:1m])) > 0.05 and on () up == 1"
    )
    assert selectors == [
        Selector("a_total", (("x", "=", "1"), ("y", "=~", "p|q"))),
        Selector("b_count", ()),
        Selector("up", ()),
    ]
    assert grouping == {"reason"}


def test_an_invented_metric_label_or_value_is_caught():
    assert problems("rate(recsys_requests_total[5m])", {}) == [
        "recsys_requests_total is not an exported metric"
    ]
    assert problems('recsys_fallbacks_total{status="x"}', {}) == [
        "recsys_fallbacks_total has no label status"
    ]
    assert problems('recsys_fallbacks_total{reason="features_down"}', {}) != []
    assert problems('up{job="recsys"}', {}) != []
    assert problems("sum by (shop) (recsys_canary_share)", {}) != []


@pytest.mark.parametrize(
    "expr", [pytest.param(r["expr"], id=r.get("alert") or r["record"]) for r in rules()]
)
def test_rules_read_only_exported_metrics(expr):
    assert problems(expr, recorded()) == []


@pytest.mark.parametrize("expr", [pytest.param(e, id=name) for name, e in dashboard_exprs()])
def test_dashboard_reads_only_exported_metrics(expr):
    assert problems(expr, {}) == []


# --- the alerts are complete -------------------------------------------------------------------


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_for_severity_and_annotations(rule):
    assert rule.get("for"), "no for:"
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_runbook_is_a_docs_page_and_section_that_exist(rule):
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    page = ROOT / path
    assert path.startswith("docs/") and page.is_file(), f"{path} is not a page of docs/"
    if anchor:
        assert anchor in heading_anchors(page.read_text()), f"{path} has no section #{anchor}"


def test_latency_alert_and_panel_hold_the_settings_budget():
    from recsys_assets.config import get_settings

    budgets = {get_settings(env).serving.latency_budget_p99_ms for env in WATCHED_ENVIRONMENTS}
    assert len(budgets) == 1, f"the watched environments' budgets differ: {budgets}"
    budget_s = budgets.pop() / 1000
    (rule,) = [r for r in alerts() if r["alert"] == "RecsysRecommendLatencyP99OverBudget"]
    threshold = re.search(r"p99_5m\s*>\s*([0-9.]+)", rule["expr"])
    assert threshold and float(threshold.group(1)) == pytest.approx(budget_s)
    (panel,) = [p for p in dashboard_panels() if p["title"] == "/recommend latency p50 and p99"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["value"] is not None] == [pytest.approx(budget_s)]


# --- scrape configuration and dashboard --------------------------------------------------------


def test_scrape_config_reaches_the_default_ports_and_loads_the_rules():
    from recsys_assets.cli import observability, serving

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    serving.add_commands(commands)
    observability.add_commands(commands)
    config = yaml.safe_load(CONFIG.read_text())
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "recsys-service": [f"127.0.0.1:{parser.parse_args(['serve']).port}"],
        "recsys-pipeline": [f"127.0.0.1:{parser.parse_args(['metrics']).port}"],
    }
    assert config["rule_files"] == [RULES.name]


def test_dashboard_uses_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert panels and dashboard_exprs()
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    source = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]


def test_dashboard_shows_each_figure_the_alerts_watch():
    used = {
        s.name for _, e in dashboard_exprs() for s in read_promql(GRAFANA_INTERVALS.sub("5m", e))[0]
    }
    assert used >= {
        "bentoml_service_request_total",
        "recsys_recommend_latency_seconds_bucket",
        "recsys_fallbacks_total",
        "recsys_pipeline_runs",
        "recsys_pipeline_last_run_success",
        "recsys_pipeline_asset_check_passed",
        "recsys_pipeline_asset_check_not_judged",
        "recsys_pipeline_asset_last_materialization_timestamp_seconds",
        "up",
    }
