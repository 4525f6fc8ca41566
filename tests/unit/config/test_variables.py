"""The declaration of every environment variable (recsys_assets/config/variables.py): the docs
table is generated from it, every file names only declared variables, and no module but the
declaration spells a variable's name in code."""

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from recsys_assets.config import Environment, variables
from recsys_assets.config.settings import ENVIRONMENTS_DIR, PROJECT_ROOT
from recsys_assets.config.variables import (
    FAMILIES,
    VARIABLES,
    SecretRef,
    Variable,
    lookup,
    markdown_table,
)

# A variable's name, or the start of one built in code ("RECSYS_" + ...); BENTOML_HOME alone.
NAME = re.compile(r"RECSYS_[A-Z0-9_]*|(?<![A-Z0-9_])BENTOML_HOME(?![A-Z0-9_])")
DECLARATION = PROJECT_ROOT / "recsys_assets" / "config" / "variables.py"
SOURCE_TREES = ("recsys_assets", "bentos", "benchmarks")
# Files that name variables in prose or configuration: every name there must be declared.
NAMING_FILES = (
    "README.md",
    "docs/**/*.md",
    "recsys_assets/config/environments/*.yaml",
    "feature_repo/**/*.yaml",
    "deploy/**/*.yaml",
    "bentos/**/*.yaml",
)


def _relative(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def _sources() -> list[Path]:
    return sorted(
        path
        for tree in SOURCE_TREES
        for path in (PROJECT_ROOT / tree).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None) if isinstance(node, kinds) else None
        first = body[0].value if body and isinstance(body[0], ast.Expr) else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.add(id(first))
    return found


def spelled_in_code(text: str) -> list[tuple[int, str]]:
    """(line, name) of each variable name in a string of code: docstrings and comments left out."""
    tree = ast.parse(text)
    docstrings = _docstrings(tree)
    return sorted(
        (node.lineno, name)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
        for name in NAME.findall(node.value)
    )


def named_in_prose(text: str) -> list[tuple[int, str]]:
    """(line, name) of each variable name in the docstrings and comments of a module."""
    tree = ast.parse(text)
    docstrings = _docstrings(tree)
    found = [
        (node.lineno, name)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) in docstrings
        for name in NAME.findall(node.value)
    ]
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found += [(token.start[0], name) for name in NAME.findall(token.string)]
    return sorted(found)


def declared(name: str) -> bool:
    """A declared variable, a family member, or a family's prefix (code that builds a name)."""
    return lookup(name) is not None or name in FAMILIES


# --- the declaration -------------------------------------------------------------------------


def test_the_docs_table_is_the_declaration():
    text = variables.DOCS_PAGE.read_text()
    assert variables.docs_table(text) == markdown_table(), (
        "docs/configuration.md's table differs from recsys_assets/config/variables.py: "
        "run python -m recsys_assets.config --write-docs"
    )


def test_the_docs_are_linked():
    assert "docs/configuration.md" in (PROJECT_ROOT / "README.md").read_text()
    environments = (PROJECT_ROOT / "docs" / "architecture.md").read_text().split("## ")
    section = next(part for part in environments if part.startswith("Environments\n"))
    assert "configuration.md" in section


def test_each_variable_is_declared_once_under_its_own_name():
    # VARIABLES refuses a name declared twice; each declaration is the module attribute
    # named after it, so `variables.LOOP_LOG` is RECSYS_LOOP_LOG.
    for name, variable in VARIABLES.items():
        assert variable.name == name
        assert getattr(variables, name.removeprefix("RECSYS_")) is variable
    assert len(VARIABLES) == len({v.name for v in VARIABLES.values()})
    assert tuple(e.value for e in Environment) == variables.ENVIRONMENTS


def test_config_imports_no_dagster():
    code = "import sys, recsys_assets.config; print('dagster' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_declaration_is_checked():
    with pytest.raises(ValueError, match="not an environment variable name"):
        Variable("recsys_x", "Lower case.")
    with pytest.raises(ValueError, match="a secret has no default"):
        Variable("RECSYS_X", "A key.", default="k", secret=True)
    with pytest.raises(ValueError, match="say what happens outside"):
        Variable("RECSYS_X", "A knob.", environments=("dev",))
    with pytest.raises(ValueError, match="ending with a period"):
        Variable("RECSYS_X", "no period")
    with pytest.raises(ValueError, match="does not name an environment variable"):
        SecretRef("not a name")


def test_read_returns_the_value_as_set_else_the_default():
    assert variables.ENV.read({}) == "dev"
    assert variables.ENV.read({"RECSYS_ENV": "prod"}) == "prod"
    assert variables.ENV.read({"RECSYS_ENV": ""}) == ""  # the caller decides what empty means
    assert variables.LOOP_LOG.read({}) is None  # derived: the caller derives it
    assert variables.TRACE_SAMPLE_RATE.read({}) == "1.0"


def test_read_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_LOOP_LOG", "/tmp/loop.jsonl")
    assert variables.LOOP_LOG.read() == "/tmp/loop.jsonl"


