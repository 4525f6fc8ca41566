"""Every environment variable the project reads, declared once.

Each :class:`Variable` says what the variable means, its default (a fixed value, or how it is
derived when it depends on the environment), the environments that may set it and whether its
value is a secret (never logged, never written to a file the project commits). Modules read a
variable through its declaration (``variables.LOOP_LOG.read(environ)``, or its ``.name`` to set
it for a child process or to name it in a message); no other module spells a variable's name.
``RECSYS_BENTOML_HOME_<ENV>`` is a family of four, one per environment (:class:`VariableFamily`).

``python -m recsys_assets.config --markdown`` prints the table of docs/configuration.md;
``--write-docs`` rewrites it there (tests/unit/config/test_variables.py fails when they differ).

A setting of an environment file written as ``{env: NAME}`` becomes a :class:`SecretRef`: the
variable's name, never its value. The Dagster definitions hand it to resources as
``dg.EnvVar(NAME)`` (:mod:`recsys_assets.definitions`), so Dagster reads the secret only when a
run needs it. This module imports neither Dagster nor any domain.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

ENVIRONMENTS: tuple[str, ...] = ("dev", "test", "acceptance", "prod")  # settings.Environment
PROJECT = "recsys-assets"  # whose variable it is: this project's ...
BENTOML = "BentoML"  # ... or BentoML's own
DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
TABLE_START = "<!-- variables table: python -m recsys_assets.config --write-docs -->"
TABLE_END = "<!-- end of the variables table -->"
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # what this project declares
_ANY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what an environment file may name


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name and what the project does with it.

    ``default`` is what :meth:`read` returns when the variable is unset (None: no value);
    ``derived`` says, for the docs, how the default is found when it is no fixed value (it
    depends on ``RECSYS_ENV`` or on another setting): :meth:`read` then returns None and the
    caller derives it. ``environments`` may set it; ``elsewhere`` says what happens in the
    others (refused, ignored). A ``secret``'s value is never logged."""

    name: str
    meaning: str
    default: str | None = None
    derived: str | None = None
    environments: tuple[str, ...] = ENVIRONMENTS
    elsewhere: str | None = None
    secret: bool = False
    owner: str = PROJECT

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not an environment variable name")
        if not self.meaning.endswith("."):
            raise ValueError(f"{self.name}: the meaning is one sentence, ending with a period")
        if self.default is not None and self.derived is not None:
            raise ValueError(f"{self.name}: a fixed default or a derived one, not both")
        if self.secret and self.default is not None:
            raise ValueError(f"{self.name}: a secret has no default")
        unknown = sorted(set(self.environments) - set(ENVIRONMENTS))
        if unknown or not self.environments:
            raise ValueError(f"{self.name}: environments {unknown or '()'}; use {ENVIRONMENTS}")
        if (set(self.environments) != set(ENVIRONMENTS)) != (self.elsewhere is not None):
            raise ValueError(f"{self.name}: say what happens outside {self.environments}")

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The value ``environ`` (default ``os.environ``) sets, as it is (an empty value stays
        empty: the caller decides what it means), else :attr:`default`."""
        return (os.environ if environ is None else environ).get(self.name, self.default)

    def allowed_in(self, environment: object) -> bool:
        """Whether ``environment`` (a name or ``settings.Environment``) may set it."""
        return str(environment) in self.environments


@dataclass(frozen=True)
class VariableFamily:
    """Variables named ``prefix`` + one of ``members`` (upper case), one per environment, with
    one meaning: ``RECSYS_BENTOML_HOME_<ENV>``."""

    prefix: str
    meaning: str
    derived: str | None = None
    members: tuple[str, ...] = ENVIRONMENTS
    placeholder: str = "<ENV>"
    environments: tuple[str, ...] = ENVIRONMENTS
    elsewhere: str | None = None
    secret: bool = False
    owner: str = PROJECT

    @property
    def pattern(self) -> str:
        """The family's name in the docs: ``RECSYS_BENTOML_HOME_<ENV>``."""
        return self.prefix + self.placeholder

    def name_for(self, member: str) -> str:
        """The variable of ``member``: ``RECSYS_BENTOML_HOME_PROD`` for ``prod``."""
        if member not in self.members:
            raise ValueError(f"{self.pattern}: {member!r} is not one of {list(self.members)}")
        return self.prefix + member.upper()

    def variable(self, member: str) -> Variable:
        """The declaration of one member."""
        return Variable(
            self.name_for(member),
            self.meaning,
            derived=self.derived,
            environments=self.environments,
            elsewhere=self.elsewhere,
            secret=self.secret,
            owner=self.owner,
        )

    def read(self, member: str, environ: Mapping[str, str] | None = None) -> str | None:
        """The value of ``member``'s variable in ``environ`` (default ``os.environ``), None when
        unset."""
        return (os.environ if environ is None else environ).get(self.name_for(member))

    def names(self) -> tuple[str, ...]:
        return tuple(self.name_for(member) for member in self.members)


