"""Fault injection on the challenger, for tests and incident drills: ``RECSYS_CHALLENGER_DELAY_MS``
(default 0) adds that many milliseconds to every request the challenger serves (a slow
challenger); ``RECSYS_CHALLENGER_ERROR_RATE`` (default 0) fails that share of the challenger's
requests with a 500, drawn per request id (a failing one). Either knob set in acceptance or prod
raises at start: the service stays unready, naming the variable."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

from recsys_assets.config import variables

logger = logging.getLogger("bentoml.recommender")  # the service's logger, in every module

# Extra milliseconds on each request the challenger serves.
CHALLENGER_DELAY_VAR = variables.CHALLENGER_DELAY_MS.name
# ... and the share of the challenger's requests that fail with a 500 (drawn per request id).
CHALLENGER_ERROR_RATE_VAR = variables.CHALLENGER_ERROR_RATE.name
# The environments that may not set them (their declaration says which may).
REFUSED_IN = tuple(
    env for env in variables.ENVIRONMENTS if not variables.CHALLENGER_DELAY_MS.allowed_in(env)
)
INJECTED_FAILURE = f"{CHALLENGER_ERROR_RATE_VAR}: injected failure (drill)"


@dataclass(frozen=True)
class ChallengerFaults:
    """The drill knobs in force: none by default."""

    delay_s: float = 0.0
    error_rate: float = 0.0

    @classmethod
    def from_environment(
        cls, environment: object, environ: Mapping[str, str] = os.environ
    ) -> ChallengerFaults:
        """The knobs ``environ`` sets; a bad value, or any knob in acceptance or prod, raises."""
        delay_s = challenger_delay(environment, environ)
        return cls(delay_s=delay_s, error_rate=challenger_error_rate(environment, environ))

    def fails(self, request_id: str) -> bool:
        """Whether the challenger's request ``request_id`` is one the drill fails (seeded with
        the request id, so the same request always gets the same draw)."""
        return bool(self.error_rate) and random.Random(request_id).random() < self.error_rate


def refuse_drill(environment: object, variable: str, raw: str) -> None:
    """A drill knob set in acceptance or prod: raise (the service stays unready)."""
    environment = str(environment)
    if environment in REFUSED_IN:
        raise RuntimeError(
            f"{variable}={raw!r} is a test and drill knob (fault injection) and "
            f"is refused in the {environment} environment; unset it"
        )


def challenger_error_rate(environment: object, environ: Mapping[str, str] = os.environ) -> float:
    """``RECSYS_CHALLENGER_ERROR_RATE`` (0 when unset): a drill knob that fails that share of the
    challenger's requests with a 500. A value outside [0, 1], or any rate in acceptance or prod,
    raises (the service stays unready, naming the variable)."""
    raw = environ.get(CHALLENGER_ERROR_RATE_VAR, "").strip()
    if not raw:
        return 0.0
    try:
        rate = float(raw)
    except ValueError:
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:  # also refuses NaN
        raise ValueError(f"{CHALLENGER_ERROR_RATE_VAR}={raw!r}: must be a share in [0, 1]")
    if rate > 0:
        refuse_drill(environment, CHALLENGER_ERROR_RATE_VAR, raw)
        logger.warning(
            "drill: %s=%g fails %g%% of the challenger's requests with a 500",
            CHALLENGER_ERROR_RATE_VAR,
            rate,
            100 * rate,
        )
    return rate


def challenger_delay(environment: object, environ: Mapping[str, str] = os.environ) -> float:
    """``RECSYS_CHALLENGER_DELAY_MS`` in seconds (0 when unset): a drill knob that makes the
    challenger slow. A value that is not a finite number >= 0, or any delay in acceptance or
    prod, raises (the service stays unready, naming the variable)."""
    raw = environ.get(CHALLENGER_DELAY_VAR, "").strip()
    if not raw:
        return 0.0
    try:
        delay_ms = float(raw)
    except ValueError:
        delay_ms = float("nan")
    if not (delay_ms >= 0.0 and delay_ms < float("inf")):  # also refuses NaN
        raise ValueError(f"{CHALLENGER_DELAY_VAR}={raw!r}: must be a number of milliseconds >= 0")
    if delay_ms > 0:
        refuse_drill(environment, CHALLENGER_DELAY_VAR, raw)
        logger.warning(
            "drill: %s=%g adds %g ms to every request the challenger serves",
            CHALLENGER_DELAY_VAR,
            delay_ms,
            delay_ms,
        )
    return delay_ms / 1000.0
