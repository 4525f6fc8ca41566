"""The canary's guardrails: :class:`CanaryPolicy`, one per environment.

Each environment file's ``canary:`` block (``config/environments/<env>.yaml``) is read into a
``CanaryPolicy`` by :func:`~recsys_assets.config.settings.get_settings` (``Settings.canary``);
a file without the block gets the defaults below. The policy is plain data with its own
validation, so it lives here, beside the other settings: the canary analysis
(:mod:`recsys_assets.release.canary.analysis`) imports it, and config imports no domain.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

# The guardrails the canary judges, in the order a decision reports them; ``promote_needs``
# names some of these.
GUARDRAILS: tuple[str, ...] = (
    "error_rate",
    "p99_latency",
    "fallback_rate",
    "click_through",
    "conversion",
)

_NUMBERS = (
    "max_error_rate_increase",
    "max_p99_ratio",
    "min_p99_increase_ms",
    "max_fallback_rate_increase",
    "min_conversion_ratio",
    "min_click_through_ratio",
    "alpha",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class CanaryPolicy:
    """The canary's guardrails and the shares it widens through.

    - ``min_requests`` (200): attempts (served lists + errors) each variant needs before any
      decision; latency samples each variant needs before p99 is judged;
    - ``max_error_rate_increase`` (0.01): challenger error rate minus the champion's, absolute;
    - ``max_p99_ratio`` (1.5): challenger p99 latency / champion p99 latency, breached only
      when the challenger is also more than ``min_p99_increase_ms`` (10 ms) slower: a ratio of
      two p99s of a few milliseconds over a few hundred requests swings by chance;
    - ``max_fallback_rate_increase`` (0.05): challenger fallback rate minus the champion's;
    - ``min_conversion_ratio`` (0.9): challenger conversion / champion conversion, breached only
      when the one-sided two-proportion z-test at ``alpha`` (0.05) says the challenger is worse;
    - ``min_click_through_ratio`` (0.9): the same for click-through (clicks per impression);
    - ``steps`` ((0.1, 0.25, 0.5, 1.0)): the challenger shares to widen through, increasing;
    - ``promote_needs`` (("conversion",)): guardrails that must have been judged (clean) before
      a promotion. Widening may go on while they cannot be judged yet (purchases arrive after
      the lists that led to them), but giving the challenger every customer on latency and
      errors alone would promote a model nobody has seen sell: the canary waits at its last step
      instead.

    A value equal to a threshold is within limits; only a value strictly beyond it breaches.
    Every validation error starts with the field's name.
    """

    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    min_p99_increase_ms: float = 10.0
    max_fallback_rate_increase: float = 0.05
    min_conversion_ratio: float = 0.9
    min_click_through_ratio: float = 0.9
    alpha: float = 0.05
    steps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    promote_needs: tuple[str, ...] = ("conversion",)

    def __post_init__(self) -> None:
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int):
            raise ValueError(f"min_requests must be an integer, got {self.min_requests!r}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {self.min_requests}")
        for name in _NUMBERS:  # a YAML string or list would otherwise fail in math.isfinite
            value = getattr(self, name)
            if not _is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("max_error_rate_increase", "max_fallback_rate_increase"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.max_p99_ratio) and self.max_p99_ratio > 0):
            raise ValueError(f"max_p99_ratio must be positive, got {self.max_p99_ratio!r}")
        if not (math.isfinite(self.min_p99_increase_ms) and self.min_p99_increase_ms >= 0):
            raise ValueError(f"min_p99_increase_ms must be >= 0, got {self.min_p99_increase_ms!r}")
        if not (math.isfinite(self.min_click_through_ratio) and self.min_click_through_ratio >= 0):
            raise ValueError(
                f"min_click_through_ratio must be >= 0, got {self.min_click_through_ratio!r}"
            )
        if not (math.isfinite(self.min_conversion_ratio) and self.min_conversion_ratio >= 0):
            raise ValueError(
                f"min_conversion_ratio must be >= 0, got {self.min_conversion_ratio!r}"
            )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if not isinstance(self.steps, list | tuple) or not all(map(_is_number, self.steps)):
            raise ValueError(f"steps must be a list of shares in (0, 1], got {self.steps!r}")
        steps = tuple(float(s) for s in self.steps)
        if not steps or any(not 0.0 < s <= 1.0 for s in steps):
            raise ValueError(f"steps must be shares in (0, 1], got {self.steps!r}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps must be strictly increasing, got {self.steps!r}")
        object.__setattr__(self, "steps", steps)
        if not isinstance(self.promote_needs, list | tuple):
            raise ValueError(
                f"promote_needs must be a list of guardrail names, got {self.promote_needs!r}"
            )
        unknown = [g for g in self.promote_needs if g not in GUARDRAILS]
        if unknown:
            raise ValueError(f"promote_needs names unknown guardrail(s) {unknown}: {GUARDRAILS}")
        object.__setattr__(self, "promote_needs", tuple(self.promote_needs))

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``steps`` and ``promote_needs`` as lists): the policy in
        force, as the canary's report and metadata record it."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }
