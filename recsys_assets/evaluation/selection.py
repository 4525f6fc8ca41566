"""Which model to promote, chosen on the validation period and never on the test period.

Every model (the ranker and each simple model) is fitted on the purchases before the validation
period and scored there (:func:`~recsys_assets.evaluation.protocol.validation_split`); only then
is each one refitted on the whole training period and scored on the test period, whose figures
are reported after the choice and never change it. The rule (:func:`select_model`):

- the ranker is kept when it scores highest on validation, or when the best simple model's lead
  over it is within noise (the 95% paired bootstrap interval of the relative difference, over
  the validation customers both were scored on, reaches 0 or below): the ranker also uses the
  features, and a lead that chance explains is no reason to give them up;
- the best simple model is chosen when it beats the ranker beyond noise (that interval lies
  above 0), or when the ranker could not be judged on validation;
- with no validation customer at all nothing is judged: the ranker stays, and the selection says
  ``judged: False``, never that the ranker won.

The best simple model by validation NDCG is also the **baseline** the promotion gate holds the
challenger to on the test period (:mod:`recsys_assets.release.gate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from recsys_assets.core import constants as c
from recsys_assets.evaluation.metrics import NDCG
from recsys_assets.evaluation.protocol import bootstrap_ndcg, paired_ndcg_difference

__all__ = ["RANKER", "Selection", "select_model", "validation_summary"]

RANKER = "ranker"


@dataclass(frozen=True)
class Selection:
    """The choice and its grounds.

    - ``chosen``: the model to make servable;
    - ``judged``: False when no validation figure could decide (then ``chosen`` is the default);
    - ``rule``: why, in a sentence;
    - ``best_baseline``: the simple model with the highest validation NDCG (None without one);
    - ``validation``: per model ``ndcg``, ``low`` / ``high`` (5-95% bootstrap band of the mean),
      ``n_users``; a model that could not be scored has ``ndcg`` None and a ``reason``;
    - ``paired``: the best simple model against the ranker on validation (``relative``,
      ``low``, ``high``: 95% paired interval; ``n_users``), None where it was not computed.
    """

    chosen: str
    judged: bool
    rule: str
    best_baseline: str | None
    validation: dict[str, dict[str, Any]]
    paired: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validation_summary(per_user_ndcg: Mapping[str, float], *, seed: int = c.SEED) -> dict:
    """One model's validation figures from its customers' NDCG: mean, bootstrap band, count."""
    values = pd.DataFrame({NDCG: list(per_user_ndcg.values())}, dtype="float64")
    spread = bootstrap_ndcg(values, seed=seed)
    return {
        "ndcg": spread["point"],
        "low": spread["p5"],
        "high": spread["p95"],
        "n_users": spread["n_users"],
    }


def _scored(figures: Mapping[str, Any]) -> bool:
    ndcg = figures.get("ndcg")
    return isinstance(ndcg, int | float) and math.isfinite(ndcg) and figures.get("n_users", 0) > 0


def select_model(
    validation: Mapping[str, Mapping[str, float] | None],
    *,
    reasons: Mapping[str, str] | None = None,
    preferred: str = RANKER,
    seed: int = c.SEED,
) -> Selection:
    """Choose among models from each one's per-customer validation NDCG (see the module notes).

    ``validation`` maps a model name to ``{customer: NDCG}`` on the validation period, or to
    None (or an empty mapping) when the model could not be scored there; ``reasons`` says why
    for those. ``preferred`` is the ranker: the model kept unless beaten beyond noise."""
    reasons = dict(reasons or {})
    table: dict[str, dict[str, Any]] = {}
    for name, per_user in validation.items():
        if per_user:
            table[name] = validation_summary(per_user, seed=seed)
        else:
            why = reasons.get(name, "no customer was scored on the validation period")
            table[name] = {"ndcg": None, "low": None, "high": None, "n_users": 0, "reason": why}
    simple = sorted(
        (name for name in table if name != preferred and _scored(table[name])),
        key=lambda name: (-table[name]["ndcg"], name),
    )
    best = simple[0] if simple else None
    ranker = table.get(preferred, {})

    def chosen(name: str, judged: bool, rule: str, paired: dict | None = None) -> Selection:
        return Selection(name, judged, rule, best, table, paired)

    if best is None and not _scored(ranker):
        return chosen(
            preferred, False,
            "not judged: no model could be scored on the validation period "
            f"({ranker.get('reason', 'no validation figures')}); the {preferred} by default",
        )  # fmt: skip
    if best is None:
        return chosen(preferred, True, f"the {preferred} is the only model scored on validation")
    if not _scored(ranker):
        return chosen(
            best, True,
            f"the {preferred} could not be scored on validation ({ranker.get('reason')}); "
            f"{best} has the best validation NDCG ({table[best]['ndcg']:.4f})",
        )  # fmt: skip
    if table[best]["ndcg"] <= ranker["ndcg"]:
        return chosen(
            preferred, True,
            f"the {preferred} has the best validation NDCG ({ranker['ndcg']:.4f}; best simple "
            f"model {best}: {table[best]['ndcg']:.4f})",
        )  # fmt: skip
    paired = paired_ndcg_difference(validation[best] or {}, validation[preferred] or {}, seed=seed)
    lead = (
        f"{best} leads the {preferred} on validation by {paired['relative']:+.1%} over "
        f"{paired['n_users']} customers (95% paired interval {paired['low']:+.1%} to "
        f"{paired['high']:+.1%})"
    )
    if math.isfinite(paired["low"]) and paired["low"] > 0:
        return chosen(best, True, lead + ": beyond noise, the simple model is promoted", paired)
    return chosen(preferred, True, lead + f": within noise, the {preferred} is kept", paired)
