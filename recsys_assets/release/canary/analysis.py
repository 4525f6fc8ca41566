"""The canary analysis: compare the champion and the challenger, then wait, roll back, widen or
promote.

Three steps, all pure (pandas, numpy, scipy; no Dagster, no BentoML), and a parser:

- :func:`experiment_records`: the served and feedback records of the experiment in force only
  (from its start, the challenger's lists of its own model version): an earlier challenger's
  lists, or the champion's from before the canary, are another experiment's.
- :func:`variant_figures`: per variant (``champion``, ``challenger``) what the service's logs
  say about it: served lists, the error and fallback rates, click-through, conversion, orders,
  AOV and, when latency samples are given, p50 and p99. Failed requests never reach the served
  log, so error counts are passed in (from the service's Prometheus metrics), as are latency
  samples (:func:`served_latency` takes them from the served log's ``latency_ms``).
- :func:`canary_decision`: the figures against a :class:`CanaryPolicy`'s guardrails, as a
  :class:`CanaryDecision` with an action, the next challenger share and plain-English reasons.
  The policy is an environment setting (:mod:`recsys_assets.config.canary`, the ``canary:``
  block of ``config/environments/<env>.yaml``); without one the defaults judge.
- :func:`errors_from_metrics`: the per-variant error counts of the service's ``/metrics`` text
  (``recsys_errors_total{endpoint="recommend", variant=...}``), for ``variant_figures``.

The rules, in order:

1. **wait** while either variant has fewer than ``min_requests`` attempts (served lists plus
   errors: a challenger that fails every request still gets judged); nothing is judged yet.
2. **rollback** (next share 0) when any guardrail is breached. A threshold value itself is
   within limits: only a value strictly beyond it breaches (``>`` for the increases and the
   p99 ratio, ``<`` for the conversion ratio).

   - error rate: challenger minus champion ``> max_error_rate_increase`` (absolute); not
     judged when the error counts are unknown (``errors_not_judged``: the metrics could not be
     read);
   - p99 latency: challenger p99 / champion p99 ``> max_p99_ratio``, judged when both variants
     have at least ``min_requests`` latency samples;
   - fallback rate: challenger minus champion ``> max_fallback_rate_increase`` (absolute);
   - conversion: challenger / champion ``< min_conversion_ratio`` **and** a one-sided
     two-proportion z-test says the challenger converts worse (p ``< alpha``), so that noise on
     a small canary never rolls it back.
3. **widen** to the next of ``steps`` above the current share when every guardrail is clean (or
   could not be judged: no latency samples, no champion conversion), or **promote** (share
   1.0: the challenger takes every customer and becomes the next champion) when the next step
   would give it every customer anyway, or the current share is already the last step. Widening
   to 1.0 is never a step of its own: at 1.0 there is no champion left to compare with. A
   promotion needs the policy's ``promote_needs`` guardrails (conversion) judged: until they
   can be, the canary **waits** at its last step. While the error counts cannot be read
   (``hold``: the service's ``/metrics`` did not answer), it **waits** instead of widening or
   promoting, with that reason: a breach of another guardrail still rolls it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys_assets.config.canary import GUARDRAILS, CanaryPolicy
from recsys_assets.release.canary.routing import VARIANT_CHALLENGER, VARIANT_CHAMPION, VARIANTS

WAIT = "wait"
ROLLBACK = "rollback"
WIDEN = "widen"
PROMOTE = "promote"
ACTIONS: tuple[str, ...] = (WAIT, ROLLBACK, WIDEN, PROMOTE)

# Guardrail statuses in CanaryDecision.guardrails.
BREACHED = "breached"
CLEAN = "clean"
NOT_JUDGED = "not judged"

_PURCHASE = "purchase"
ERRORS_METRIC = "recsys_errors_total"  # the service's failed requests by endpoint and variant


# --- Figures ---------------------------------------------------------------------------------


def _is(series: pd.Series, value: str) -> np.ndarray:
    """Boolean mask of ``series == value`` with missing values False."""
    return series.astype("string").eq(value).fillna(False).to_numpy(dtype=bool)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _percentile_ms(samples: Sequence[float] | None, q: float) -> float | None:
    values = np.asarray(samples if samples is not None else [], dtype=float)
    values = values[np.isfinite(values)]
    return float(np.percentile(values, q) * 1000.0) if values.size else None


def experiment_start(served: pd.DataFrame, challenger_version: str) -> pd.Timestamp | None:
    """The first list the challenger (model ``challenger_version``) served, None before it
    served any: the experiment's start when the canary state does not record one."""
    mine = _is(served["variant"], VARIANT_CHALLENGER) & _is(served["model_version"],
                                                           challenger_version)  # fmt: skip
    if not mine.any():
        return None
    return pd.Timestamp(_utc(served["ts"])[mine].min())


