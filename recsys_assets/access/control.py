"""The control plane's door: promoting, deploying, rolling back and setting the canary share go
through the policy (``config/policy.yaml``) and are audited, whoever asks.

Three kinds of subject ask:

- the pipeline (:data:`PIPELINE`): the Dagster assets that promote and deploy a model;
- the canary analyser (:data:`CANARY_ANALYSER`): the analysis that widens or rolls back a
  challenger on its own, and promotes it where the policy lets it (not in prod: there a
  release manager does);
- people, from the command line: the operator presents a key (``RECSYS_OPERATOR_KEY``) that
  the environment's control-plane key secret (``RECSYS_CONTROL_KEYS`` or the file named by
  ``RECSYS_CONTROL_KEYS_FILE``, entries ``<key>:<subject_id>:<role>[:<expires ISO>]``) maps to
  a human subject with a role (release_manager, sre...).

Service identities are fixed in code, as a workload identity would be; a person is known only
by a key. Every decision, allow or deny, is a line in the environment's control-plane audit log
(``control-audit.jsonl`` beside the loop's event log); a deny raises :class:`AccessDenied`,
whose message names the subject, action, environment and rule, never a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys_assets.access.policy import (
    DEFAULT_POLICY_PATH,
    AuditLog,
    Decision,
    Resource,
    Subject,
    api_keys_from_environment,
    authorize,
    load_policy,
    subject_for_api_key,
)
from recsys_assets.config import variables

CONTROL_KEYS_VAR = variables.CONTROL_KEYS.name
CONTROL_KEYS_FILE_VAR = variables.CONTROL_KEYS_FILE.name
OPERATOR_KEY_VAR = variables.OPERATOR_KEY.name
CONTROL_AUDIT_NAME = "control-audit.jsonl"

PIPELINE = Subject.service("dagster-pipeline", "pipeline")
CANARY_ANALYSER = Subject.service("canary-analyser", "canary")


class AccessDenied(PermissionError):  # noqa: N818 (reads as the refusal it is)
    """A control-plane action the policy refused (already audited)."""

    def __init__(self, message: str, decision: Decision) -> None:
        super().__init__(message)
        self.decision = decision


def control_audit_path(loop_log: str | os.PathLike[str]) -> Path:
    """The environment's control-plane audit log: beside its loop event log."""
    return Path(loop_log).parent / CONTROL_AUDIT_NAME


def operator_subject(environ: Mapping[str, str] | None = None) -> Subject | None:
    """The person behind ``RECSYS_OPERATOR_KEY``, as the control-plane key secret names them
    (a human subject with a role), or None: no key, or a key the secret does not know.
    A malformed secret raises :class:`~recsys_assets.access.policy.CredentialError`."""
    environ = os.environ if environ is None else environ
    keys = api_keys_from_environment(
        environ,
        variable=CONTROL_KEYS_VAR,
        file_variable=CONTROL_KEYS_FILE_VAR,
        attributes={"kind": "human"},
    )
    return subject_for_api_key(keys, (environ.get(OPERATOR_KEY_VAR) or "").strip() or None)


def authorize_control(
    subject: Subject | None,
    action: str,
    environment: str,
    *,
    audit_path: str | os.PathLike[str],
    policy_path: str | os.PathLike[str] = DEFAULT_POLICY_PATH,
    **resource_attributes: Any,
) -> Decision:
    """Decide ``action`` (promote, deploy, rollback, set_canary_share) in ``environment`` for
    ``subject`` (None: nobody authenticated), audit it, and return the allow; a deny raises
    :class:`AccessDenied`. ``resource_attributes`` (model version, share...) go to the audit
    line with the decision."""
    resource = Resource.for_action(action, str(environment), **resource_attributes)
    decision = authorize(load_policy(policy_path), subject, action, resource, AuditLog(audit_path))
    if not decision.allowed:
        who = subject.id if subject is not None else f"nobody (no valid {OPERATOR_KEY_VAR})"
        raise AccessDenied(f"{who} may not {action} in {environment}: {decision.reason}", decision)
    return decision
