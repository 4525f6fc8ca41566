"""Applying the canary analysis' decision: the canary rolls back and widens on its own, and
promotes where the policy lets it.

:func:`apply_decision` turns a :class:`~recsys_assets.release.canary.analysis.CanaryDecision` into
a new canary state file (:func:`~recsys_assets.release.canary.routing.write_canary_state`), which
every service replica follows within about a second. The analyser is a service identity
(:data:`~recsys_assets.access.control.CANARY_ANALYSER`): each change first passes the
control-plane policy (``rollback``, ``set_canary_share`` to widen, ``promote`` to promote) and
is audited; a deny changes nothing. Then, per action:

- rollback: no challenger (share 0), the challenger marked ``rolled_back`` in the registry when
  it is there, a ``rolled_back`` loop event;
- widen: the next share, a ``canary_widened`` loop event;
- promote (:func:`promote_challenger`): share 1.0 (every customer on the challenger), the
  challenger marked ``promoted`` in the registry and recorded as the environment's release in
  the release ledger (its bundle and the bento built for it), a ``canary_promoted`` loop event.
  Where the policy does not let the analyser promote (prod: only a release manager gets a
  model there), nothing changes: the outcome is ``awaiting approval`` and an
  ``awaiting_approval`` loop event says so (once per state of the canary); a release manager
  then promotes it with ``python -m recsys_assets canary promote``, through the same
  :func:`promote_challenger` under their own identity;
- wait: nothing.

Idempotent: a decision about a challenger that is no longer the one in force, or made at a
share that has changed since, is stale and changes nothing; so is a promotion of a challenger
that already has every customer. :func:`scrape_errors` reads the
per-variant error counts from a running service's ``/metrics``.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from recsys_assets.access.control import (
    CANARY_ANALYSER,
    AccessDenied,
    authorize_control,
    control_audit_path,
)
from recsys_assets.access.policy import DEFAULT_POLICY_PATH, Subject
from recsys_assets.monitoring import loop
from recsys_assets.release.canary.analysis import (
    BREACHED,
    PROMOTE,
    ROLLBACK,
    WAIT,
    WIDEN,
    CanaryDecision,
    errors_from_metrics,
)
from recsys_assets.release.canary.routing import CanaryState, current_config, write_canary_state

# Outcomes of apply_decision.
APPLIED = "applied"
REFUSED = "refused"  # the control-plane policy denied it (audited)
AWAITING = "awaiting approval"  # a promotion the policy leaves to a release manager (audited)
STALE = "stale"  # the decision is about a challenger or share no longer in force
NOTHING = "nothing to do"  # wait


@dataclass(frozen=True)
class Applied:
    """What :func:`apply_decision` did: the decision's ``action``, the ``outcome`` (one of
    applied, awaiting approval, refused, stale, nothing to do), a plain-English ``detail``, the
    ``state`` written
    (when applied), what happened in the ``registry``, the loop ``event`` appended and, on a
    promotion, the ``release`` recorded."""

    action: str
    outcome: str
    detail: str
    state: CanaryState | None = None
    registry: str | None = None
    event: dict[str, Any] | None = None
    release: str | None = None  # the release ledger, on a promotion

    def as_metadata(self) -> dict[str, Any]:
        """Flat, JSON-able fields for asset metadata and the report."""
        return {
            "action": self.action,
            "outcome": self.outcome,
            "detail": self.detail,
            "generation": None if self.state is None else self.state.generation,
            "share": None if self.state is None else self.state.share,
            "challenger_tag": None if self.state is None else self.state.challenger_tag,
            "registry": self.registry,
            "release": self.release,
        }


def _version(tag: str) -> str:
    """The model version of a BentoML tag (``name:version``)."""
    return tag.split(":", 1)[1] if ":" in tag else tag


def mark_stage(tag: str, stage: str, **labels: str) -> str:
    """Set a model's registry stage when the model is in the store; what happened, in words
    (a missing model or a broken store is reported, never raised: the state file is what the
    service follows)."""
    from recsys_assets.serving import registry as model_registry

    try:
        model_registry.set_stage(tag, stage, **labels)
    except Exception as error:  # not there, a broken store, permissions
        import bentoml

        if isinstance(error, bentoml.exceptions.NotFound):
            return f"{tag} is not in the registry: stage unchanged"
        return f"{tag}: registry not updated ({type(error).__name__}: {error})"
    return f"{tag} marked {stage}"


def release_winner(
    tag: str, environment: str, reason: str, released_by: Subject = CANARY_ANALYSER
) -> str:
    """Record the promoted challenger as ``environment``'s release, by ``released_by`` (who
    promoted it, after the policy allowed them: :func:`promote_challenger`); a plain-English
    outcome. Never raises: the canary already serves it to every customer, and a ledger that
    cannot be written must not hide that."""
    from recsys_assets.release.ledger import release_canary_winner

    try:
        release = release_canary_winner(tag, environment, released_by=released_by, reason=reason)
    except Exception as error:  # a locked or corrupt ledger, an unreadable store
        return f"release not recorded ({type(error).__name__}: {error})"
    if release is None:
        return f"{tag} is not in the registry: no release recorded"
    return f"release {release['release_id']} recorded (bento {release['bento_tag'] or 'none'})"


def apply_decision(
    decision: CanaryDecision,
    *,
    challenger_tag: str,
    decided_share: float,
    state_path: str | os.PathLike[str],
    environment: str,
    loop_log: str | os.PathLike[str],
    detected_at: str | None = None,
    environ: Mapping[str, str] | None = None,
    policy_path: str | os.PathLike[str] = DEFAULT_POLICY_PATH,
    set_stage: Callable[..., str] = mark_stage,
    record_release: Callable[[str, str, str, Subject], str] = release_winner,
) -> Applied:
    """Apply ``decision`` about ``challenger_tag`` (made at ``decided_share``) to the canary
    state file ``state_path`` of ``environment``, as the canary analyser (see the module
    notes). ``detected_at``: when the decision was made (the ``canary_decision`` event's ts);
    ``environ``: the bootstrap configuration while there is no state file (default
    ``os.environ``); ``set_stage(tag, stage, **labels) -> str``: the registry change;
    ``record_release(tag, environment, reason, released_by) -> str``: the release ledger on a
    promotion. Never raises for a policy deny (outcome refused, or awaiting approval for a
    promotion); a corrupt state file raises ValueError."""
    from recsys_assets.serving.registry import ROLLED_BACK

    action = decision.action
    if action == WAIT:
        return Applied(action, NOTHING, "waiting: the canary stays as it is")
    if action not in (ROLLBACK, WIDEN, PROMOTE):
        raise ValueError(f"unknown canary action {action!r}")
    config, state = current_config(state_path, os.environ if environ is None else environ)
    if config.challenger_tag != challenger_tag:
        now = config.challenger_tag or "no challenger"
        return Applied(
            action,
            STALE,
            f"the decision is about {challenger_tag}, the canary now serves {now}: nothing changed",
        )
    if abs(config.share - decided_share) > 1e-9:
        return Applied(
            action,
            STALE,
            f"the decision was made at share {decided_share:g}, the "
            f"share is now {config.share:g}: nothing changed",
        )
    version = _version(challenger_tag)
    next_share = 0.0 if action == ROLLBACK else 1.0 if action == PROMOTE else decision.next_share
    if action != ROLLBACK and abs(next_share - config.share) <= 1e-9:  # promoted before
        return Applied(action, NOTHING, f"{challenger_tag} already has share {config.share:g}")
    current = state if state is not None else CanaryState.bootstrap(config)
    reasons = list(decision.reasons)
    if action == PROMOTE:  # the policy's promote decides, in every environment
        try:
            return promote_challenger(
                challenger_tag, subject=CANARY_ANALYSER, environment=environment,
                reason=f"promoted by the canary at share {current.share:g}: " + "; ".join(reasons),
                state_path=state_path, loop_log=loop_log, environ=environ,
                policy_path=policy_path, set_stage=set_stage, record_release=record_release,
                reasons=reasons,
            )  # fmt: skip
        except AccessDenied as denied:
            return _awaiting_approval(challenger_tag, current, reasons, denied, loop_log,
                                      detected_at)  # fmt: skip
    try:
        authorize_control(
            CANARY_ANALYSER,
            "rollback" if action == ROLLBACK else "set_canary_share",
            environment,
            audit_path=control_audit_path(loop_log),
            policy_path=policy_path,
            model_version=version,
            share=next_share,
        )
    except AccessDenied as denied:
        return Applied(action, REFUSED, str(denied))

    log = loop.LoopLog(loop_log)
    common = {"challenger_tag": challenger_tag, "model_version": version}
    if action == ROLLBACK:
        new = current.changed(
            challenger_tag=None,
            share=0.0,
            updated_by=CANARY_ANALYSER.id,
            reason="rollback: " + "; ".join(reasons),
        )
        write_canary_state(state_path, new)
        breached = [g for g, v in decision.guardrails.items() if v.get("status") == BREACHED]
        registry = set_stage(
            challenger_tag,
            ROLLED_BACK,
            rollback_reason="canary-" + "-".join(breached or ["guardrail"]),
        )
        event = log.append(
            loop.ROLLED_BACK,
            **common,
            reasons=reasons,
            detected_at=detected_at,
            from_share=current.share,
            generation=new.generation,
        )
        detail = f"rolled back {challenger_tag}: share {current.share:g} -> 0"
    else:  # widen
        new = current.changed(
            challenger_tag=challenger_tag,
            share=next_share,
            updated_by=CANARY_ANALYSER.id,
            reason="widen: " + "; ".join(reasons),
        )
        write_canary_state(state_path, new)
        registry = None
        event = log.append(
            loop.CANARY_WIDENED,
            **common,
            from_share=current.share,
            share=next_share,
            reasons=reasons,
            generation=new.generation,
        )
        detail = f"widened {challenger_tag}: share {current.share:g} -> {next_share:g}"
    return Applied(action, APPLIED, detail, new, registry, event)


PROMOTE_COMMAND = "python -m recsys_assets canary promote"  # how a release manager promotes


def _awaiting_approval(
    challenger_tag: str,
    current: CanaryState,
    reasons: list[str],
    denied: AccessDenied,
    loop_log: str | os.PathLike[str],
    detected_at: str | None,
) -> Applied:
    """A clean canary the policy does not let the analyser promote: nothing changes, and an
    ``awaiting_approval`` loop event says so, once per state of the canary (the analysis
    repeats its decision every run while it waits)."""
    log = loop.LoopLog(loop_log)
    event = log.last(loop.AWAITING_APPROVAL, challenger_tag=challenger_tag,
                     generation=current.generation)  # fmt: skip
    if event is None:
        event = log.append(
            loop.AWAITING_APPROVAL, challenger_tag=challenger_tag,
            model_version=_version(challenger_tag), share=current.share,
            generation=current.generation, reasons=reasons, reason=str(denied),
            detected_at=detected_at, approve_with=PROMOTE_COMMAND,
        )  # fmt: skip
    detail = (
        f"{challenger_tag} is clean at share {current.share:g} and awaits a release manager "
        f"({denied}); they promote it with `{PROMOTE_COMMAND}`"
    )
    return Applied(PROMOTE, AWAITING, detail, event=event)


def promote_challenger(
    challenger_tag: str,
    *,
    subject: Subject | None,
    reason: str,
    state_path: str | os.PathLike[str],
    environment: str,
    loop_log: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    policy_path: str | os.PathLike[str] = DEFAULT_POLICY_PATH,
    set_stage: Callable[..., str] = mark_stage,
    record_release: Callable[[str, str, str, Subject], str] = release_winner,
    reasons: list[str] | None = None,
) -> Applied:
    """Give the canary's challenger every customer and make it the environment's release, as
    ``subject``: the canary analyser for a clean canary (:func:`apply_decision`), or a person
    (``python -m recsys_assets canary promote``, where the analyser may not). The policy's
    ``promote`` for ``subject`` in ``environment`` first (audited; a deny raises
    :class:`~recsys_assets.access.control.AccessDenied` and nothing changes), then share 1.0 in
    the state file, the challenger marked ``promoted`` in the registry (``set_stage``),
    recorded as the release by ``subject`` (``record_release``) and a ``canary_promoted`` loop
    event (``by``: the subject). A challenger that is not the one in force is stale, one that
    already has every customer is nothing to do (neither asks the policy)."""
    from recsys_assets.serving.registry import PROMOTED

    config, state = current_config(state_path, os.environ if environ is None else environ)
    if config.challenger_tag != challenger_tag:
        now = config.challenger_tag or "no challenger"
        return Applied(PROMOTE, STALE, f"the canary now serves {now}, not {challenger_tag}: "
                       "nothing changed")  # fmt: skip
    if abs(config.share - 1.0) <= 1e-9:
        return Applied(PROMOTE, NOTHING, f"{challenger_tag} already has share 1")
    version = _version(challenger_tag)
    authorize_control(
        subject, "promote", environment, audit_path=control_audit_path(loop_log),
        policy_path=policy_path, model_version=version, share=1.0,
    )  # fmt: skip
    by = subject.id  # authorized: somebody
    current = state if state is not None else CanaryState.bootstrap(config)
    reasons = [reason] if reasons is None else list(reasons)
    new = current.changed(challenger_tag=challenger_tag, share=1.0, updated_by=by,
                          reason="promote: " + "; ".join(reasons))  # fmt: skip
    write_canary_state(state_path, new)
    registry = set_stage(challenger_tag, PROMOTED)
    release = record_release(challenger_tag, environment, reason, subject)
    event = loop.LoopLog(loop_log).append(
        loop.CANARY_PROMOTED, challenger_tag=challenger_tag, model_version=version, by=by,
        from_share=current.share, share=1.0, reasons=reasons, generation=new.generation,
        release=release,
    )  # fmt: skip
    detail = f"promoted {challenger_tag}: share {current.share:g} -> 1, by {by}"
    return Applied(PROMOTE, APPLIED, detail, new, registry, event, release)


def scrape_errors(service_url: str, *, timeout: float = 5.0) -> dict[str, int]:
    """Failed ``/recommend`` requests per variant from ``<service_url>/metrics``
    (:func:`~recsys_assets.release.canary.analysis.errors_from_metrics`). Raises OSError when the
    service cannot be read, ValueError when its answer is not usable."""
    url = service_url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8", errors="replace")
    return errors_from_metrics(text)


def set_canary(
    *,
    challenger_tag: str | None,
    share: float,
    subject: Any,
    reason: str,
    state_path: str | os.PathLike[str],
    environment: str,
    loop_log: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    policy_path: str | os.PathLike[str] = DEFAULT_POLICY_PATH,
) -> CanaryState:
    """A person (or the pipeline) starts, reshapes or stops a canary by hand: the policy's
    ``set_canary_share`` for ``subject`` in ``environment`` first (audited; a deny raises
    :class:`~recsys_assets.access.control.AccessDenied` and nothing changes), then the new state.

    A new challenger starts a new experiment: a new salt (its tag), its start (``started_at``:
    the analysis judges it on what happened since) and a ``canary_started``
    event; the same challenger at another share keeps its salt (sticky customers) and logs a
    ``canary_widened`` event; no challenger (or share 0) stops the canary (``rolled_back``).
    Bad values raise ValueError before anything is written."""
    environ = os.environ if environ is None else environ
    config, state = current_config(state_path, environ)
    current = state if state is not None else CanaryState.bootstrap(config)
    if challenger_tag is None:
        share = 0.0
    CanaryState(challenger_tag=challenger_tag, share=share, salt="")  # validates tag and share
    action = "rollback" if challenger_tag is None or share == 0.0 else "set_canary_share"
    authorize_control(
        subject, action, environment, audit_path=control_audit_path(loop_log),
        policy_path=policy_path, model_version=challenger_tag or current.challenger_tag,
        share=share,
    )  # fmt: skip
    by = getattr(subject, "id", str(subject))
    new_experiment = challenger_tag is not None and challenger_tag != current.challenger_tag
    now = loop.now_utc()
    new = CanaryState(
        challenger_tag=challenger_tag if share > 0.0 else None,
        share=share,
        salt=challenger_tag if new_experiment else current.salt,
        generation=current.generation + 1,
        updated_at=now,
        updated_by=by,
        reason=reason,
        started_at=(now if new_experiment else current.started_at) if share > 0.0 else "",
    )
    write_canary_state(state_path, new)
    log = loop.LoopLog(loop_log)
    common = {"challenger_tag": challenger_tag or current.challenger_tag, "by": by,
              "reason": reason, "generation": new.generation}  # fmt: skip
    if new.challenger_tag is None:
        log.append(loop.ROLLED_BACK, from_share=current.share, **common)
    elif new_experiment:
        log.append(loop.CANARY_STARTED, share=share, **common)
    else:
        log.append(loop.CANARY_WIDENED, from_share=current.share, share=share, **common)
    return new
