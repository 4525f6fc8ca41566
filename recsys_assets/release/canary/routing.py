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

The environment is only the bootstrap: once the canary state file exists (a small JSON
document per environment, :class:`CanaryState`, settings ``canary_state``), it overrides the
variables. The canary analysis writes it (:func:`write_canary_state`, atomic) to roll back,
widen or promote; the service re-reads it while serving (:func:`read_canary_state`).

No Dagster, no BentoML: the service and the offline analysis import the same function.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys_assets.config import variables
from recsys_assets.core.files import write_json_atomically

VARIANT_CHAMPION = "champion"
VARIANT_CHALLENGER = "challenger"
VARIANTS: tuple[str, ...] = (VARIANT_CHAMPION, VARIANT_CHALLENGER)

CHALLENGER_TAG_VAR = variables.CHALLENGER_TAG.name
CANARY_SHARE_VAR = variables.CANARY_SHARE.name
CANARY_SALT_VAR = variables.CANARY_SALT.name
DEFAULT_SHARE = 0.1  # variables.CANARY_SHARE.default (tested)

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


# --- The canary state file -------------------------------------------------------------------

_STATE_FIELDS = ("challenger_tag", "share", "salt", "generation")  # required in the file


@dataclass(frozen=True)
class CanaryState:
    """The canary state file's document: the challenger (None: no canary), its share and salt,
    plus ``generation`` (+1 per change), when, by whom and why it last changed, and
    ``started_at``: when this challenger's experiment began (set when a new challenger starts,
    kept while it widens; empty when not known: a canary bootstrapped from the environment, or
    a file written before the field existed)."""

    challenger_tag: str | None
    share: float
    salt: str
    generation: int = 0
    updated_at: str = ""
    updated_by: str = ""
    reason: str = ""
    started_at: str = ""

    def __post_init__(self) -> None:
        config = self.config()  # validates tag, share and salt
        object.__setattr__(self, "share", config.share)
        generation = self.generation
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"generation must be an integer >= 0, got {generation!r}")
        for name in ("updated_at", "updated_by", "reason", "started_at"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")

    def config(self) -> CanaryConfig:
        """The routing configuration this state sets."""
        return CanaryConfig(challenger_tag=self.challenger_tag, share=self.share, salt=self.salt)

    def changed(
        self, *, challenger_tag: str | None, share: float, updated_by: str, reason: str
    ) -> CanaryState:
        """The next state: the same salt (so assignment stays sticky), generation + 1, now; the
        same experiment start while the challenger stays (none once it is gone)."""
        return CanaryState(
            challenger_tag=challenger_tag,
            share=share,
            salt=self.salt,
            generation=self.generation + 1,
            updated_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            updated_by=updated_by,
            reason=reason,
            started_at=self.started_at if challenger_tag == self.challenger_tag else "",
        )

    @classmethod
    def bootstrap(cls, config: CanaryConfig) -> CanaryState:
        """Generation 0: what the environment variables configure, before any state file."""
        return cls(challenger_tag=config.challenger_tag, share=config.share, salt=config.salt,
                   updated_by="environment", reason="bootstrap from the environment")  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def read_canary_state(path: str | os.PathLike[str]) -> CanaryState | None:
    """The state in ``path``; None when the file does not exist. A file that is not a valid
    state (not JSON, a field missing or out of range) raises ValueError naming the path and
    the problem; other read errors (permissions) raise OSError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"canary state {path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"canary state {path}: not a JSON object")
    missing = [name for name in _STATE_FIELDS if name not in raw]
    if missing:
        raise ValueError(f"canary state {path}: missing field(s) {missing}")
    known = {name: raw[name] for name in CanaryState.__dataclass_fields__ if name in raw}
    try:
        return CanaryState(**known)
    except (TypeError, ValueError) as error:
        raise ValueError(f"canary state {path}: {error}") from None


def write_canary_state(path: str | os.PathLike[str], state: CanaryState) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsynced,
    then renamed over the old one (and the folder fsynced), so a reader sees the old document
    or the new one, never half of one."""
    write_json_atomically(path, state.as_json())


def current_config(
    state_path: str | os.PathLike[str], environ: Mapping[str, str]
) -> tuple[CanaryConfig, CanaryState | None]:
    """The canary in force: the state file's when it exists, else the environment's
    (:meth:`CanaryConfig.from_env`); with the state read (None without a file). Errors as
    :func:`read_canary_state` and :meth:`CanaryConfig.from_env` raise them."""
    state = read_canary_state(state_path)
    if state is not None:
        return state.config(), state
    return CanaryConfig.from_env(environ), None