def _utc(values: pd.Series) -> pd.Series:
    if not len(values):
        return values.astype("datetime64[ns, UTC]")
    return pd.to_datetime(values, utc=True, format="ISO8601")


def experiment_records(
    served: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    challenger_version: str,
    since: str | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The served and feedback records of one experiment: the served lists from ``since`` on
    (its start; None: from the first list the challenger served, :func:`experiment_start`, and
    none before it served any), of which the challenger's only when model
    ``challenger_version`` served them, and the feedback events quoting those lists' request
    ids. Lists of an earlier experiment (another challenger under the same variant name, the
    champion before the canary began) and their feedback are left out, so that they never
    count towards ``min_requests`` nor a guardrail."""
    start = experiment_start(served, challenger_version) if since is None else since
    if start is None:
        return served.iloc[0:0], feedback.iloc[0:0]
    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    times = _utc(served["ts"])
    other_challenger = _is(served["variant"], VARIANT_CHALLENGER) & ~_is(
        served["model_version"], challenger_version
    )
    kept = served.loc[(times >= start).to_numpy(dtype=bool) & ~other_challenger]
    ids = set(kept["request_id"].astype(str))
    return kept, feedback.loc[feedback["request_id"].astype(str).isin(ids).to_numpy()]


def served_latency(served: pd.DataFrame) -> dict[str, list[float]]:
    """Per variant the latency samples (seconds, as :func:`variant_figures` takes them) from a
    served frame's ``latency_ms``: the finite values of that variant's lists; a variant
    without any is left out, and so is everything when the frame has no ``latency_ms``."""
    if "latency_ms" not in served.columns:
        return {}
    latency_ms = pd.to_numeric(served["latency_ms"], errors="coerce").to_numpy(dtype=float)
    result: dict[str, list[float]] = {}
    for variant in VARIANTS:
        values = latency_ms[_is(served["variant"], variant)]
        values = values[np.isfinite(values)]
        if values.size:
            result[variant] = (values / 1000.0).tolist()
    return result


def variant_figures(
    served: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    latency: Mapping[str, Sequence[float]] | None = None,
    errors: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per variant (``champion``, ``challenger``; both always present) the canary's figures.

    ``served`` is a served-log frame (``request_id``, ``variant``, ``fallback_reason`` are
    used), ``feedback`` a feedback frame (``request_id``, ``feedback_type``, ``order_id``,
    ``order_value`` and, when present, ``variant``). ``latency``: request latencies in seconds
    per variant; ``errors``: failed requests per variant (default 0).

    Keys per variant:

    - ``requests``: served lists; ``errors``; ``error_rate`` = errors / (requests + errors);
    - ``fallbacks`` (lists with a ``fallback_reason``) and ``fallback_rate`` = fallbacks /
      requests;
    - ``impressions``, ``clicks`` and ``click_through`` = clicks / impressions, by the feedback
      event's ``variant``; an event without one takes its request's variant from the served log;
    - ``converted_lists``: served lists with at least one purchase quoting their request id,
      ``conversion`` = converted_lists / requests;
    - ``orders`` (distinct order ids of those purchases; a purchase without one counts as an
      order of its own), ``revenue`` (sum of the orders' ``order_value``) and ``aov`` (mean
      ``order_value`` of the orders that carry one);
    - ``latency_samples``, ``p50_ms`` and ``p99_ms`` (None without samples).

    A rate whose denominator is 0 is None.
    """
    errors = dict(errors or {})
    latency = dict(latency or {})
    first = served.drop_duplicates("request_id")
    served_variant = pd.Series(
        first["variant"].astype(object).to_numpy(), index=first["request_id"].astype(str)
    )
    feedback_ids = feedback["request_id"].astype(str)
    if "variant" in feedback.columns:
        event_variant = feedback["variant"].astype(object)
        event_variant = event_variant.where(event_variant.notna(), feedback_ids.map(served_variant))
    else:
        event_variant = feedback_ids.map(served_variant)
    kinds = feedback["feedback_type"]
    purchases = feedback.loc[_is(kinds, _PURCHASE)]

    figures: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        lists = served.loc[_is(served["variant"], variant)]
        requests = len(lists)
        failed = int(errors.get(variant, 0))
        if failed < 0:
            raise ValueError(f"errors must not be negative, got {failed} for {variant!r}")
        fallbacks = int(lists["fallback_reason"].notna().sum())
        mine = _is(event_variant, variant)
        impressions = int((mine & _is(kinds, "impression")).sum())
        clicks = int((mine & _is(kinds, "click")).sum())
        listed = purchases["request_id"].astype(str).isin(set(lists["request_id"].astype(str)))
        bought = purchases.loc[listed.to_numpy()]
        order_key = (
            bought["order_id"]
            .astype(object)
            .where(
                bought["order_id"].notna(),
                pd.Series("(no order id) row " + bought.index.astype(str), bought.index),
            )
        )
        values = bought["order_value"].astype(float).groupby(order_key.to_numpy()).first()
        valued = values.dropna()
        samples = latency.get(variant)
        figures[variant] = {
            "requests": requests,
            "errors": failed,
            "error_rate": _ratio(failed, requests + failed),
            "fallbacks": fallbacks,
            "fallback_rate": _ratio(fallbacks, requests),
            "impressions": impressions,
            "clicks": clicks,
            "click_through": _ratio(clicks, impressions),
            "converted_lists": int(bought["request_id"].nunique()),
            "conversion": _ratio(bought["request_id"].nunique(), requests),
            "orders": int(order_key.nunique()),
            "revenue": float(valued.sum()),
            "aov": float(valued.mean()) if len(valued) else None,
            "latency_samples": 0 if samples is None else len(samples),
            "p50_ms": _percentile_ms(samples, 50),
            "p99_ms": _percentile_ms(samples, 99),
        }
    return figures


def errors_from_metrics(text: str, *, endpoint: str = "recommend") -> dict[str, int]:
    """Failed requests per variant (both always present, 0 when none were counted) in a
    Prometheus text exposition (the service's ``/metrics``): ``recsys_errors_total`` samples
    of ``endpoint`` summed over their other labels. Raises ValueError for text that does not
    parse, or error samples without a ``variant`` label (a service from before it had one)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = dict.fromkeys(VARIANTS, 0.0)
    try:
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    except Exception as error:  # the parser raises ValueError, and others on garbage
        raise ValueError(f"metrics text does not parse: {error}") from None
    for sample in samples:
        if sample.name != ERRORS_METRIC or sample.labels.get("endpoint") != endpoint:
            continue
        variant = sample.labels.get("variant")
        if variant is None:
            raise ValueError(f"{ERRORS_METRIC} has no variant label: errors cannot be split")
        if variant in counts and math.isfinite(sample.value):
            counts[variant] += sample.value
    return {variant: round(value) for variant, value in counts.items()}


# --- The decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with the canary: ``action`` (one of :data:`ACTIONS`), the challenger's
    ``next_share`` (0 after a rollback, the current share while waiting, 1.0 on promotion),
    ``reasons`` (plain English: each breached guardrail with its numbers, or why it waits or
    widens), ``figures`` (:func:`variant_figures`) and ``guardrails`` (per guardrail its status
    :data:`BREACHED` / :data:`CLEAN` / :data:`NOT_JUDGED`, the values and the limit)."""

    action: str
    next_share: float
    reasons: list[str]
    figures: dict[str, dict[str, Any]]
    guardrails: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_event(self) -> dict[str, Any]:
        """The fields of a ``canary_decision`` loop event (JSON-serialisable)."""
        return {
            "action": self.action,
            "next_share": self.next_share,
            "reasons": list(self.reasons),
            "figures": self.figures,
            "guardrails": self.guardrails,
        }


def conversion_z_test(
    converted_champion: int, lists_champion: int, converted_challenger: int, lists_challenger: int
) -> tuple[float | None, float | None]:
    """One-sided pooled two-proportion z-test that the challenger converts worse than the
    champion: ``(z, p)`` with z = (p_challenger - p_champion) / pooled SE and p = Phi(z);
    ``(None, None)`` without lists, ``(0.0, 0.5)`` when the pooled rate is 0 or 1 (no spread,
    no evidence either way)."""
    if lists_champion <= 0 or lists_challenger <= 0:
        return None, None
    p_champion = converted_champion / lists_champion
    p_challenger = converted_challenger / lists_challenger
    pooled = (converted_champion + converted_challenger) / (lists_champion + lists_challenger)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / lists_champion + 1.0 / lists_challenger))
    if se == 0.0:
        return 0.0, 0.5
    z = (p_challenger - p_champion) / se
    return float(z), float(stats.norm.cdf(z))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _points(value: float) -> str:
    return f"{value * 100:+.2f} points"


