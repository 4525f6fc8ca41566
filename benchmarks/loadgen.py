"""HTTP load generator for the serving benchmarks: closed-loop and open-loop POST JSON load.

Closed loop: ``concurrency`` workers send requests back to back (each waits for its answer),
so the offered load adapts to the server: this measures capacity and per-request latency at a
given parallelism. Open loop: requests start at a fixed rate whatever the completions; latency
is taken from each request's *scheduled* start, so a stalled server (or a late generator) shows
up in the figures instead of silently lowering the load (no coordinated omission). The service
time from the actual send is reported beside it, and the dispatch lag (send - scheduled) tells
whether the generator itself kept up.

The generator shares the CPUs with the server on a small machine, so the hot path is lean: one
``aiohttp.ClientSession`` (keep-alive, connector limit >= the concurrency), JSON bodies encoded
before the timed phase (``payload(i)`` is called for ``i < distinct`` and reused cyclically),
uvloop when installed, the cyclic GC paused while measuring.

From another script (``benchmarks/`` on ``sys.path``, as it is for a script there)::

    from loadgen import free_port, print_table, run_closed, run_open, serve

    port = free_port()
    cmd = ["bentoml", "serve", "benchmarks.bare_service.service:Bare", "--port", str(port)]
    with serve(cmd, port, cwd=ROOT):
        url = f"http://127.0.0.1:{port}/recommend"
        pay = lambda i: {"customer_id": ids[i % len(ids)], "k": 10}
        results = [asyncio.run(run_closed(url, pay, concurrency=c, duration_s=10)) for c in (1, 8)]
        results.append(asyncio.run(run_open(url, pay, rate=200, duration_s=60)))
    print_table(results)

CLI::

    python benchmarks/loadgen.py --url http://127.0.0.1:3000/recommend --concurrency 1,8,32 \\
        --duration 10 --rate 200 --rate-duration 60 [--customers-file ids.txt] \\
        [--serve "bentoml serve benchmarks.bare_service.service:Bare"]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from recsys_assets.core.processes import free_port, served

if __package__:  # imported as benchmarks.loadgen
    from .common import ROOT, machine
else:  # run as a script, or imported with benchmarks/ on sys.path
    from common import ROOT, machine

Payload = Callable[[int], dict]

# Outcome codes of one request (kept as small ints in the hot path).
OK, HTTP_ERROR, TIMEOUT, EXCEPTION = 0, 1, 2, 3
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


# --------------------------------------------------------------------------- pure helpers


def classify(status: int | None, exc: BaseException | None = None) -> int:
    """The outcome of one request: OK (2xx), HTTP_ERROR (other status), TIMEOUT or EXCEPTION.

    Timeouts are told apart from other failures: aiohttp's and asyncio's are TimeoutErrors.
    """
    if exc is not None:
        return TIMEOUT if isinstance(exc, TimeoutError) else EXCEPTION
    if status is None:
        return EXCEPTION
    return OK if 200 <= status < 300 else HTTP_ERROR


def summarize_ms(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of durations in seconds (NaN when empty).

    Percentiles are numpy's default (linear interpolation between order statistics).
    """
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    if a.size == 0:
        return dict.fromkeys(("p50", "p95", "p99", "max", "mean"), math.nan)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def schedule(rate: float, duration_s: float) -> np.ndarray:
    """Open-loop start offsets in seconds from the run start: i / rate for every i with
    i / rate < duration_s (so exactly rate * duration_s requests for whole products)."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    n = math.ceil(rate * duration_s - 1e-9)
    return np.arange(n, dtype=np.float64) / rate


@dataclass
class Result:
    """The figures of one run. Latencies (ms) are over successful requests only."""

    mode: str  # "closed" or "open"
    load: str  # "c=8" or "200/s"
    count: int  # requests completed (any outcome)
    ok: int
    http_errors: int
    timeouts: int
    exceptions: int
    elapsed_s: float
    throughput: float  # successful requests per second over elapsed_s
    latency_ms: dict[str, float]  # open loop: from the scheduled start
    service_ms: dict[str, float]  # from the actual send (same as latency in closed loop)
    lag_ms: dict[str, float]  # dispatch lag, send - scheduled (zeros in closed loop)
    statuses: dict[int, int] = field(default_factory=dict)  # non-2xx status -> count
    label: str = ""
    client_cpu_s: float = math.nan  # the generator's own CPU time over the timed phase

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return d


def aggregate(
    mode: str,
    load: str,
    start: float,
    scheduled: Sequence[float],
    sent: Sequence[float],
    done: Sequence[float],
    outcomes: Sequence[int],
    statuses: Sequence[int] = (),
    label: str = "",
) -> Result:
    """Turn per-request timestamps (perf_counter seconds) and outcome codes into a Result.

    latency = done - scheduled, service = done - sent, lag = sent - scheduled; elapsed runs
    from ``start`` to the last completion. ``statuses`` holds the HTTP status per request
    (0 when there was none) and only non-2xx ones are counted.
    """
    sch = np.asarray(scheduled, dtype=np.float64)
    snt = np.asarray(sent, dtype=np.float64)
    dne = np.asarray(done, dtype=np.float64)
    out = np.asarray(outcomes, dtype=np.int8)
    good = out == OK
    elapsed = float(dne.max() - start) if dne.size else 0.0
    n_ok = int(good.sum())
    bad = Counter(int(s) for s in statuses if s and not 200 <= s < 300)
    return Result(
        mode=mode,
        load=load,
        count=int(out.size),
        ok=n_ok,
        http_errors=int((out == HTTP_ERROR).sum()),
        timeouts=int((out == TIMEOUT).sum()),
        exceptions=int((out == EXCEPTION).sum()),
        elapsed_s=elapsed,
        throughput=n_ok / elapsed if elapsed > 0 else 0.0,
        latency_ms=summarize_ms((dne - sch)[good]),
        service_ms=summarize_ms((dne - snt)[good]),
        lag_ms=summarize_ms(snt - sch),
        statuses=dict(sorted(bad.items())),
        label=label,
    )


TABLE_HEADER = (
    "| run | load | n | ok | http err | timeout | exc | req/s | p50 ms | p95 ms | p99 ms | "
    "max ms | mean ms | svc p99 ms | lag p99 ms | gen CPU us/req |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def format_row(r: Result) -> str:
    """One markdown table row of a Result (columns of TABLE_HEADER)."""
    lat, svc, lag = r.latency_ms, r.service_ms, r.lag_ms
    run = f"{r.label} {r.mode}".strip()
    cpu_us = r.client_cpu_s / r.count * 1e6 if r.count else math.nan
    return (
        f"| {run} | {r.load} | {r.count} | {r.ok} | {r.http_errors} | {r.timeouts} | "
        f"{r.exceptions} | {r.throughput:.0f} | {lat['p50']:.2f} | {lat['p95']:.2f} | "
        f"{lat['p99']:.2f} | {lat['max']:.2f} | {lat['mean']:.2f} | {svc['p99']:.2f} | "
        f"{lag['p99']:.2f} | {cpu_us:.0f} |"
    )


def print_table(results: Sequence[Result], file=None) -> None:
    """Print the header and one row per result."""
    print(TABLE_HEADER, file=file)
    for r in results:
        print(format_row(r), file=file)


def encode_bodies(payload: Payload, n: int) -> list[bytes]:
    """The JSON bodies of payload(0..n-1), encoded once before the timed phase."""
    return [json.dumps(payload(i), separators=(",", ":")).encode() for i in range(max(n, 1))]


def facts() -> str:
    """Machine facts plus the client library version: printed at the start of a run."""
    return f"{machine()} | aiohttp {aiohttp.__version__} | numpy {np.__version__}"


# --------------------------------------------------------------------------- load runs


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while measuring, so its pauses don't land in the latencies."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _session(limit: int, timeout_s: float) -> aiohttp.ClientSession:
    """One keep-alive session with room for ``limit`` connections to the one host."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        skip_auto_headers=("User-Agent",),
    )


