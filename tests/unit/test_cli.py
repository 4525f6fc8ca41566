"""The command line (``recsys_assets/cli/``): ``--help`` lists every command without loading the
pipeline, and the library it runs on (``recsys_assets.runs``) does not import it back."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from recsys_assets import cli
from tests.conftest import PROJECT_ROOT

COMMANDS = {
    "demo", "lineage", "audit", "dev", "serve", "loop", "models", "rollback", "promote",
    "releases", "simulate", "metrics", "traces", "canary", "timeline", "drill",
}  # fmt: skip
# What ``--help`` must not pay for: the Dagster definitions, BentoML, Feast, pandas.
HEAVY = ("recsys_assets.definitions", "bentoml", "feast", "pandas")


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: this test process has imported much already."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command():
    done = subprocess.run(
        [sys.executable, "-m", "recsys_assets", "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = set(re.findall(r"^ {4}([a-z]+) ", done.stdout, re.M))
    assert listed == COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m recsys_assets {command}")


def test_help_does_not_load_the_pipeline_bentoml_or_feast():
    done = _python(
        "import contextlib, io, json, sys\n"
        "from recsys_assets.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize(
    "module", ["recsys_assets.runs", "recsys_assets.simulation.closed_loop",
               "recsys_assets.simulation.drill"],
)  # fmt: skip
def test_the_library_does_not_import_the_cli(module):
    done = _python(
        f"import json, sys\nimport {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('recsys_assets.cli'))))\n"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
