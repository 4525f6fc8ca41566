"""`make dev` starts the Dagster webserver and daemon, serves the UI, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dev_serves_the_ui_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "RECSYS_ENV": "test"}
    env["RECSYS_WAREHOUSE"] = str(tmp_path / "w.duckdb")
    # Started as scripts start it: in the background, with SIGINT ignored by the parent.
    server = subprocess.Popen(
        [sys.executable, "-m", "recsys_assets", "dev", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 120
        info = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    info = r.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert info and "dagster_webserver_version" in info, "the UI never answered"
        query = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql",
            data=b'{"query": "{ repositoriesOrError { ... on RepositoryConnection '
            b'{ nodes { name location { name } } } } }"}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(query, timeout=30) as response:
            assert b"recsys_assets" in response.read()  # the code location loaded
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail("dagster dev ignored SIGTERM")