async def _post_once(post, url: str, body: bytes) -> tuple[int, int]:
    """One POST: (outcome code, HTTP status; 0 when no response came)."""
    status = 0
    try:
        async with post(url, data=body, headers=JSON_HEADERS) as resp:
            await resp.read()
            status = resp.status
        return (OK if 200 <= status < 300 else HTTP_ERROR), status
    except Exception as exc:
        return classify(None, exc), status


async def run_closed(
    url: str,
    payload: Payload,
    *,
    concurrency: int,
    duration_s: float | None = 10.0,
    count: int | None = None,
    timeout_s: float = 10.0,
    distinct: int = 4096,
    warmup_s: float = 0.0,
    label: str = "",
) -> Result:
    """Closed loop: ``concurrency`` workers post back to back until ``duration_s`` has passed
    (no new request starts after it) or ``count`` requests have started, whichever first."""
    if duration_s is None and count is None:
        raise ValueError("give duration_s or count")
    n_bodies = min(distinct, count) if count else distinct
    bodies = encode_bodies(payload, n_bodies)
    nb = len(bodies)
    limit = count if count is not None else sys.maxsize
    sent: list[float] = []
    done: list[float] = []
    outcomes: list[int] = []
    statuses: list[int] = []
    nxt = 0
    deadline = math.inf
    perf = time.perf_counter

    async with _session(max(concurrency, 1), timeout_s) as session:
        post = session.post

        async def worker(record: bool) -> None:
            nonlocal nxt
            while True:
                i = nxt
                t0 = perf()
                if i >= limit or t0 >= deadline:
                    return
                nxt = i + 1
                code, status = await _post_once(post, url, bodies[i % nb])
                if record:
                    done.append(perf())
                    sent.append(t0)
                    outcomes.append(code)
                    statuses.append(status)

        if warmup_s > 0:  # opens the connections and warms both ends; not recorded
            deadline = perf() + warmup_s
            await asyncio.gather(*(worker(False) for _ in range(concurrency)))
            nxt = 0
        with _gc_paused():
            cpu0 = time.process_time()
            start = perf()
            deadline = start + duration_s if duration_s is not None else math.inf
            await asyncio.gather(*(worker(True) for _ in range(concurrency)))
            cpu = time.process_time() - cpu0
    r = aggregate("closed", f"c={concurrency}", start, sent, sent, done, outcomes, statuses, label)
    r.client_cpu_s = cpu
    return r


