"""No secret in any log line of a test run: a pytest plugin (loaded by tests/conftest.py).

Every credential the tests hand to the code comes from :data:`SECRETS` (tests import their
keys from here). While the session runs, every Python log record is checked as it is emitted;
when it ends, every log-like file the run wrote under its scratch folders (the services' logs,
audit logs, loop and served logs, reports) is read. A secret found anywhere, except in the
secret files the tests wrote on purpose, fails the session and names the file or logger,
never the secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

# Control-plane operator keys and data-plane API keys the tests use.
SECRETS: dict[str, str] = {
    "storefront": "sf-live-7c1e94b0a2d35f68",
    "analyst": "an-live-03f5a9c7e1b2d846",
    "expired_storefront": "sf-old-5d2c8e1f0a9b7364",
    "unknown": "nobody-9e8d7c6b5a4f3e2d",
    "release_manager": "rm-live-2b4d6f8a0c1e3a5c",
    "sre": "sre-live-9f7e5d3c1b0a8e6c",
    "expired_release_manager": "rm-old-13579bdf02468ace",
    # unit tests of the policy engine and the control plane
    "policy_storefront": "sf-4f0c2b9e7d1a8c3e5b6a",
    "policy_expired": "old-9a8b7c6d5e4f3a2b1c0d",
    "policy_analyst": "an-0123456789abcdef0123",
    "control_release_manager": "rm-1f2e3d4c5b6a79880a1b",
    "control_sre": "sre-0a9b8c7d6e5f4a3b2c1d",
    "control_expired": "rm-old-77aa66bb55cc44dd",
}
# Files the tests write to hold secrets on purpose (a mounted secret file's stand-in).
SECRET_FILE_MARKERS = ("keys", "secret")
LOG_LIKE_SUFFIXES = (".log", ".jsonl", ".json", ".html", ".txt", ".out", ".err", ".md", "")
MAX_FILE_BYTES = 64 << 20


def leaks(text: str, secrets: Mapping[str, str] = SECRETS) -> list[str]:
    """The names of the ``secrets`` (name -> value) whose value occurs in ``text``."""
    return [name for name, value in secrets.items() if value and value in text]


def scan_files(roots: Iterable[Path], secrets: Mapping[str, str] = SECRETS) -> dict[str, list[str]]:
    """``{file: [secret names]}`` for log-like files under ``roots`` that hold a secret (secret
    files, named like ``*keys*`` or ``*secret*``, are skipped: holding one is their job)."""
    found: dict[str, list[str]] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            name = path.name.lower()
            if not path.is_file() or any(marker in name for marker in SECRET_FILE_MARKERS):
                continue
            if path.suffix.lower() not in LOG_LIKE_SUFFIXES:
                continue
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            hits = leaks(text, secrets)
            if hits:
                found[str(path)] = hits
    return found


class _LeakWatch(logging.Handler):
    """Checks every log record of the test process as it is emitted."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.found: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format is not ours to judge
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + str(record.exc_info[1])
        hits = leaks(text)
        if hits:
            self.found.setdefault(f"logger {record.name}", []).extend(hits)


_WATCH = _LeakWatch()


def scratch_roots(config: pytest.Config) -> list[Path]:
    """The run's scratch folders: pytest's base temp and the scratch logs of tests/conftest."""
    roots = [Path(tempfile.gettempdir()) / f"recsys-tests-{os.getpid()}"]
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        with contextlib.suppress(Exception):  # no test asked for a tmp_path: nothing there
            roots.append(factory.getbasetemp())
    return roots


def pytest_sessionstart(session: pytest.Session) -> None:
    # at the root logger's level (WARNING unless a test lowers it): the level of the errors
    # and warnings a leak would most likely ride on; lower levels reach the files scanned below
    logging.getLogger().addHandler(_WATCH)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_WATCH)
    found = {**_WATCH.found, **scan_files(scratch_roots(session.config))}
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  {where}: {', '.join(sorted(set(names)))}" for where, names in found.items()]
    message = "secret values leaked into logs during the test run:\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_sep("=", "secret scan failed", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