def _guardrails(
    figures: Mapping[str, Mapping[str, Any]],
    policy: CanaryPolicy,
    errors_not_judged: str | None = None,
) -> dict:
    """Each guardrail's status, numbers and one-line description."""
    champ, chall = figures[VARIANT_CHAMPION], figures[VARIANT_CHALLENGER]
    result: dict[str, dict[str, Any]] = {}

    # error rate: defined whenever the variant has attempts (min_requests guarantees it)
    increase = (chall["error_rate"] or 0.0) - (champ["error_rate"] or 0.0)
    breached = increase > policy.max_error_rate_increase
    result["error_rate"] = {
        "status": BREACHED if breached else CLEAN,
        "champion": champ["error_rate"],
        "challenger": chall["error_rate"],
        "increase": increase,
        "limit": policy.max_error_rate_increase,
        "text": f"error rate: challenger {_pct(chall['error_rate'])} "
        f"({chall['errors']} of {chall['requests'] + chall['errors']} requests) vs champion "
        f"{_pct(champ['error_rate'])} ({champ['errors']} of "
        f"{champ['requests'] + champ['errors']}): {_points(increase)}, limit "
        f"{_points(policy.max_error_rate_increase)}",
    }
    if errors_not_judged is not None:  # the counts are unknown, not zero
        result["error_rate"] = {
            "status": NOT_JUDGED,
            "champion": None,
            "challenger": None,
            "increase": None,
            "limit": policy.max_error_rate_increase,
            "text": f"error rate not judged: {errors_not_judged}",
        }

    # p99 latency: needs min_requests samples per variant and a champion p99 above 0
    samples = min(champ["latency_samples"], chall["latency_samples"])
    p99_champ, p99_chall = champ["p99_ms"], chall["p99_ms"]
    if samples < policy.min_requests or not p99_champ or p99_chall is None:
        result["p99_latency"] = {
            "status": NOT_JUDGED,
            "champion": p99_champ,
            "challenger": p99_chall,
            "ratio": None,
            "limit": policy.max_p99_ratio,
            "text": f"p99 latency not judged: {champ['latency_samples']} champion and "
            f"{chall['latency_samples']} challenger latency samples "
            f"(at least {policy.min_requests} each needed)",
        }
    else:
        ratio = p99_chall / p99_champ
        slower = p99_chall - p99_champ > policy.min_p99_increase_ms
        result["p99_latency"] = {
            "status": BREACHED if ratio > policy.max_p99_ratio and slower else CLEAN,
            "champion": p99_champ,
            "challenger": p99_chall,
            "ratio": ratio,
            "limit": policy.max_p99_ratio,
            "text": f"p99 latency: challenger {p99_chall:.1f} ms vs champion {p99_champ:.1f} ms: "
            f"{ratio:.2f}x, limit {policy.max_p99_ratio:.2f}x (and "
            f"+{policy.min_p99_increase_ms:g} ms)",
        }

    # fallback rate
    increase = (chall["fallback_rate"] or 0.0) - (champ["fallback_rate"] or 0.0)
    result["fallback_rate"] = {
        "status": BREACHED if increase > policy.max_fallback_rate_increase else CLEAN,
        "champion": champ["fallback_rate"],
        "challenger": chall["fallback_rate"],
        "increase": increase,
        "limit": policy.max_fallback_rate_increase,
        "text": f"fallback rate: challenger {_pct(chall['fallback_rate'])} "
        f"({chall['fallbacks']} of {chall['requests']} lists) vs champion "
        f"{_pct(champ['fallback_rate'])} ({champ['fallbacks']} of {champ['requests']}): "
        f"{_points(increase)}, limit {_points(policy.max_fallback_rate_increase)}",
    }

    # click-through and conversion: a ratio below the limit and significantly worse
    result["click_through"] = _proportion_guardrail(
        "click-through", (champ["clicks"], champ["impressions"]),
        (chall["clicks"], chall["impressions"]), policy.min_click_through_ratio, policy.alpha,
        unit="impressions", missing="the champion has no clicked impressions yet",
    )  # fmt: skip
    result["conversion"] = _proportion_guardrail(
        "conversion", (champ["converted_lists"], champ["requests"]),
        (chall["converted_lists"], chall["requests"]), policy.min_conversion_ratio, policy.alpha,
        unit="lists", missing="the champion has no converted lists yet",
    )  # fmt: skip
    return result


