"""Canary routing: which of two served models (champion, challenger) answers a customer.

The assignment is sticky and stateless: a customer's SHA-256 hash of ``salt`` and their id,
read as a number in [0, 1), sends them to the challenger when it is below the challenger's
share. The same customer therefore always meets the same model for as long as the salt and the
share stay the same (widening the share only moves champion customers to the challenger, never
back), and a new salt (by default each challenger's tag) reshuffles who is in the canary, so
one experiment's canary customers are not the next one's.

Configuration comes from the environment (:meth:`CanaryConfig.from_env`):

- ``RECSYS_CHALLENGER_TAG``: the BentoML model tag of the challenger; absent or empty: no canary;
- ``RECSYS_CANARY_SHARE``: the challenger's share of customers in [0, 1] (default 0.1);
- ``RECSYS_CANARY_SALT``: the hash salt (default: the challenger tag).

No Dagster, no BentoML: the service and the offline analysis import the same function.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

VARIANT_CHAMPION = "champion"
VARIANT_CHALLENGER = "challenger"
VARIANTS: tuple[str, ...] = (VARIANT_CHAMPION, VARIANT_CHALLENGER)

CHALLENGER_TAG_VAR = "RECSYS_CHALLENGER_TAG"
CANARY_SHARE_VAR = "RECSYS_CANARY_SHARE"
CANARY_SALT_VAR = "RECSYS_CANARY_SALT"
DEFAULT_SHARE = 0.1

_SCALE = float(1 << 64)  # the hash's first 8 bytes as an unsigned integer, divided by 2**64


def bucket(customer_id: str, salt: str) -> float:
    """The customer's sticky position in [0, 1): SHA-256 of ``salt``, a NUL byte and the id
    (the separator keeps ``("ab", "c")`` and ``("a", "bc")`` apart), first 8 bytes / 2**64."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign_variant(customer_id: str, *, salt: str, challenger_share: float) -> str:
    """``"challenger"`` when the customer's :func:`bucket` is below ``challenger_share``, else
    ``"champion"``. Share 0: always the champion (no hash computed); share 1: always the
    challenger. Raises ValueError for a share outside [0, 1]."""
    if not 0.0 <= challenger_share <= 1.0:  # also refuses NaN
        raise ValueError(f"challenger_share must be in [0, 1], got {challenger_share!r}")
    if challenger_share == 0.0:
        return VARIANT_CHAMPION
    if challenger_share == 1.0:
        return VARIANT_CHALLENGER
    if bucket(customer_id, salt) < challenger_share:
        return VARIANT_CHALLENGER
    return VARIANT_CHAMPION


@dataclass(frozen=True)
class CanaryConfig:
    """The served challenger (None: no canary), its share of customers and the hash salt."""

    challenger_tag: str | None = None
    share: float = DEFAULT_SHARE
    salt: str = ""

    def __post_init__(self) -> None:
        if self.challenger_tag is not None and (
            not isinstance(self.challenger_tag, str) or not self.challenger_tag.strip()
        ):
            raise ValueError(
                f"challenger_tag must be a non-empty string or None, got {self.challenger_tag!r}"
            )
        share = self.share
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise ValueError(f"share must be a number in [0, 1], got {share!r}")
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise ValueError(f"share must be in [0, 1], got {share!r}")
        object.__setattr__(self, "share", float(share))
        if not isinstance(self.salt, str):
            raise ValueError(f"salt must be a string, got {self.salt!r}")

    @property
    def enabled(self) -> bool:
        """Whether a challenger is configured."""
        return self.challenger_tag is not None

    @property
    def effective_share(self) -> float:
        """The share of customers the challenger really gets: 0 without a challenger."""
        return self.share if self.enabled else 0.0

    def assign(self, customer_id: str) -> str:
        """The customer's variant; always the champion without a challenger."""
        if not self.enabled:
            return VARIANT_CHAMPION
        return assign_variant(customer_id, salt=self.salt, challenger_share=self.share)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CanaryConfig:
        """The configuration of ``RECSYS_CHALLENGER_TAG``, ``RECSYS_CANARY_SHARE`` and
        ``RECSYS_CANARY_SALT`` (see the module notes). Bad values raise ValueError naming the
        variable; they are checked even without a challenger, so a typo never waits for the
        day a challenger is set."""
        tag = (environ.get(CHALLENGER_TAG_VAR) or "").strip() or None
        raw_share = (environ.get(CANARY_SHARE_VAR) or "").strip()
        if raw_share:
            try:
                share = float(raw_share)
            except ValueError:
                raise ValueError(
                    f"{CANARY_SHARE_VAR} must be a number in [0, 1], got {raw_share!r}"
                ) from None
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise ValueError(f"{CANARY_SHARE_VAR} must be in [0, 1], got {raw_share!r}")
        else:
            share = DEFAULT_SHARE
        salt = environ.get(CANARY_SALT_VAR) or (tag or "")
        return cls(challenger_tag=tag, share=share, salt=salt)