def test_the_bentoml_home_family_has_one_variable_per_environment():
    family = variables.BENTOML_HOME_PER_ENV
    assert family.pattern == "RECSYS_BENTOML_HOME_<ENV>"
    assert family.names() == tuple(f"RECSYS_BENTOML_HOME_{e.value.upper()}" for e in Environment)
    assert family.read("prod", {"RECSYS_BENTOML_HOME_PROD": "/stores/prod"}) == "/stores/prod"
    assert family.read("dev", {}) is None
    assert lookup("RECSYS_BENTOML_HOME_TEST").name == "RECSYS_BENTOML_HOME_TEST"
    assert lookup("RECSYS_BENTOML_HOME_STAGING") is None
    with pytest.raises(ValueError, match="staging"):
        family.name_for("staging")
    assert variables.BENTOML_HOME.owner == variables.BENTOML


def test_the_declared_defaults_are_the_code_defaults():
    from recsys_assets.core import constants as c
    from recsys_assets.observability.telemetry import tracing_config
    from recsys_assets.release.canary.routing import DEFAULT_SHARE, CanaryConfig

    assert variables.MODEL_TAG.default == f"{c.SERVING_MODEL_NAME}:latest"
    assert float(variables.CANARY_SHARE.default) == DEFAULT_SHARE
    assert CanaryConfig.from_env({"RECSYS_CHALLENGER_TAG": "m:1"}).share == DEFAULT_SHARE
    assert tracing_config({"RECSYS_TRACING": "console"})["sample_rate"] == 1.0
    assert tracing_config({}) is None and tracing_config({"RECSYS_TRACING": "off"}) is None
    assert variables.ENV.default == Environment.DEV.value


def test_the_secrets():
    from recsys_assets.release.kubernetes import SECRET_ENV_VARS

    assert variables.secret_names() == {
        "RECSYS_ACCEPTANCE_WAREHOUSE",
        "RECSYS_PROD_WAREHOUSE",
        "RECSYS_FEAST_REDIS",
        "RECSYS_API_KEYS",
        "RECSYS_CONTROL_KEYS",
        "RECSYS_OPERATOR_KEY",
    }
    assert set(SECRET_ENV_VARS) <= variables.secret_names()


def test_the_drill_knobs_are_for_dev_and_test_only():
    for knob in (variables.CHALLENGER_DELAY_MS, variables.CHALLENGER_ERROR_RATE):
        assert knob.environments == ("dev", "test")
        assert not knob.allowed_in(Environment.PROD) and knob.allowed_in("test")
        assert "refused" in knob.elsewhere


def test_the_drill_knobs_are_refused_where_the_declaration_says():
    from bentos.recommender import faults  # the service's own module: it must import

    for knob in (variables.CHALLENGER_DELAY_MS, variables.CHALLENGER_ERROR_RATE):
        refused = {e for e in variables.ENVIRONMENTS if not knob.allowed_in(e)}
        assert set(faults.REFUSED_IN) == refused


def test_environment_files_name_only_declared_secrets():
    def references(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                yield node["env"]
            else:
                for value in node.values():
                    yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    for environment in Environment:
        raw = yaml.safe_load((ENVIRONMENTS_DIR / f"{environment.value}.yaml").read_text())
        for name in references(raw):
            variable = lookup(name)
            assert variable is not None, f"{environment.value}.yaml: {name} is not declared"
            assert variable.secret and variable.allowed_in(environment), name
    for path in (PROJECT_ROOT / "feature_repo").rglob("*.yaml"):
        for name in re.findall(r"\$\{(\w+)\}", path.read_text()):
            variable = lookup(name)
            assert variable is not None and variable.secret, f"{_relative(path)}: {name}"


# --- the source ------------------------------------------------------------------------------


def test_the_scan_tells_code_from_prose():
    text = (
        '"""Reads ``RECSYS_ENV``."""\n'
        "import os  # RECSYS_TRACING too\n"
        'X = os.environ.get("RECSYS_LOOP_LOG")\n'
        'Y = f"{X} RECSYS_BENTOML_HOME_" + "BENTOML_HOME"\n'
        "def f():\n"
        '    """RECSYS_MODELS"""\n'
    )
    assert spelled_in_code(text) == [
        (3, "RECSYS_LOOP_LOG"),
        (4, "BENTOML_HOME"),
        (4, "RECSYS_BENTOML_HOME_"),
    ]
    assert named_in_prose(text) == [(1, "RECSYS_ENV"), (2, "RECSYS_TRACING"), (6, "RECSYS_MODELS")]


@pytest.mark.parametrize("path", [p for p in _sources() if p != DECLARATION], ids=_relative)
def test_no_module_spells_a_variable_name(path):
    """Code reads and sets variables through their declaration (``variables.X.name``,
    ``.read(environ)``), never by a string of its own; docstrings and comments may name them."""
    spelled = spelled_in_code(path.read_text())
    assert spelled == [], f"{_relative(path)} spells variable names; use config.variables"


@pytest.mark.parametrize("path", _sources(), ids=_relative)
def test_modules_name_only_declared_variables(path):
    text = path.read_text()
    names = named_in_prose(text) + spelled_in_code(text)
    assert [(line, name) for line, name in names if not declared(name)] == []


def test_docs_and_configuration_name_only_declared_variables():
    undeclared = {
        (_relative(path), name)
        for pattern in NAMING_FILES
        for path in PROJECT_ROOT.glob(pattern)
        for name in NAME.findall(path.read_text())
        if not declared(name)
    }
    assert undeclared == set()
