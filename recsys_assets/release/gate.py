"""The promotion gate: may a challenger replace the champion?

A challenger passes when all of these hold:

- it was evaluated: its NDCG@K on the evaluation protocol is a finite number above 0;
- it is not worse than the champion by more than ``max_ndcg_drop`` (relative). When both
  carry per-customer NDCG (``per_user_ndcg``) on exactly the same customers, the comparison is
  paired and accounts for sampling noise: the challenger is refused when the upper end of the
  95% paired bootstrap interval of its relative difference is below ``-max_ndcg_drop`` (it is
  worse beyond doubt). Otherwise (either has none, the customers differ, or the paired figures
  are not numbers) the point rule ``ndcg >= champion_ndcg * (1 - max_ndcg_drop)``; the figures
  say which rule decided and why (``ndcg_rule``, ``ndcg_rule_why``). A champion whose NDCG is
  not a number refuses every challenger: there is nothing to hold it against. No champion yet:
  this rule passes. Why paired: on a shop of a few hundred evaluated customers
  two equally good models differ by several percent by chance, and a point rule refused about
  half of the retrained models in the closed-loop simulation, the ones that fixed the drift;
- it is not worse than the best simple model (the ``baseline``: the simple model with the best
  validation NDCG, :mod:`recsys_assets.evaluation.selection`) on the test period's customers by
  more than ``max_ndcg_drop``, by the same paired rule (the point rule where the customers
  differ). A challenger that is that simple model passes this rule by definition; no baseline
  (no simple model was scored): the rule does not apply and the figures say so
  (``baseline_rule``, ``baseline_rule_why``);
- it is fast enough: its in-process p99 latency is within ``latency_budget_p99_ms``. Where
  the environment measures on a shared machine (dev on a laptop, test on a CI runner) the
  latency rule only warns (``latency_blocks=False``): that p99 is the machine's, not the
  service's, and a busy runner doubled it. Acceptance and prod measure on production-like
  hardware and block.
"""

from __future__ import annotations

import math
import warnings
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
    """Decide on a challenger from its figures (``ndcg``, ``latency.p99_ms``, ``per_user_ndcg``,
    ``baseline``: the best simple model's ``name``, ``ndcg``, ``per_user_ndcg``; ``selection``:
    ``chosen``) and the champion's (``ndcg``, ``version``, ``per_user_ndcg``, ``basis``; None
    before the first promotion). The figures record which NDCG rule decided (``ndcg_rule``:
    ``paired``, ``point`` or ``none``), why (``ndcg_rule_why``) and the paired difference
    (``paired``: relative, low, high, n_users, n_resamples) wherever it was computed, and the
    same for the baseline (``baseline_rule``, ``baseline_rule_why``, ``baseline_paired``). With
    ``latency_blocks=False`` a latency over the budget is a warning, not a reason to refuse."""
    reasons, warnings = [], []
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
        paired, why = _paired(challenger, champion)
        if paired is not None:
            figures["paired"] = {k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in paired.items()}  # fmt: skip
        rule = "paired" if paired is not None and why is None else "point"
        if not math.isfinite(champion_ndcg):
            rule, why = "none", "the champion's ndcg is not a number: no rule can compare with it"
            reasons.append(
                f"the champion's ndcg is {champion.get('ndcg')!r}, not a number: nothing to hold "
                "the challenger against"
            )
        figures["ndcg_rule"] = rule
        figures["ndcg_rule_why"] = why or (
            f"both carry per-customer NDCG on the same {paired['n_users']} customers"
        )
        if rule == "paired":
            if paired["high"] < -max_ndcg_drop:
                reasons.append(
                    f"ndcg is {paired['relative']:+.1%} against the champion on the same "
                    f"{paired['n_users']} customers (95% interval {paired['low']:+.1%} to "
                    f"{paired['high']:+.1%}): worse than -{max_ndcg_drop:.0%} beyond doubt"
                )
        elif rule == "point" and not ndcg >= floor:
            reasons.append(
                f"ndcg {ndcg:.4f} is below the champion's {champion_ndcg:.4f} minus "
                f"{max_ndcg_drop:.0%} ({floor:.4f})"
            )
    else:
        figures |= {"ndcg_rule": "none", "ndcg_rule_why": "no champion yet"}
    reasons.extend(_baseline_rule(challenger, ndcg, figures, max_ndcg_drop=max_ndcg_drop))
    if not (math.isfinite(p99) and p99 <= latency_budget_p99_ms):
        breach = f"p99 latency {p99:.2f} ms is over the budget {latency_budget_p99_ms} ms"
        (reasons if latency_blocks else warnings).append(breach)
    figures["latency_budget_p99_ms"] = latency_budget_p99_ms
    figures["latency_blocks"] = latency_blocks
    return GateDecision(passed=not reasons, reasons=reasons, figures=figures, warnings=warnings)


