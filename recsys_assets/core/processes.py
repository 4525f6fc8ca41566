"""Local servers in their own process group: start, wait until ready, stop the whole group.

One helper for everything that runs a server beside itself: the closed-loop simulation and the
drill (``bentoml serve`` of a bento), the benchmarks and the integration tests. A server runs in
a new session, so its workers share its process group and stop with it; its output goes to a log
file (no pipe to fill), whose last lines are in the error when it exits or never gets ready. On
Linux it is also asked to stop when its parent dies, even by SIGKILL, so no server outlives the
process that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from recsys_assets.config.settings import PROJECT_ROOT
from recsys_assets.core import constants as c


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("(no output)" when there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _stop_with_parent() -> None:
    """In the server's process, before exec: ask Linux to send SIGTERM when the parent dies
    (elsewhere: nothing to do)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``process`` (started in a new session: its pid is the group
    id), SIGKILL whatever is left of the group after ``grace_s``."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        if process.returncode is not None and not _group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


class ServerProcess:
    """``command`` (which must make the server listen on ``port``) started in its own process
    group with ``env``, its stdout and stderr appended to ``log``."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str],
        log: Path,
        cwd: str | os.PathLike[str] = PROJECT_ROOT,
        host: str = "127.0.0.1",
    ) -> None:
        self.command, self.port, self.host, self.log = list(command), port, host, Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command, env=dict(env), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_stop_with_parent,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, path: str = c.READINESS_PATH, timeout_s: float = 180.0) -> None:
        """Wait until GET ``path`` answers 200. RuntimeError when the server exits first,
        TimeoutError after ``timeout_s``; both carry the log's last lines."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.process.returncode} before it was ready: "
                    f"{' '.join(self.command)}\n--- last log lines ---\n{tail(self.log)}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + path, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server not ready at {self.url}{path} after {timeout_s:g} s: "
                    f"{' '.join(self.command)}\n--- last log lines ---\n{tail(self.log)}"
                )
            time.sleep(0.25)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server and every process of its group."""
        stop_group(self.process, grace_s)


@contextlib.contextmanager
def served(
    command: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str],
    log: Path,
    ready_path: str = c.READINESS_PATH,
    timeout_s: float = 180.0,
    cwd: str | os.PathLike[str] = PROJECT_ROOT,
) -> Iterator[ServerProcess]:
    """A :class:`ServerProcess` that is ready (GET ``ready_path`` answered 200) inside the block
    and stopped, with its whole group, when the block ends."""
    server = ServerProcess(command, port, env=env, log=log, cwd=cwd)
    try:
        server.wait_ready(ready_path, timeout_s)
        yield server
    finally:
        server.stop()
