"""The load generator's pure helpers: percentiles, open-loop schedule, outcomes, aggregation."""

from __future__ import annotations

import math

import aiohttp
import numpy as np
import pytest

from benchmarks.loadgen import (
    EXCEPTION,
    HTTP_ERROR,
    OK,
    TABLE_HEADER,
    TIMEOUT,
    aggregate,
    classify,
    encode_bodies,
    format_row,
    free_port,
    read_customers,
    schedule,
    summarize_ms,
)


def test_summarize_ms_on_one_to_hundred_ms():
    # 1..100 ms: numpy's linear percentiles at rank (n-1)q: 50.5, 95.05, 99.01.
    s = summarize_ms([i / 1000 for i in range(1, 101)])
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["max"] == pytest.approx(100.0)
    assert s["mean"] == pytest.approx(50.5)


def test_summarize_ms_small_and_empty():
    s = summarize_ms([0.001, 0.003])  # 1 and 3 ms
    assert s["p50"] == pytest.approx(2.0)
    assert s["p99"] == pytest.approx(2.98)
    assert s["max"] == pytest.approx(3.0)
    assert all(math.isnan(v) for v in summarize_ms([]).values())


def test_schedule_is_evenly_spaced_from_zero():
    offs = schedule(200, 1.0)
    assert len(offs) == 200
    assert offs[0] == 0.0
    assert offs[1] == pytest.approx(0.005)
    assert offs[-1] == pytest.approx(0.995)
    assert np.diff(offs) == pytest.approx(np.full(199, 0.005))


def test_schedule_counts_and_rejects_bad_input():
    assert len(schedule(200, 60)) == 12_000
    assert len(schedule(3, 1.0)) == 3
    assert schedule(2, 1.25).tolist() == pytest.approx([0.0, 0.5, 1.0])  # 1.5 is past the end
    with pytest.raises(ValueError):
        schedule(0, 10)


def test_classify_statuses_and_exceptions():
    assert classify(200) == OK
    assert classify(204) == OK
    assert classify(302) == HTTP_ERROR
    assert classify(422) == HTTP_ERROR
    assert classify(503) == HTTP_ERROR
    assert classify(None) == EXCEPTION
    assert classify(None, TimeoutError()) == TIMEOUT
    assert classify(None, aiohttp.ServerTimeoutError()) == TIMEOUT
    assert classify(None, aiohttp.ClientConnectionError()) == EXCEPTION
    assert classify(None, ConnectionResetError()) == EXCEPTION


def test_aggregate_open_loop_by_hand():
    # Four requests scheduled at 0, 10, 20, 30 ms from a start at t=100 s; one 500, one timeout.
    start = 100.0
    sched = [start + x for x in (0.000, 0.010, 0.020, 0.030)]
    sent = [start + x for x in (0.001, 0.010, 0.022, 0.030)]
    done = [start + x for x in (0.003, 0.014, 0.023, 1.030)]
    outcomes = [OK, OK, HTTP_ERROR, TIMEOUT]
    r = aggregate("open", "100/s", start, sched, sent, done, outcomes, [200, 200, 500, 0])
    assert (r.count, r.ok, r.http_errors, r.timeouts, r.exceptions) == (4, 2, 1, 1, 0)
    assert r.statuses == {500: 1}
    assert r.elapsed_s == pytest.approx(1.030)
    assert r.throughput == pytest.approx(2 / 1.030)
    # Latency of the two OK ones from the schedule: 3 and 4 ms; service time: 2 and 4 ms.
    assert r.latency_ms["p50"] == pytest.approx(3.5)
    assert r.latency_ms["max"] == pytest.approx(4.0)
    assert r.service_ms["mean"] == pytest.approx(3.0)
    # Lag over all four: 1, 0, 2, 0 ms.
    assert r.lag_ms["max"] == pytest.approx(2.0)
    assert r.lag_ms["mean"] == pytest.approx(0.75)
    row = format_row(r)
    assert row.startswith("| open | 100/s | 4 | 2 | 1 | 1 | 0 | 2 | 3.50 |")
    assert row.endswith("| nan |")  # no CPU time measured by aggregate alone
    assert row.count("|") == TABLE_HEADER.splitlines()[0].count("|")


def test_aggregate_closed_loop_latency_equals_service_time():
    start = 0.0
    sent = [0.0, 0.002, 0.004]
    done = [0.002, 0.004, 0.010]
    r = aggregate("closed", "c=1", start, sent, sent, done, [OK, OK, EXCEPTION])
    assert r.ok == 2 and r.exceptions == 1
    assert r.latency_ms == r.service_ms
    assert r.latency_ms["mean"] == pytest.approx(2.0)
    assert r.lag_ms["max"] == 0.0
    assert r.throughput == pytest.approx(2 / 0.010)


def test_encode_bodies_and_customers_file(tmp_path):
    bodies = encode_bodies(lambda i: {"customer_id": f"c{i}", "k": 10}, 2)
    assert bodies == [b'{"customer_id":"c0","k":10}', b'{"customer_id":"c1","k":10}']
    path = tmp_path / "ids.csv"
    path.write_text("customer_id,n\n17850,3\n13047,1\n\n")
    assert read_customers(path) == ["17850", "13047"]


def test_free_port_is_a_port():
    assert 0 < free_port() < 65536
