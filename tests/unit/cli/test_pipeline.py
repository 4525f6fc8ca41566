"""The demo's per-partition table: counts stay apart however large they grow."""

from __future__ import annotations

from recsys_assets.cli.pipeline import partition_table


def _row(partition, raw, validated, quarantined, ok=True, error=None):
    return {
        "partition": partition,
        "raw": raw,
        "validated": validated,
        "quarantined": quarantined,
        "seconds": 1.25,
        "ok": ok,
        "error": error,
    }


def test_counts_up_to_999_999_999_stay_apart():
    rows = [
        _row("2011-01-01", 2_709_545, 1_955_750, 753_795),
        _row("2011-02-01", 997_290_454, 997_290_453, 1),
    ]
    header, first, second, total = partition_table(rows)
    assert header.split() == ["partition", "raw", "valid", "quarant.", "secs"]
    assert first.split() == ["2011-01-01", "2,709,545", "1,955,750", "753,795", "1.25"]
    assert second.split() == ["2011-02-01", "997,290,454", "997,290,453", "1", "1.25"]
    assert total.split() == ["total", "999,999,999", "999,246,203", "753,796"]
    assert "997,290,454  997,290,453" in second and "999,999,999  999,246,203" in total
    # every count ends in the same column as its header
    for name in ("raw", "valid", "quarant."):
        end = header.index(name) + len(name)
        assert first[end - 1] != " " and (end == len(first) or first[end] == " ")


def test_failed_partition_shows_its_error():
    [_, line, total] = partition_table([_row("2011-03-01", 0, 0, 0, ok=False, error="boom")])
    assert line.endswith("  FAILED: boom")
    assert total.split() == ["total", "0", "0", "0"]
