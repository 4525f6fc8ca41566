"""What the benchmark scripts share: the project on the path, the data, machine facts, memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "data" / "sources" / "online_retail.yaml"  # the full UCI Online Retail source


def machine() -> str:
    """Host, platform, CPU model and count, load average and Python: the context of a figure."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.node()} | {platform.platform()} | {cpu} | {os.cpu_count()} CPUs | "
        f"load average {load} | Python {platform.python_version()}"
    )


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (it only grows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_uci():
    """The full UCI dataset read and validated as the pipeline does (a ValidationResult)."""
    from recsys_assets.ingestion.sources import load_events, load_source_spec
    from recsys_assets.ingestion.validation import split_valid_and_quarantined

    spec = load_source_spec(CONFIG)
    return split_valid_and_quarantined(load_events(spec), spec)
