"""The bento's ``include`` list (bentos/recommender/bentofile.yaml) against what the service
imports: every module the service loads is shipped, and nothing else of the package is (the
pipeline, the CLI and the simulation stay out of the serving image).

What the service loads is measured in a fresh interpreter: ``bentos.recommender.service``, every
import statement of the bento's own modules (those inside functions run at start or per request),
and ``recsys_assets.features.tables``, which Feast's on-demand view imports when it runs. The
globs are matched as BentoML matches them: gitignore patterns (``pathspec``'s gitwildmatch) on
paths relative to the build context, the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pathspec
import pytest
import yaml

from tests.conftest import PROJECT_ROOT

BENTOFILE = PROJECT_ROOT / "bentos" / "recommender" / "bentofile.yaml"
PACKAGES = ("recsys_assets", "bentos")  # the repository's code a bento can ship
NEVER_SERVED = (
    "recsys_assets.defs",
    "recsys_assets.definitions",
    "recsys_assets.cli",
    "recsys_assets.runs",
    "recsys_assets.simulation",
    "recsys_assets.monitoring",
)

# Run in a subprocess: this test process has already imported much of the package.
_LOADED = """
import ast, json, pathlib, sys

import bentos.recommender.service  # noqa: F401

for path in sorted(pathlib.Path("bentos/recommender").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name.split(".")[0] in ("recsys_assets", "bentos") for name in names):
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), {})
import recsys_assets.features.tables  # noqa: F401  (Feast's on-demand view)

root = pathlib.Path.cwd().resolve()
print(json.dumps({
    name: str(pathlib.Path(module.__file__).resolve().relative_to(root))
    for name, module in sorted(sys.modules.items())
    if name.split(".")[0] in ("recsys_assets", "bentos") and getattr(module, "__file__", None)
}))
"""


def _spec(patterns: list[str]) -> pathspec.PathSpec:
    with warnings.catch_warnings():  # pathspec 1.x deprecates the name BentoML 1.4 uses
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", patterns)


@pytest.fixture(scope="module")
def bentofile() -> dict:
    return yaml.safe_load(BENTOFILE.read_text())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, str]:
    """Module name -> file (relative to the repository root) of every module of the repository's
    packages that the service loads."""
    env = {
        **os.environ,
        "RECSYS_ENV": "test",
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")),  # an empty store
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("RECSYS_TRACING", None)
    done = subprocess.run(
        [sys.executable, "-c", _LOADED],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _package_files() -> list[str]:
    """Every Python file of the repository's packages, relative to the repository root."""
    return sorted(
        path.relative_to(PROJECT_ROOT).as_posix()
        for package in PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


@pytest.fixture(scope="module")
def shipped(bentofile):
    """Whether the bento ships a path (relative to the build context)."""
    include, exclude = _spec(bentofile["include"]), _spec(bentofile["exclude"])
    return lambda path: include.match_file(path) and not exclude.match_file(path)


def test_every_module_the_service_loads_is_shipped(shipped, loaded):
    assert "bentos.recommender.service" in loaded and "recsys_assets.features.tables" in loaded
    missing = sorted(path for path in loaded.values() if not shipped(path))
    assert missing == [], f"add to the bentofile's include list: {missing}"


def test_nothing_else_of_the_package_is_shipped(shipped, loaded):
    imported = set(loaded.values())
    unused = [path for path in _package_files() if shipped(path) and path not in imported]
    assert unused == [], f"shipped but never imported by the service: {unused}"


def test_the_pipeline_cli_and_simulation_are_not_loaded(loaded):
    assert [
        name for name in loaded if any(name == p or name.startswith(p + ".") for p in NEVER_SERVED)
    ] == []


def test_the_settings_and_policy_files_are_shipped(shipped):
    """Data files the loaded modules read: the environments' settings and the access policy."""
    config = PROJECT_ROOT / "recsys_assets" / "config"
    files = [path.relative_to(PROJECT_ROOT).as_posix() for path in config.rglob("*.yaml")]
    assert "recsys_assets/config/policy.yaml" in files
    assert [path for path in files if not shipped(path)] == []


def test_the_globs_match_as_bentoml_matches_them(bentofile, shipped, tmp_path):
    """The matching above is BentoML's own (its build's path spec, on an empty context so no
    .bentoignore applies): ``*`` stays within a folder, a folder pattern takes all below it."""
    with warnings.catch_warnings():  # as in _spec
        warnings.simplefilter("ignore", DeprecationWarning)
        from bentoml._internal.bento.build_config import BentoPathSpec

        bentoml_spec = BentoPathSpec(bentofile["include"], bentofile["exclude"], str(tmp_path))
    paths = [
        *_package_files(),
        "recsys_assets/defs/serving/assets.py",
        "recsys_assets/core/__pycache__/constants.cpython-311.pyc",
        "feature_repo/feature_views.py",
        "feature_repo/data/registry.db",
    ]
    assert [p for p in paths if bentoml_spec.includes(p) != shipped(p)] == []
    assert not shipped("recsys_assets/core/__pycache__/constants.cpython-311.pyc")
    assert not shipped("feature_repo/data/registry.db")