@dataclass(frozen=True)
class SecretRef:
    """A setting whose value is the secret held by the environment variable ``env_var_name``
    (``{env: NAME}`` in an environment file): the name, never the value. Dagster resources get
    it as ``dg.EnvVar(env_var_name)``, so the secret is read only when a run needs it."""

    env_var_name: str

    def __post_init__(self) -> None:
        if not _ANY_NAME.fullmatch(self.env_var_name):
            raise ValueError(f"{{env: {self.env_var_name}}} does not name an environment variable")


_DRILL_KNOB = (
    "refused: the service raises at start and stays unready, naming the variable, when a "
    "nonzero value is set in acceptance or prod (bentos/recommender/faults.py)"
)

# --- the environment and its files -----------------------------------------------------------

ENV = Variable(
    "RECSYS_ENV",
    "The environment this process runs in: dev, test, acceptance or prod; any other value stops "
    "with an error naming the variable.",
    default="dev",
)
DATA_CONFIG = Variable(
    "RECSYS_DATA_CONFIG",
    "The event source config (a YAML under data/sources/ or your own) that ingestion reads, "
    "instead of the environment file's data_config.",
    derived="derived from the environment: its file's `data_config`",
)
WAREHOUSE = Variable(
    "RECSYS_WAREHOUSE",
    "A local DuckDB file that replaces the environment file's warehouse, for tests, benchmarks "
    "and scratch runs.",
    derived="derived from the environment: its file's `warehouse` (`data/warehouse/<env>.duckdb` "
    "in dev and test; in acceptance and prod the secret `RECSYS_ACCEPTANCE_WAREHOUSE` or "
    "`RECSYS_PROD_WAREHOUSE`)",
)
ACCEPTANCE_WAREHOUSE = Variable(
    "RECSYS_ACCEPTANCE_WAREHOUSE",
    "The acceptance warehouse (the DuckDB database Dagster opens), named in acceptance.yaml as "
    "`{env: RECSYS_ACCEPTANCE_WAREHOUSE}` and read by Dagster only when a run needs it.",
    environments=("acceptance",),
    elsewhere="ignored: only acceptance.yaml names it",
    secret=True,
)
PROD_WAREHOUSE = Variable(
    "RECSYS_PROD_WAREHOUSE",
    "The prod warehouse (the DuckDB database Dagster opens), named in prod.yaml as "
    "`{env: RECSYS_PROD_WAREHOUSE}` and read by Dagster only when a run needs it.",
    environments=("prod",),
    elsewhere="ignored: only prod.yaml names it",
    secret=True,
)
FEATURE_REPO = Variable(
    "RECSYS_FEATURE_REPO",
    "The Feast repository folder (tests use a scratch copy).",
    default="feature_repo",
)
FEATURE_STORE = Variable(
    "RECSYS_FEATURE_STORE",
    "The Feast config file, relative to the Feast repository (for example "
    "environments/redis.yaml to try the Redis online store locally).",
    derived="derived from the environment: its file's `feature_store`",
)
FEAST_REDIS = Variable(
    "RECSYS_FEAST_REDIS",
    "The Redis connection string of the Feast online store (`host:port[,db=N,password=...]`), "
    "which Feast expands from `${RECSYS_FEAST_REDIS}` in feature_repo/environments/redis.yaml; "
    "a Kubernetes deployment takes it from a secretKeyRef only.",
    secret=True,
)
MODELS = Variable(
    "RECSYS_MODELS",
    "Where the model_store IO manager pickles the evaluation split and the fitted models.",
    derived="derived from the environment: `data/models/<env>`",
)
REPORTS = Variable(
    "RECSYS_REPORTS",
    "Where evaluation and monitoring reports go (the latest evaluation is evaluation.json there).",
    derived="derived from the environment: `reports` in dev, `reports/<env>` elsewhere",
)

# --- the service's logs and the loop's state -------------------------------------------------