def _baseline_rule(
    challenger: dict[str, Any], ndcg: float, figures: dict[str, Any], *, max_ndcg_drop: float
) -> list[str]:
    """The challenger against the best simple model on the test period (see the module notes):
    the reasons to refuse (none or one); the figures record the rule and its numbers."""
    baseline = challenger.get("baseline") or {}
    name = baseline.get("name")
    chosen = (challenger.get("selection") or {}).get("chosen")
    if not name:
        figures |= {"baseline_rule": "none", "baseline_rule_why": "no simple model was scored"}
        return []
    baseline_ndcg = _number(baseline.get("ndcg"))
    figures |= {"baseline": name, "baseline_ndcg": baseline_ndcg}
    if chosen == name:
        figures |= {"baseline_rule": "none", "baseline_rule_why": f"the challenger is {name}"}
        return []
    paired, why = _paired(challenger, baseline, other="the best simple model")
    if paired is not None:
        figures["baseline_paired"] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in paired.items()
        }
    if paired is not None and why is None:
        figures |= {
            "baseline_rule": "paired",
            "baseline_rule_why": f"{paired['n_users']} customers",
        }
        if paired["high"] < -max_ndcg_drop:
            return [
                f"ndcg is {paired['relative']:+.1%} against the best simple model {name} on the "
                f"same {paired['n_users']} customers (95% interval {paired['low']:+.1%} to "
                f"{paired['high']:+.1%}): worse than -{max_ndcg_drop:.0%} beyond doubt"
            ]
        return []
    floor = baseline_ndcg * (1.0 - max_ndcg_drop)
    figures |= {"baseline_rule": "point", "baseline_rule_why": why, "baseline_floor": floor}
    if math.isfinite(floor) and not ndcg >= floor:
        return [
            f"ndcg {ndcg:.4f} is below the best simple model {name}'s {baseline_ndcg:.4f} minus "
            f"{max_ndcg_drop:.0%} ({floor:.4f})"
        ]
    return []


def _paired(
    challenger: dict[str, Any], champion: dict[str, Any], *, other: str = "the champion"
) -> tuple[dict[str, Any] | None, str | None]:
    """The paired difference of the two models' per-customer NDCG and None, when both carry it
    on exactly the same customers and its figures are numbers; else why the point rule decides
    instead (with the paired figures where they were computed but are not numbers)."""
    ours = challenger.get("per_user_ndcg") or {}
    theirs = champion.get("per_user_ndcg") or {}
    if not ours:
        return None, "the challenger has no per-customer NDCG"
    if not theirs:
        basis = champion.get("basis")
        return None, f"{other} has no per-customer NDCG" + (f" ({basis})" if basis else "")
    if set(ours) != set(theirs):
        common = len(set(ours) & set(theirs))
        return None, (
            f"per-customer NDCG on different customers (challenger {len(ours)}, "
            f"{other.removeprefix('the ')} {len(theirs)}, {common} in common)"
        )
    with warnings.catch_warnings():  # all-NaN resamples: said below, not as a RuntimeWarning
        warnings.simplefilter("ignore", RuntimeWarning)
        paired = paired_ndcg_difference(ours, theirs)
    if not all(math.isfinite(paired[k]) for k in ("relative", "low", "high")):
        return paired, (
            f"the paired difference on {paired['n_users']} customers is not a number "
            f"(relative {paired['relative']}: {other} scores 0 there, or a figure is NaN)"
        )
    return paired, None
