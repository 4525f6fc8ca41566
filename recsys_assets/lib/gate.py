"""The promotion gate: may a challenger replace the champion?

A challenger passes when all of these hold:

- it was evaluated: its NDCG@K on the evaluation protocol is a finite number above 0;
- it is not worse than the champion: ``ndcg >= champion_ndcg * (1 - max_ndcg_drop)`` (no
  champion yet: this rule passes);
- it is fast enough: its in-process p99 latency is within ``latency_budget_p99_ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        if self.passed:
            return "passed: " + ", ".join(f"{k}={v}" for k, v in self.figures.items())
        return "refused: " + "; ".join(self.reasons)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def quality_gate_decision(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    max_ndcg_drop: float,
    latency_budget_p99_ms: float,
) -> GateDecision:
    """Decide on a challenger from its figures (``ndcg``, ``latency.p99_ms``) and the
    champion's (``ndcg``, ``version``; None before the first promotion)."""
    reasons = []
    ndcg = _number(challenger.get("ndcg"))
    p99 = _number((challenger.get("latency") or {}).get("p99_ms"))
    figures: dict[str, Any] = {"ndcg": ndcg, "latency_p99_ms": p99}
    if not (math.isfinite(ndcg) and ndcg > 0):
        reasons.append(f"no usable evaluation: ndcg={challenger.get('ndcg')!r}")
    if champion is not None:
        champion_ndcg = _number(champion.get("ndcg"))
        floor = champion_ndcg * (1.0 - max_ndcg_drop)
        figures |= {"champion": champion.get("version"), "champion_ndcg": champion_ndcg}
        figures["ndcg_floor"] = floor
        if math.isfinite(floor) and not ndcg >= floor:
            reasons.append(
                f"ndcg {ndcg:.4f} is below the champion's {champion_ndcg:.4f} minus "
                f"{max_ndcg_drop:.0%} ({floor:.4f})"
            )
    if not (math.isfinite(p99) and p99 <= latency_budget_p99_ms):
        reasons.append(f"p99 latency {p99:.2f} ms is over the budget {latency_budget_p99_ms} ms")
    figures["latency_budget_p99_ms"] = latency_budget_p99_ms
    return GateDecision(passed=not reasons, reasons=reasons, figures=figures)