FEEDBACK_LOG = Variable(
    "RECSYS_FEEDBACK_LOG",
    "The service's durable feedback event log (JSON lines), which ingestion reads back as a "
    "source.",
    derived="derived from the environment: `data/feedback/<env>/feedback.jsonl`",
)
SERVED_LOG = Variable(
    "RECSYS_SERVED_LOG",
    "Where the service writes the lists it served (JSON lines), which monitoring and the canary "
    "analysis read; empty counts as unset.",
    derived="derived: `served.jsonl` beside the feedback log",
)
AUDIT_LOG = Variable(
    "RECSYS_AUDIT_LOG",
    "Where the service audits its access decisions (JSON lines).",
    derived="derived: `audit.jsonl` beside the feedback log",
)
LOOP_LOG = Variable(
    "RECSYS_LOOP_LOG",
    "The continuous-deployment loop's event log: decisions, trainings, releases, canary "
    "decisions and the KPIs computed from them (JSON lines).",
    derived="derived from the environment: `data/loop/<env>/events.jsonl`",
)
CANARY_STATE = Variable(
    "RECSYS_CANARY_STATE",
    "The canary state file (challenger, share, salt) that the canary analysis writes and the "
    "service follows; once it exists it overrides the three canary variables.",
    derived="derived from the environment: `data/loop/<env>/canary.json`",
)
RELEASE_LEDGER = Variable(
    "RECSYS_RELEASE_LEDGER",
    "The release ledger shared by every environment: releases and rollbacks of whole bundles, "
    "append-only JSON lines.",
    derived="derived: `data/releases/ledger.jsonl` under the project root",
)

# --- BentoML's stores ------------------------------------------------------------------------

BENTOML_HOME = Variable(
    "BENTOML_HOME",
    "BentoML's own variable: the store of promoted models and bentos of this process, which "
    "BentoML reads once when first imported, so the project sets it from the settings first.",
    derived="derived from the environment: `data/bentoml/<env>`",
    owner=BENTOML,
)
BENTOML_HOME_PER_ENV = VariableFamily(
    "RECSYS_BENTOML_HOME_",
    "The BentoML store of the environment `<ENV>` (DEV, TEST, ACCEPTANCE or PROD), where "
    "promotions and rollbacks across environments find its models and bentos.",
    derived="derived: `BENTOML_HOME` when `<ENV>` is this process's `RECSYS_ENV`, else "
    "`data/bentoml/<env>`",
)

# --- serving and the canary ------------------------------------------------------------------

MODEL_TAG = Variable(
    "RECSYS_MODEL_TAG",
    "The BentoML model tag the service loads and a bento bundles (the bento asset sets it; "
    "`serve` sets the environment's champion when it is unset).",
    default="recsys-ranker:latest",  # core.constants.SERVING_MODEL_NAME + ":latest" (tested)
)
SERVICE_WORKERS = Variable(
    "RECSYS_SERVICE_WORKERS",
    "The number of worker processes of the BentoML service.",
    default="1",
)
SERVICE_URL = Variable(
    "RECSYS_SERVICE_URL",
    "The service's base URL, or several separated by commas, whose /metrics the canary analysis "
    "scrapes for per-variant error counts; unset, errors are not judged.",
)
CHALLENGER_TAG = Variable(
    "RECSYS_CHALLENGER_TAG",
    "The BentoML model tag of the canary challenger, loaded from the local store beside the "
    "champion; unset or empty: no canary.",
)
CANARY_SHARE = Variable(
    "RECSYS_CANARY_SHARE",
    "The challenger's share of customers, in [0, 1]; a bad value is refused even without a "
    "challenger.",
    default="0.1",  # release.canary.routing.DEFAULT_SHARE (tested)
)
CANARY_SALT = Variable(
    "RECSYS_CANARY_SALT",
    "The salt of the sticky canary assignment: a new salt reshuffles who meets the challenger.",
    derived="derived: the challenger tag",
)
CHALLENGER_DELAY_MS = Variable(
    "RECSYS_CHALLENGER_DELAY_MS",
    "A test and drill knob: milliseconds added to every request the challenger serves (a slow "
    "challenger).",
    default="0",
    environments=("dev", "test"),
    elsewhere=_DRILL_KNOB,
)
CHALLENGER_ERROR_RATE = Variable(
    "RECSYS_CHALLENGER_ERROR_RATE",
    "A test and drill knob: the share of the challenger's requests that fail with a 500, drawn "
    "per request id (a failing challenger).",
    default="0",
    environments=("dev", "test"),
    elsewhere=_DRILL_KNOB,
)

# --- access control --------------------------------------------------------------------------

API_KEYS = Variable(
    "RECSYS_API_KEYS",
    "The service's API keys, `<key>:<subject_id>:<role>[:<expires ISO>]` separated by `;` "
    "(or use RECSYS_API_KEYS_FILE, not both); without keys the service refuses readiness in "
    "acceptance and prod and serves openly in dev and test.",
    secret=True,
)
API_KEYS_FILE = Variable(
    "RECSYS_API_KEYS_FILE",
    "A file (a mounted secret) holding the service's API keys, one entry per line; the path is "
    "no secret, its content is.",
)
CONTROL_KEYS = Variable(
    "RECSYS_CONTROL_KEYS",
    "The control-plane keys issued to people, `<key>:<subject_id>:<role>[:<expires ISO>]` "
    "separated by `;` (or use RECSYS_CONTROL_KEYS_FILE, not both).",
    secret=True,
)
CONTROL_KEYS_FILE = Variable(
    "RECSYS_CONTROL_KEYS_FILE",
    "A file (a mounted secret) holding the control-plane keys, one entry per line; the path is "
    "no secret, its content is.",
)
OPERATOR_KEY = Variable(
    "RECSYS_OPERATOR_KEY",
    "The key an operator presents to the control-plane commands (promote, rollback, canary "
    "share), mapped to a person and role by the control-plane keys.",
    secret=True,
)

