"""Local servers in their own process group: ready, stopped with their children, and a clear
error naming the command and its last output when they exit early or never get ready."""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

from recsys_assets.core.processes import ServerProcess, free_port, served

pytestmark = pytest.mark.integration


def http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_served_server_answers_inside_the_block_and_its_group_is_gone_after(tmp_path):
    port = free_port()
    log = tmp_path / "logs" / "server.log"
    with served(http_server(port), port, env=dict(os.environ), log=log, ready_path="/",
                cwd=tmp_path) as server:  # fmt: skip
        with urllib.request.urlopen(server.url + "/", timeout=5) as response:
            assert response.status == 200
        assert group_alive(server.pid)
    assert not group_alive(server.pid)
    assert "GET / HTTP/1.1" in log.read_text()  # its output went to the log


def test_a_server_that_exits_before_it_is_ready_is_a_clear_error(tmp_path):
    command = [sys.executable, "-c", "print('bad config: no model'); raise SystemExit(3)"]
    port, log = free_port(), tmp_path / "s.log"
    with pytest.raises(RuntimeError, match=r"exited with code 3 before it was ready") as error:
        served(command, port, env=dict(os.environ), log=log).__enter__()
    assert "bad config: no model" in str(error.value)


def test_a_server_never_ready_times_out_and_is_stopped(tmp_path):
    port = free_port()
    server = ServerProcess(http_server(port), port, env=dict(os.environ), log=tmp_path / "s.log",
                           cwd=tmp_path)  # fmt: skip
    try:
        with pytest.raises(TimeoutError, match=rf"not ready at http://127.0.0.1:{port}/missing"):
            server.wait_ready("/missing", timeout_s=1.0)  # answers 404 there, never 200
    finally:
        server.stop()
    assert not group_alive(server.pid)