def _proportion_guardrail(
    name: str,
    champion: tuple[int, int],
    challenger: tuple[int, int],
    limit: float,
    alpha: float,
    *,
    unit: str,
    missing: str,
) -> dict[str, Any]:
    """A rate guardrail (successes of trials per variant): breached when the challenger's rate
    over the champion's is below ``limit`` **and** the one-sided z-test says it is worse at
    ``alpha``; not judged without a champion rate, or with more successes than trials (clicks
    sent without their impressions)."""
    (hits_champ, trials_champ), (hits_chall, trials_chall) = champion, challenger
    rate_champ = hits_champ / trials_champ if trials_champ else None
    rate_chall = hits_chall / trials_chall if trials_chall else None
    consistent = hits_champ <= trials_champ and hits_chall <= trials_chall
    z, p = (
        conversion_z_test(hits_champ, trials_champ, hits_chall, trials_chall)
        if consistent
        else (None, None)
    )
    figures = {"champion": rate_champ, "challenger": rate_chall, "limit": limit}
    if not rate_champ or rate_chall is None or p is None or not consistent:
        why = missing if consistent else f"more {name} events than {unit}"
        return {"status": NOT_JUDGED, **figures, "ratio": None, "z": z, "p_value": p,
                "text": f"{name} not judged: {why}"}  # fmt: skip
    ratio = rate_chall / rate_champ
    significant = p < alpha
    verdict = "significantly worse" if significant else "not significantly worse"
    return {
        "status": BREACHED if ratio < limit and significant else CLEAN,
        **figures,
        "ratio": ratio,
        "z": z,
        "p_value": p,
        "text": f"{name}: challenger {_pct(rate_chall)} ({hits_chall} of {trials_chall} {unit}) "
        f"vs champion {_pct(rate_champ)} ({hits_champ} of {trials_champ}): ratio {ratio:.3f}, "
        f"limit {limit:.3f}; {verdict} (one-sided z = {z:.2f}, p = {p:.3g}, alpha {alpha:g})",
    }