# --- observability ---------------------------------------------------------------------------

TRACING = Variable(
    "RECSYS_TRACING",
    "Where the service's request traces and the pipeline's run traces go: off, console or otlp "
    "(to OTEL_EXPORTER_OTLP_ENDPOINT).",
    default="off",
)
TRACE_SAMPLE_RATE = Variable(
    "RECSYS_TRACE_SAMPLE_RATE",
    "The share of the service's requests traced, in [0, 1] (every pipeline run is traced when "
    "tracing is on).",
    default="1.0",
)
LOG_FORMAT = Variable(
    "RECSYS_LOG_FORMAT",
    "The service's log format: json (one object per line) or text.",
    derived="derived from the environment: json in acceptance and prod, text in dev and test",
)
LOG_LEVEL = Variable(
    "RECSYS_LOG_LEVEL",
    "The level of the service's loggers (DEBUG logs one line per request); unset, BentoML's.",
)


def _registry(declared: Sequence[Variable]) -> Mapping[str, Variable]:
    by_name: dict[str, Variable] = {}
    for variable in declared:
        if variable.name in by_name:
            raise ValueError(f"{variable.name} is declared twice")
        by_name[variable.name] = variable
    return MappingProxyType(by_name)


# The registry, in the order of the docs table.
VARIABLES: Mapping[str, Variable] = _registry(
    [value for value in dict(globals()).values() if isinstance(value, Variable)]
)
FAMILIES: Mapping[str, VariableFamily] = MappingProxyType(
    {family.prefix: family for family in (BENTOML_HOME_PER_ENV,)}
)


def lookup(name: str) -> Variable | None:
    """The declaration of ``name``, a family's member included; None when it is not declared."""
    if name in VARIABLES:
        return VARIABLES[name]
    for family in FAMILIES.values():
        for member in family.members:
            if name == family.name_for(member):
                return family.variable(member)
    return None


def secret_names() -> frozenset[str]:
    """The variables whose values are secrets (never logged)."""
    names = {v.name for v in VARIABLES.values() if v.secret}
    return frozenset(names | {n for f in FAMILIES.values() if f.secret for n in f.names()})


# --- the docs table --------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Markdown of a table cell: ``|`` escaped, and ``<`` / ``>`` outside code spans (else they
    read as HTML tags)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _default(entry: Variable | VariableFamily) -> str:
    if isinstance(entry, Variable) and entry.default is not None:
        return f"`{entry.default}`"
    return entry.derived or "none"


def _environments(entry: Variable | VariableFamily) -> str:
    listed = ", ".join(entry.environments)
    return listed if entry.elsewhere is None else f"{listed} ({entry.elsewhere})"


def markdown_table() -> str:
    """The table of docs/configuration.md: one row per variable, then the families."""
    rows = [
        "| variable | meaning | default | environments that may set it | secret |",
        "|---|---|---|---|---|",
    ]
    entries: list[tuple[str, Variable | VariableFamily]] = [
        *((v.name, v) for v in VARIABLES.values()),
        *((f.pattern, f) for f in FAMILIES.values()),
    ]
    for name, entry in entries:
        cells = [f"`{name}`", entry.meaning, _default(entry), _environments(entry)]
        rows.append(
            "| " + " | ".join(_cell(c) for c in cells) + f" | {'yes' if entry.secret else 'no'} |"
        )
    return "\n".join(rows) + "\n"


def docs_table(text: str) -> str | None:
    """The generated table of a docs page's text (between its markers), or None."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return text[start + len(TABLE_START) : end].strip("\n") + "\n"


def with_table(text: str) -> str:
    """``text`` with its generated table replaced by :func:`markdown_table`."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START!r} ... {TABLE_END!r} block to replace")
    head, tail = text[: start + len(TABLE_START)], text[end:]
    return f"{head}\n{markdown_table()}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_assets.config", description=__doc__.splitlines()[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the variables table")
    action.add_argument(
        "--write-docs", action="store_true", help=f"rewrite the table in {DOCS_PAGE.name}"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    DOCS_PAGE.write_text(with_table(DOCS_PAGE.read_text()))
    print(f"wrote the variables table to {DOCS_PAGE}")
    return 0
