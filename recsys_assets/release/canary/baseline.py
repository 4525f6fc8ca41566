"""The error counters' baseline of a canary experiment, so that each experiment is judged on its
own errors and not on the service's lifetime counts.

The service's ``recsys_errors_total`` counters run from the moment it started: they hold an
earlier challenger's failures and the champion's from before the canary. The canary analysis
therefore keeps, per experiment, what the counters said when it first read them for that
experiment (the *baseline*), and judges the errors counted since then (:func:`error_deltas`).

The baseline is one small JSON document beside the canary state file (``canary.json`` ->
``canary.baseline.json``, :func:`baseline_path`), written atomically. It names its experiment
(challenger tag, salt and start, :class:`Experiment`): an analysis of another experiment
replaces it. A file beside the state rather than an event in the loop log: it is state the
analysis reads on every run (one small file, not a scan of the whole log), it belongs to the
canary in force as the state file does, and the loop log stays a record of what was decided.

The counters are kept per service URL (``RECSYS_SERVICE_URL`` may list every replica): a
counter below its baseline is a replica that restarted, and a URL the baseline does not know is
a replica added since; both count from 0, so their errors are the experiment's.

No Dagster, no BentoML, no network: the analysis reads the counters and passes them in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_assets.core.files import write_json_atomically
from recsys_assets.release.canary.routing import VARIANTS, CanaryConfig, CanaryState

SUFFIX = ".baseline.json"

Counters = Mapping[str, Mapping[str, int]]  # service URL -> variant -> failed requests


@dataclass(frozen=True)
class Experiment:
    """Which experiment a baseline belongs to: the challenger's tag, its salt and its start
    (the canary state's ``started_at``; empty when the state does not record one)."""

    challenger_tag: str
    salt: str
    started_at: str = ""

    @classmethod
    def of(cls, config: CanaryConfig, state: CanaryState | None) -> Experiment:
        """The experiment in force: the challenger and salt of ``config``, the start of
        ``state`` when it is about the same challenger."""
        if config.challenger_tag is None:
            raise ValueError("no challenger: there is no experiment")
        started = state.started_at if state is not None else ""
        if state is not None and state.challenger_tag != config.challenger_tag:
            started = ""
        return cls(config.challenger_tag, config.salt, started)


@dataclass(frozen=True)
class ErrorBaseline:
    """The counters (service URL -> variant -> failed requests) of ``experiment`` as they were
    at ``recorded_at``."""

    experiment: Experiment
    recorded_at: str
    counters: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "challenger_tag": self.experiment.challenger_tag,
            "salt": self.experiment.salt,
            "started_at": self.experiment.started_at,
            "recorded_at": self.recorded_at,
            "counters": {url: dict(counts) for url, counts in self.counters.items()},
        }


def baseline_path(state_path: str | os.PathLike[str]) -> Path:
    """The baseline file beside the canary state file: ``canary.json`` ->
    ``canary.baseline.json``."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.stem + SUFFIX)


def _counts(raw: Any, path: Path) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise ValueError(f"error baseline {path}: counters must be an object")
    counters: dict[str, dict[str, int]] = {}
    for url, counts in raw.items():
        if not isinstance(counts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
        ):
            raise ValueError(f"error baseline {path}: counts of {url!r} must be integers >= 0")
        counters[str(url)] = {str(k): int(v) for k, v in counts.items()}
    return counters


def read_baseline(path: str | os.PathLike[str]) -> ErrorBaseline | None:
    """The baseline in ``path``; None when there is none. A file that is not a baseline (not
    JSON, a field missing or of the wrong type) raises ValueError naming the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"error baseline {path}: not valid JSON ({error})") from None
    names = ("challenger_tag", "salt", "started_at", "recorded_at")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(n), str) for n in names):
        raise ValueError(f"error baseline {path}: needs the strings {list(names)}")
    experiment = Experiment(raw["challenger_tag"], raw["salt"], raw["started_at"])
    return ErrorBaseline(experiment, raw["recorded_at"], _counts(raw.get("counters"), path))


def write_baseline(path: str | os.PathLike[str], baseline: ErrorBaseline) -> None:
    """Write ``baseline`` to ``path`` atomically (a temporary file in the same folder, then
    renamed over the old one)."""
    write_json_atomically(path, baseline.as_json())


def error_deltas(counters: Counters, baseline: Counters) -> dict[str, int]:
    """Failed requests per variant (both always present) since ``baseline``: per service URL
    the counters minus the baseline's, summed over the URLs. A URL whose counter fell below
    its baseline (the replica restarted) or that the baseline does not have (a replica added
    since) counts from 0: its whole count is the experiment's."""
    total = dict.fromkeys(VARIANTS, 0)
    for url, counts in counters.items():
        before = baseline.get(url)
        restarted = before is None or any(
            int(counts.get(v, 0)) < int(before.get(v, 0)) for v in VARIANTS
        )
        for variant in VARIANTS:
            now = int(counts.get(variant, 0))
            total[variant] += now if restarted else now - int(before.get(variant, 0))
    return total


def experiment_errors(
    path: str | os.PathLike[str],
    experiment: Experiment,
    counters: Counters,
    *,
    now: str,
) -> tuple[dict[str, int], ErrorBaseline, str | None]:
    """The experiment's failed requests per variant since its baseline in ``path``, the
    baseline, and a note (None when the baseline was already there). Without a baseline of
    this experiment (none yet, another experiment's, or a file that does not read) the
    counters become its baseline, recorded ``now`` and written to ``path``: its errors are 0
    and it is judged from ``now`` on."""
    try:
        existing = read_baseline(path)
        problem = None
    except ValueError as error:  # replaced: a canary must not stop rolling back over it
        existing, problem = None, str(error)
    if existing is not None and existing.experiment == experiment:
        return error_deltas(counters, existing.counters), existing, None
    counts = {url: {v: int(c.get(v, 0)) for v in VARIANTS} for url, c in counters.items()}
    baseline = ErrorBaseline(experiment, now, counts)
    write_baseline(path, baseline)
    note = f"error counters' baseline recorded at {now}: errors are counted from then on"
    if problem is not None:
        note += f" (the previous file was replaced: {problem})"
    return dict.fromkeys(VARIANTS, 0), baseline, note