async def run_open(
    url: str,
    payload: Payload,
    *,
    rate: float,
    duration_s: float,
    timeout_s: float = 10.0,
    max_inflight: int = 1024,
    distinct: int = 4096,
    warmup_s: float = 0.0,
    spin_s: float = 0.0,
    label: str = "",
) -> Result:
    """Open loop: start request i at start + i / rate for ``duration_s``, whatever the
    completions, then wait for the stragglers. ``max_inflight`` caps the connections; a
    request waiting for one keeps counting from its scheduled time. The event loop's timers
    fire up to ~1 ms late (see the lag column); ``spin_s`` > 0 sleeps until that much before
    each start and then yields in a loop until it is due, trading CPU for punctuality."""
    offsets = schedule(rate, duration_s)
    bodies = encode_bodies(payload, min(distinct, len(offsets)))
    nb = len(bodies)
    n = len(offsets)
    sched = np.empty(n)
    sent = np.empty(n)
    done = np.empty(n)
    outcomes = np.empty(n, dtype=np.int8)
    statuses = np.zeros(n, dtype=np.int32)
    perf = time.perf_counter

    async with _session(max_inflight, timeout_s) as session:
        post = session.post

        async def one(i: int, when: float, record: bool) -> None:
            t0 = perf()
            code, status = await _post_once(post, url, bodies[i % nb])
            if record:
                done[i] = perf()
                sent[i] = t0
                sched[i] = when
                outcomes[i] = code
                statuses[i] = status

        async def dispatch(offs: np.ndarray, record: bool) -> float:
            tasks: set[asyncio.Task] = set()
            start = perf() + 0.005
            sleep = asyncio.sleep
            for i, off in enumerate(offs.tolist()):
                when = start + off
                delay = when - perf()
                if delay > spin_s:
                    await sleep(delay - spin_s)  # timers have ~1 ms granularity
                if spin_s:
                    while perf() < when:  # yield until due: < spin_s late, at a CPU cost
                        await sleep(0)
                t = asyncio.create_task(one(i, when, record))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
            return start

        if warmup_s > 0:
            await dispatch(schedule(rate, warmup_s), False)
        with _gc_paused():
            cpu0 = time.process_time()
            start = await dispatch(offsets, True)
            cpu = time.process_time() - cpu0
    r = aggregate(
        "open", f"{rate:g}/s", start, sched, sent, done, outcomes, statuses.tolist(), label
    )
    r.client_cpu_s = cpu
    return r


# --------------------------------------------------------------------------- server process


