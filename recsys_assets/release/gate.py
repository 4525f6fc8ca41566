"""The promotion gate: may a challenger replace the champion?

A challenger passes when all of these hold:

- it was evaluated: its NDCG@K on the evaluation protocol is a finite number above 0;
- it is not worse than the champion by more than ``max_ndcg_drop`` (relative). When both
  carry per-customer NDCG on the same split (``per_user_ndcg``), the comparison is paired and
  accounts for sampling noise: the challenger is refused when the upper end of the 95% paired
  bootstrap interval of its relative difference is below ``-max_ndcg_drop`` (it is worse
  beyond doubt). Without them, the point rule ``ndcg >= champion_ndcg * (1 - max_ndcg_drop)``.
  No champion yet: this rule passes. Why paired: on a shop of a few hundred evaluated customers
  two equally good models differ by several percent by chance, and a point rule refused about
  half of the retrained models in the closed-loop simulation, the ones that fixed the drift;
- it is fast enough: its in-process p99 latency is within ``latency_budget_p99_ms``. Where
  the environment measures on a shared machine (dev on a laptop, test on a CI runner) the
  latency rule only warns (``latency_blocks=False``): that p99 is the machine's, not the
  service's, and a busy runner doubled it. Acceptance and prod measure on production-like
  hardware and block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from recsys_assets.evaluation.protocol import paired_ndcg_difference


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    figures: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # advisory breaches that did not refuse

    @property
    def summary(self) -> str:
        if self.passed:
            passed = "passed: " + ", ".join(f"{k}={v}" for k, v in self.figures.items())
            return passed + "".join(f"; warning: {w}" for w in self.warnings)
        return "refused: " + "; ".join(self.reasons + self.warnings)


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
    latency_blocks: bool = True,
) -> GateDecision:
    """Decide on a challenger from its figures (``ndcg``, ``latency.p99_ms``) and the
    champion's (``ndcg``, ``version``; None before the first promotion). With
    ``latency_blocks=False`` a latency over the budget is a warning, not a reason to refuse."""
    reasons, warnings = [], []
    ndcg = _number(challenger.get("ndcg"))
    p99 = _number((challenger.get("latency") or {}).get("p99_ms"))
    figures: dict[str, Any] = {"ndcg": ndcg, "latency_p99_ms": p99}
    if not (math.isfinite(ndcg) and ndcg > 0):
        reasons.append(f"no usable evaluation: ndcg={challenger.get('ndcg')!r}")
    paired = None
    if champion is not None and challenger.get("per_user_ndcg") and champion.get("per_user_ndcg"):
        paired = paired_ndcg_difference(challenger["per_user_ndcg"], champion["per_user_ndcg"])
    if champion is not None:
        champion_ndcg = _number(champion.get("ndcg"))
        floor = champion_ndcg * (1.0 - max_ndcg_drop)
        figures |= {"champion": champion.get("version"), "champion_ndcg": champion_ndcg}
        figures["ndcg_floor"] = floor
        if paired is not None and paired["n_users"] > 0:
            figures["paired"] = {k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in paired.items()}  # fmt: skip
            if paired["high"] < -max_ndcg_drop:
                reasons.append(
                    f"ndcg is {paired['relative']:+.1%} against the champion on the same "
                    f"{paired['n_users']} customers (95% interval {paired['low']:+.1%} to "
                    f"{paired['high']:+.1%}): worse than -{max_ndcg_drop:.0%} beyond doubt"
                )
        elif math.isfinite(floor) and not ndcg >= floor:
            reasons.append(
                f"ndcg {ndcg:.4f} is below the champion's {champion_ndcg:.4f} minus "
                f"{max_ndcg_drop:.0%} ({floor:.4f})"
            )
    if not (math.isfinite(p99) and p99 <= latency_budget_p99_ms):
        breach = f"p99 latency {p99:.2f} ms is over the budget {latency_budget_p99_ms} ms"
        (reasons if latency_blocks else warnings).append(breach)
    figures["latency_budget_p99_ms"] = latency_budget_p99_ms
    figures["latency_blocks"] = latency_blocks
    return GateDecision(passed=not reasons, reasons=reasons, figures=figures, warnings=warnings)