def next_step(current_share: float, steps: Sequence[float]) -> float | None:
    """The first step strictly above ``current_share``; None when it is at or past the last."""
    for step in steps:
        if step > current_share + 1e-9:
            return float(step)
    return None


def canary_decision(
    figures: Mapping[str, Mapping[str, Any]],
    policy: CanaryPolicy | None = None,
    *,
    current_share: float,
    errors_not_judged: str | None = None,
    hold: str | None = None,
) -> CanaryDecision:
    """Wait, roll back, widen or promote (see the module notes for the rules).

    ``figures`` are :func:`variant_figures`'; ``current_share`` the challenger's share of
    customers now, in [0, 1]; ``errors_not_judged``: why the error counts are unknown (the
    error-rate guardrail is then not judged, with that reason), None when they are known;
    ``hold``: why the canary may not move on now (the error counts could not be read): it
    waits with that reason where it would widen or promote (a breach still rolls back)."""
    policy = policy or CanaryPolicy()
    if not (math.isfinite(current_share) and 0.0 <= current_share <= 1.0):
        raise ValueError(f"current_share must be in [0, 1], got {current_share!r}")
    missing = [v for v in VARIANTS if v not in figures]
    if missing:
        raise ValueError(f"figures lack variant(s) {missing}")
    plain = {v: dict(figures[v]) for v in VARIANTS}
    attempts = {v: plain[v]["requests"] + plain[v]["errors"] for v in VARIANTS}
    short = [v for v in VARIANTS if attempts[v] < policy.min_requests]
    if short:
        reason = (
            f"waiting for traffic: challenger {attempts[VARIANT_CHALLENGER]} and champion "
            f"{attempts[VARIANT_CHAMPION]} requests, at least {policy.min_requests} each "
            "before a decision"
        )
        return CanaryDecision(WAIT, float(current_share), [reason], plain)

    guardrails = _guardrails(plain, policy, errors_not_judged)
    breached = [g for g in GUARDRAILS if guardrails[g]["status"] == BREACHED]
    if breached:
        reasons = [guardrails[g]["text"] for g in breached]
        return CanaryDecision(ROLLBACK, 0.0, reasons, plain, guardrails)
    step = next_step(current_share, policy.steps)
    unjudged = [guardrails[g]["text"] for g in GUARDRAILS if guardrails[g]["status"] == NOT_JUDGED]
    clean = ", ".join(g for g in GUARDRAILS if guardrails[g]["status"] == CLEAN)
    if hold is not None:  # nothing breached, but not everything could be read: stay
        reasons = [f"waiting at share {current_share:g}, neither widening nor promoting: {hold}",
                   *unjudged]  # fmt: skip
        return CanaryDecision(WAIT, float(current_share), reasons, plain, guardrails)
    if step is None or step >= 1.0:  # the next step gives it every customer: that is promotion
        needed = [g for g in policy.promote_needs if guardrails[g]["status"] == NOT_JUDGED]
        if needed:
            reasons = [f"promotion waits until {', '.join(needed)} can be judged (all judged "
                       f"guardrails clean: {clean})", *unjudged]  # fmt: skip
            return CanaryDecision(WAIT, float(current_share), reasons, plain, guardrails)
        reasons = [f"all judged guardrails clean ({clean}) at the last step before every "
                   f"customer ({current_share:g}): promote the challenger", *unjudged]  # fmt: skip
        return CanaryDecision(PROMOTE, 1.0, reasons, plain, guardrails)
    reasons = [f"all judged guardrails clean ({clean}): widen from {current_share:g} to {step:g}",
               *unjudged]  # fmt: skip
    return CanaryDecision(WIDEN, step, reasons, plain, guardrails)