@contextlib.contextmanager
def serve(
    cmd: list[str],
    port: int,
    ready_path: str = "/readyz",
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Iterator[int]:
    """Run a server (``cmd`` must make it listen on ``port``) in its own process group, wait
    until GET ``ready_path`` answers 200, yield its pid; on exit stop the whole group.
    ``env`` adds to os.environ. Its output goes to a temporary log, whose last lines are in the
    error if it exits or never gets ready (:mod:`recsys_assets.core.processes`)."""
    with tempfile.TemporaryDirectory(prefix="serve-") as tmp, served(
        cmd, port, env={**os.environ, **(env or {})}, log=Path(tmp) / "server.log",
        ready_path=ready_path, timeout_s=timeout_s, cwd=cwd or os.getcwd(),
    ) as server:  # fmt: skip
        yield server.pid


# --------------------------------------------------------------------------- CLI


def read_customers(path: str | os.PathLike) -> list[str]:
    """Customer ids, one per line (first CSV column; a 'customer_id' header is skipped)."""
    ids = []
    for line in Path(path).read_text().splitlines():
        first = line.split(",", 1)[0].strip().strip('"')
        if first and first.lower() not in ("customer_id", "customerid"):
            ids.append(first)
    if not ids:
        raise ValueError(f"no customer ids in {path}")
    return ids


def install_uvloop() -> str:
    """Use uvloop's event loop when it is installed (cheaper per request); returns its name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {uvloop.__version__}"


def _run_all(args: argparse.Namespace, url: str, payload: Payload) -> list[Result]:
    results = []
    for c in [int(x) for x in args.concurrency.split(",") if x.strip()]:
        r = asyncio.run(
            run_closed(
                url,
                payload,
                concurrency=c,
                duration_s=None if args.count else args.duration,
                count=args.count,
                timeout_s=args.timeout,
                warmup_s=args.warmup,
                label=args.label,
            )
        )
        print(format_row(r), flush=True)
        results.append(r)
    if args.rate > 0:
        r = asyncio.run(
            run_open(
                url,
                payload,
                rate=args.rate,
                duration_s=args.rate_duration,
                timeout_s=args.timeout,
                warmup_s=args.warmup,
                spin_s=args.spin_ms / 1000,
                label=args.label,
            )
        )
        print(format_row(r), flush=True)
        results.append(r)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Closed-loop runs at each concurrency, then one open-loop run; prints a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--url",
        default="http://127.0.0.1:{port}/recommend",
        help="endpoint; '{port}' is replaced by the port of --serve",
    )
    p.add_argument("--concurrency", default="1,8,32", help="closed-loop worker counts, e.g. 1,8")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per closed-loop run")
    p.add_argument("--count", type=int, default=None, help="requests per closed-loop run instead")
    p.add_argument("--rate", type=float, default=0.0, help="open-loop req/s (0: no open loop)")
    p.add_argument("--rate-duration", type=float, default=60.0, help="open-loop seconds")
    p.add_argument(
        "--spin-ms", type=float, default=0.0, help="open loop: busy-yield this long before a start"
    )
    p.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each run")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--customers-file", help="customer ids to rotate (default: c0..c999)")
    p.add_argument("--k", type=int, default=10, help="the 'k' field of the payload")
    p.add_argument("--serve", help="start this server command first ('--port P' is appended)")
    p.add_argument("--ready-path", default="/readyz")
    p.add_argument("--label", default="", help="first column of the table rows")
    p.add_argument("--json-out", help="also write the results as JSON here")
    args = p.parse_args(argv)

    if args.customers_file:
        ids = read_customers(args.customers_file)
    else:
        ids = [f"c{i}" for i in range(1000)]
    k = args.k

    def payload(i: int) -> dict:
        return {"customer_id": ids[i % len(ids)], "k": k}

    loop_name = install_uvloop()
    print(f"# {facts()} | {loop_name}")
    print(f"# {len(ids)} customer ids; command: {shlex.join(sys.argv)}", flush=True)
    print(TABLE_HEADER, flush=True)
    if args.serve:
        port = free_port()
        url = args.url.replace("{port}", str(port))
        cmd = [*shlex.split(args.serve), "--port", str(port)]
        venv_bin = Path(sys.executable).parent / cmd[0]
        if not shutil.which(cmd[0]) and venv_bin.exists():  # e.g. bentoml, venv not activated
            cmd[0] = str(venv_bin)
        with serve(cmd, port, ready_path=args.ready_path, cwd=ROOT):
            results = _run_all(args, url, payload)
    else:
        if "{port}" in args.url:
            p.error("--url has '{port}' but no --serve was given")
        results = _run_all(args, args.url, payload)
    print(f"# after: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"facts": facts(), "results": [r.to_dict() for r in results]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
