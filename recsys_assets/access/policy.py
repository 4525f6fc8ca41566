"""Attribute-based access control: who may do what, where, decided by a policy file.

The policy (``config/policy.yaml``) is a list of rules over the subject's attributes (role,
kind, team...), the resource's attributes (environment, plane, type) and the action. Deny by
default: a request is allowed only when an ``allow`` rule matches, and a matching ``deny`` rule
wins over every allow. Before any rule the engine denies what no policy should allow: an
expired credential, an unknown action, a resource of the wrong type for the action.

Conditions are deliberately few: equality, ``{in: [...]}``, ``{not_in: [...]}`` and
``{same_as: subject.x | resource.x}``; a condition on a missing attribute never holds.

API keys come from a secret (``RECSYS_API_KEYS`` or the file named by ``RECSYS_API_KEYS_FILE``)
as ``<key>:<subject_id>:<role>[:<expires ISO>];...``. Only their SHA-256 hashes are kept, they
are compared with :func:`hmac.compare_digest`, and no key ever reaches a log, an exception
message or a repr. An unknown key gives no subject (the caller answers 401); a known subject
that is not allowed gets a deny (the caller answers 403).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from recsys_assets.config import variables
from recsys_assets.core import jsonl

DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[1] / "config" / "policy.yaml"
API_KEYS_VAR = variables.API_KEYS.name
API_KEYS_FILE_VAR = variables.API_KEYS_FILE.name

ENVIRONMENTS = ("dev", "test", "acceptance", "prod")
PLANES = ("control", "data")
# Each action applies to one resource type; the type fixes the plane.
ACTION_RESOURCE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "promote": "model",
        "deploy": "model",
        "rollback": "model",
        "set_canary_share": "canary",
        "read_recommendations": "recommendations",
        "send_feedback": "feedback",
        "read_customer_features": "customer_features",
    }
)
RESOURCE_TYPE_PLANES: Mapping[str, str] = MappingProxyType(
    {
        "model": "control",
        "canary": "control",
        "recommendations": "data",
        "feedback": "data",
        "customer_features": "data",
    }
)
ACTIONS = tuple(ACTION_RESOURCE_TYPES)
ALL_ACTIONS = "*"
EFFECTS = ("allow", "deny")
OPERATORS = ("in", "not_in", "same_as")
# Resource attributes whose values the loader checks, so a typo ("production") fails loudly.
KNOWN_RESOURCE_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "environment": ENVIRONMENTS,
        "plane": PLANES,
        "type": tuple(RESOURCE_TYPE_PLANES),
    }
)
RULE_FIELDS = ("id", "description", "effect", "actions", "conditions")
CREDENTIAL_EXPIRED = "credential expired"
# Attribute names that may hold a secret: never written to the audit log.
SECRET_MARKERS = ("key", "secret", "token", "password")
MIN_API_KEY_LENGTH = 16

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_REFERENCE = re.compile(r"^(subject|resource)\.[A-Za-z_][A-Za-z0-9_]*$")


class PolicyError(ValueError):
    """A policy file that cannot be trusted: the message names the file, rule and field."""


class CredentialError(ValueError):
    """A malformed API key secret; the message never contains a key."""


# --- subjects, resources, decisions ----------------------------------------------------------


def _frozen(attributes: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(attributes or {}))


@dataclass(frozen=True)
class Subject:
    """Who asks: an id and attributes (role, kind: human | service, team, expires_at...)."""

    id: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen(self.attributes))

    @classmethod
    def human(cls, subject_id: str, role: str, **attributes: Any) -> Subject:
        return cls(subject_id, {"kind": "human", "role": role, **attributes})

    @classmethod
    def service(cls, subject_id: str, role: str, **attributes: Any) -> Subject:
        return cls(subject_id, {"kind": "service", "role": role, **attributes})

    @property
    def role(self) -> str | None:
        return self.attributes.get("role")

    @property
    def kind(self) -> str | None:
        return self.attributes.get("kind")

    @property
    def expires_at(self) -> Any:
        return self.attributes.get("expires_at")

    def public_attributes(self) -> dict[str, Any]:
        """The attributes safe to log: anything whose name suggests a secret is left out."""
        return {
            name: _jsonable(value)
            for name, value in self.attributes.items()
            if not any(marker in name.lower() for marker in SECRET_MARKERS)
        }


@dataclass(frozen=True)
class Resource:
    """What is acted on: attributes such as environment, plane and type."""

    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen(self.attributes))

    @classmethod
    def of(cls, environment: str, resource_type: str, **attributes: Any) -> Resource:
        """A resource whose plane follows from its type."""
        plane = RESOURCE_TYPE_PLANES.get(resource_type)
        return cls(
            {"environment": environment, "type": resource_type, "plane": plane, **attributes}
        )

    @classmethod
    def for_action(cls, action: str, environment: str, **attributes: Any) -> Resource:
        """The resource an action applies to in an environment (the model for ``promote``)."""
        if action not in ACTION_RESOURCE_TYPES:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        return cls.of(environment, ACTION_RESOURCE_TYPES[action], **attributes)

    @property
    def environment(self) -> str | None:
        return self.attributes.get("environment")

    @property
    def plane(self) -> str | None:
        return self.attributes.get("plane")

    @property
    def type(self) -> str | None:
        return self.attributes.get("type")


@dataclass(frozen=True)
class Decision:
    """The answer: allowed or not, the rule that decided (None: no rule did), and why."""

    allowed: bool
    rule_id: str | None
    reason: str

    @property
    def effect(self) -> str:
        return "allow" if self.allowed else "deny"


# --- conditions and rules --------------------------------------------------------------------


_MISSING = object()


def _lookup(reference: str, subject: Subject, resource: Resource) -> Any:
    scope, name = reference.split(".", 1)
    attributes = subject.attributes if scope == "subject" else resource.attributes
    value = attributes.get(name, _MISSING)
    return _MISSING if value is None else value


@dataclass(frozen=True)
class Condition:
    """One test on an attribute: ``operator`` is ``eq``, ``in``, ``not_in`` or ``same_as``."""

    attribute: str
    operator: str
    operand: Any

    def holds(self, subject: Subject, resource: Resource) -> bool:
        value = _lookup(self.attribute, subject, resource)
        if value is _MISSING:
            return False
        if self.operator == "eq":
            return value == self.operand
        if self.operator == "in":
            return value in self.operand
        if self.operator == "not_in":
            return value not in self.operand
        other = _lookup(self.operand, subject, resource)
        return other is not _MISSING and value == other


@dataclass(frozen=True)
class Rule:
    """An allow or deny rule: it matches when the action is listed and every condition holds."""

    id: str
    description: str
    effect: str
    actions: frozenset[str]
    conditions: tuple[Condition, ...]

    def matches(self, subject: Subject, action: str, resource: Resource) -> bool:
        if action not in self.actions:
            return False
        return all(condition.holds(subject, resource) for condition in self.conditions)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def credential_expired(expires_at: Any, now: datetime) -> bool:
    """Whether a credential expiry (datetime, ISO string or None: never) has passed.

    An expiry that cannot be read counts as expired: fail closed. Naive times are UTC.
    """
    if expires_at is None:
        return False
    if isinstance(expires_at, str):
        try:
            expires_at = datetime.fromisoformat(expires_at)
        except ValueError:
            return True
    if not isinstance(expires_at, datetime):
        return True
    return _as_utc(expires_at) <= _as_utc(now)


@dataclass(frozen=True)
class Policy:
    """The loaded rules, in file order, and where they came from."""

    rules: tuple[Rule, ...]
    source: str = "<memory>"

    def decide(
        self,
        subject: Subject,
        action: str,
        resource: Resource,
        *,
        now: datetime | None = None,
    ) -> Decision:
        """Allow only when an allow rule matches and no deny rule does."""
        now = now or datetime.now(UTC)
        if credential_expired(subject.expires_at, now):
            return Decision(False, None, CREDENTIAL_EXPIRED)
        if action not in ACTION_RESOURCE_TYPES:
            return Decision(False, None, f"unknown action {action!r} (deny by default)")
        expected_type = ACTION_RESOURCE_TYPES[action]
        if resource.type != expected_type:
            return Decision(
                False,
                None,
                f"{action} applies to a {expected_type}, not to a {resource.type}",
            )
        expected_plane = RESOURCE_TYPE_PLANES[expected_type]
        if resource.plane is not None and resource.plane != expected_plane:
            return Decision(
                False, None, f"{action} is a {expected_plane}-plane action, not {resource.plane}"
            )
        matching = [rule for rule in self.rules if rule.matches(subject, action, resource)]
        for rule in matching:
            if rule.effect == "deny":
                return Decision(False, rule.id, f"denied by {rule.id}: {rule.description}")
        for rule in matching:
            return Decision(True, rule.id, f"allowed by {rule.id}: {rule.description}")
        return Decision(
            False,
            None,
            f"no rule allows {action} in {resource.environment} for role {subject.role} "
            "(deny by default)",
        )


# --- loading and validation ------------------------------------------------------------------


def _fail(source: str, rule_id: str, field_name: str, problem: str) -> PolicyError:
    return PolicyError(f"{source}: rule {rule_id!r}, field {field_name!r}: {problem}")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _check_resource_value(source: str, rule_id: str, attribute: str, values: list[Any]) -> None:
    scope, name = attribute.split(".", 1)
    known = KNOWN_RESOURCE_VALUES.get(name) if scope == "resource" else None
    if known is None:
        return
    for value in values:
        if value not in known:
            raise _fail(
                source,
                rule_id,
                f"conditions.{attribute}",
                f"unknown value {value!r}; expected one of {', '.join(known)}",
            )


def _parse_condition(source: str, rule_id: str, attribute: Any, spec: Any) -> Condition:
    field_name = f"conditions.{attribute}"
    if not isinstance(attribute, str) or not _REFERENCE.match(attribute):
        raise _fail(
            source,
            rule_id,
            field_name,
            "a condition names subject.<attribute> or resource.<attribute>",
        )
    if _is_scalar(spec):
        _check_resource_value(source, rule_id, attribute, [spec])
        return Condition(attribute, "eq", spec)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _fail(
            source,
            rule_id,
            field_name,
            f"expected a value or one operator of {', '.join(OPERATORS)}, got {spec!r}",
        )
    ((operator, operand),) = spec.items()
    if operator not in OPERATORS:
        raise _fail(
            source,
            rule_id,
            field_name,
            f"unknown operator {operator!r}; expected one of {', '.join(OPERATORS)}",
        )
    if operator == "same_as":
        if not isinstance(operand, str) or not _REFERENCE.match(operand):
            raise _fail(
                source,
                rule_id,
                field_name,
                f"same_as takes subject.<attribute> or resource.<attribute>, got {operand!r}",
            )
        return Condition(attribute, operator, operand)
    if not isinstance(operand, list) or not operand or not all(map(_is_scalar, operand)):
        raise _fail(
            source,
            rule_id,
            field_name,
            f"{operator} takes a non-empty list of values, got {operand!r}",
        )
    _check_resource_value(source, rule_id, attribute, operand)
    return Condition(attribute, operator, tuple(operand))


def _parse_actions(source: str, rule_id: str, actions: Any) -> frozenset[str]:
    if actions == ALL_ACTIONS:
        return frozenset(ACTIONS)
    if not isinstance(actions, list) or not actions:
        raise _fail(source, rule_id, "actions", f"expected a non-empty list or '{ALL_ACTIONS}'")
    for action in actions:
        if action not in ACTION_RESOURCE_TYPES:
            raise _fail(
                source,
                rule_id,
                "actions",
                f"unknown action {action!r}; known: {', '.join(ACTIONS)}",
            )
    return frozenset(actions)


def _parse_rule(source: str, position: int, raw: Any) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source}: rule #{position} is not a mapping")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        raise PolicyError(
            f"{source}: rule #{position}, field 'id': expected lower-case letters, digits, "
            f"'-' or '_', got {rule_id!r}"
        )
    unknown = sorted(set(map(str, raw)) - set(RULE_FIELDS))
    if unknown:
        raise _fail(
            source, rule_id, unknown[0], f"unknown field; a rule has {', '.join(RULE_FIELDS)}"
        )
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise _fail(source, rule_id, "description", "say in words what the rule is for")
    effect = raw.get("effect")
    if effect not in EFFECTS:
        raise _fail(source, rule_id, "effect", f"unknown effect {effect!r}; expected allow or deny")
    actions = _parse_actions(source, rule_id, raw.get("actions"))
    conditions = raw.get("conditions")
    if not isinstance(conditions, Mapping):
        raise _fail(source, rule_id, "conditions", "expected a mapping of attribute to test")
    if effect == "allow" and not conditions:
        raise _fail(source, rule_id, "conditions", "an allow rule needs at least one condition")
    parsed = tuple(
        _parse_condition(source, rule_id, attribute, spec) for attribute, spec in conditions.items()
    )
    return Rule(rule_id, description.strip(), effect, actions, parsed)


def parse_policy(document: Any, source: str = "<memory>") -> Policy:
    """Validate a parsed policy document (``{version: 1, rules: [...]}``)."""
    if document is None:
        raise PolicyError(f"{source}: the policy file is empty")
    if not isinstance(document, Mapping):
        raise PolicyError(f"{source}: expected a mapping with 'version' and 'rules'")
    if document.get("version") != 1:
        raise PolicyError(f"{source}: field 'version': expected 1, got {document.get('version')!r}")
    unknown = sorted(set(map(str, document)) - {"version", "rules"})
    if unknown:
        raise PolicyError(f"{source}: unknown top-level field {unknown[0]!r}")
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{source}: field 'rules': expected a non-empty list of rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(source, position, raw)
        if rule.id in seen:
            raise _fail(source, rule.id, "id", "duplicate rule id")
        seen.add(rule.id)
        rules.append(rule)
    return Policy(tuple(rules), source)


def load_policy(path: str | os.PathLike[str] = DEFAULT_POLICY_PATH) -> Policy:
    """Read and validate a policy file; any problem raises :class:`PolicyError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"{source}: cannot read the policy file ({error.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{source}: not valid YAML ({error})") from None
    return parse_policy(document, source)


# --- audit -----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _as_utc(value).isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


_audit_line = functools.partial(json.dumps, sort_keys=True)


class AuditLog:
    """Append-only JSON lines, one per decision, each flushed and fsynced before returning.

    ``fsync=False`` (the service's data plane, one line per request) flushes each line to the
    operating system without waiting for the disk: a crashed process loses nothing, a crashed
    machine may lose the last lines still in the page cache. That saves ~0.2 ms per request.

    Each line is one ``os.write`` on an ``O_APPEND`` descriptor, without a file lock and without
    looking for a torn last line (:class:`~recsys_assets.core.jsonl.JsonlWriter`, ``lock`` and
    ``seal`` off); a new file gets the permissions ``open()`` would give it. :meth:`entries`
    raises on a line that is not JSON.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._writer = jsonl.JsonlWriter(
            self.path, dumps=_audit_line, durable=fsync, lock="never", seal=None, mode=0o666
        )
        self._lock = threading.Lock()

    @property
    def fsync(self) -> bool:
        """Whether each line is fsynced before :meth:`record` returns."""
        return self._writer.durable

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def record(
        self,
        subject: Subject | None,
        action: str,
        resource: Resource,
        decision: Decision,
        *,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        entry = {
            "time": _as_utc(now or datetime.now(UTC)).isoformat(),
            "subject": subject.id if subject else None,
            "subject_attributes": subject.public_attributes() if subject else {},
            "action": action,
            "resource": {name: _jsonable(value) for name, value in resource.attributes.items()},
            "effect": decision.effect,
            "rule_id": decision.rule_id,
            "reason": decision.reason,
        }
        with self._lock:
            self._writer.append([entry])
        return entry

    def entries(self) -> list[dict[str, Any]]:
        return jsonl.read_records(self.path, strict=True)


UNAUTHENTICATED = "unauthenticated"


def authorize(
    policy: Policy,
    subject: Subject | None,
    action: str,
    resource: Resource,
    audit: AuditLog,
    *,
    now: datetime | None = None,
) -> Decision:
    """Decide and record in one call. No subject (unknown key) is denied and recorded too."""
    now = now or datetime.now(UTC)
    if subject is None:
        decision = Decision(False, None, UNAUTHENTICATED)
    else:
        decision = policy.decide(subject, action, resource, now=now)
    audit.record(subject, action, resource, decision, now=now)
    return decision


# --- credentials -----------------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is kept; the key itself is never stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Credential:
    """A subject's credential: who it names, its attributes and when it stops working."""

    subject_id: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen(self.attributes))

    def is_expired(self, now: datetime | None = None) -> bool:
        return credential_expired(self.expires_at, now or datetime.now(UTC))

    def subject(self) -> Subject:
        """The subject, with the expiry as an attribute the engine checks on every decision."""
        return Subject(self.subject_id, {**self.attributes, "expires_at": self.expires_at})


def parse_api_keys(
    value: str, *, variable: str = API_KEYS_VAR, attributes: Mapping[str, Any] | None = None
) -> dict[str, Subject]:
    """Parse ``<key>:<subject_id>:<role>[:<expires ISO>];...`` into ``{sha256(key): Subject}``.

    API-key subjects carry ``authenticated_by: api_key`` and no ``kind`` (unless ``attributes``
    adds one: control-plane keys are issued to people), so rules that need a human or the
    pipeline's service identity never match a data-plane key. Errors name ``variable``, the
    entry's position (and the subject id once the key is split off), never the key.
    """
    keys: dict[str, Subject] = {}
    for position, entry in enumerate(value.split(";"), start=1):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":", 3)
        if len(parts) < 3:
            raise CredentialError(
                f"{variable} entry #{position}: expected <key>:<subject_id>:<role>[:<expires ISO>]"
            )
        key, subject_id, role = (part.strip() for part in parts[:3])
        if len(key) < MIN_API_KEY_LENGTH:
            raise CredentialError(
                f"{variable} entry #{position}: the key is shorter than "
                f"{MIN_API_KEY_LENGTH} characters"
            )
        if not subject_id or not role:
            raise CredentialError(f"{variable} entry #{position}: empty subject id or role")
        expires_at = None
        if len(parts) == 4 and parts[3].strip():
            try:
                expires_at = _as_utc(datetime.fromisoformat(parts[3].strip()))
            except ValueError:
                raise CredentialError(
                    f"{variable} entry #{position} ({subject_id}): the expiry is not an ISO "
                    "date-time"
                ) from None
        key_hash = hash_api_key(key)
        if key_hash in keys:
            raise CredentialError(
                f"{variable} entry #{position} ({subject_id}): the key is already used by "
                f"{keys[key_hash].id}"
            )
        credential = Credential(
            subject_id,
            {**(attributes or {}), "role": role, "authenticated_by": "api_key"},
            expires_at,
        )
        keys[key_hash] = credential.subject()
    return keys


def api_keys_from_environment(
    environ: Mapping[str, str] | None = None,
    *,
    variable: str = API_KEYS_VAR,
    file_variable: str = API_KEYS_FILE_VAR,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Subject]:
    """The API keys of this deployment: ``RECSYS_API_KEYS``, or the file ``RECSYS_API_KEYS_FILE``
    (other names for other planes' keys: ``variable``, ``file_variable``).

    Neither set: no keys, so every request is unauthenticated (fail closed). Both set: an error,
    rather than guessing which secret is meant.
    """
    environ = os.environ if environ is None else environ
    inline, file_name = environ.get(variable), environ.get(file_variable)
    if inline and file_name:
        raise CredentialError(f"set {variable} or {file_variable}, not both")
    if file_name:
        try:
            text = Path(file_name).read_text(encoding="utf-8").replace("\n", ";")
        except OSError as error:
            raise CredentialError(
                f"{file_variable}: cannot read {file_name} ({error.strerror})"
            ) from None
        return parse_api_keys(text, variable=file_variable, attributes=attributes)
    return parse_api_keys(inline or "", variable=variable, attributes=attributes)


def subject_for_api_key(keys: Mapping[str, Subject], presented: str | None) -> Subject | None:
    """The subject a presented key belongs to, or None (the caller answers 401).

    Every stored hash is compared in constant time, without stopping at a match.
    """
    if not presented:
        return None
    presented_hash = hash_api_key(presented)
    found: Subject | None = None
    for key_hash, subject in keys.items():
        if hmac.compare_digest(key_hash, presented_hash):
            found = subject
    return found


# --- the data plane: API keys on HTTP requests -----------------------------------------------

# Where the service must have keys: without them it refuses readiness. In dev and test it then
# serves openly (and says so once at start), so local runs and the test suite need no secret.
KEYS_REQUIRED_ENVIRONMENTS = ("acceptance", "prod")
AUDIT_LOG_VAR = variables.AUDIT_LOG.name
AUDIT_LOG_NAME = "audit.jsonl"
NOT_CONFIGURED = "access control not configured"


def audit_log_path(
    feedback_log: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> Path:
    """Where the service audits its decisions: ``$RECSYS_AUDIT_LOG`` if set, else
    ``audit.jsonl`` in the feedback log's folder (``settings.feedback_log``)."""
    environ = os.environ if environ is None else environ
    value = environ.get(AUDIT_LOG_VAR)
    return Path(value) if value else Path(feedback_log).parent / AUDIT_LOG_NAME


def bearer_token(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (the scheme in any case), or None
    for a missing header, another scheme, an empty key or a key with whitespace inside."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(char.isspace() for char in token):
        return None
    return token


@dataclass(frozen=True)
class Admission:
    """A data-plane request's answer: the HTTP status to give (200: go on; 401: no valid key;
    403: a known subject the policy denies; 503: access control is not configured) and the
    decision that was audited (None when the gate is open)."""

    status: int
    decision: Decision | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


class DataPlaneGate:
    """API keys and the policy on the service's endpoints, set up once per process.

    Keys are parsed (hashed) once; each request costs one SHA-256, a constant-time comparison
    per key, one policy evaluation and one audit line (flushed, not fsynced). Three states:

    - **enforced**: keys are configured; every request is decided and audited.
    - **open** (dev and test without keys): every request passes, nothing is audited; the
      caller warns once at start (:attr:`warning`).
    - **not configured** (no keys in acceptance or prod, a malformed key secret, an unreadable
      policy): not ready (:attr:`error`, which never holds a key) and every request is refused
      with 503 and audited.
    """

    def __init__(
        self,
        environment: str,
        keys: Mapping[str, Subject],
        policy: Policy | None,
        audit: AuditLog | None,
        *,
        error: str | None = None,
    ) -> None:
        self.environment = str(environment)
        self._keys = dict(keys)
        self.policy = policy
        self.audit = audit
        self.error = error
        self.enforced = bool(self._keys) or error is not None
        self._resources = {
            action: Resource.for_action(action, self.environment) for action in ACTIONS
        }

    def __repr__(self) -> str:
        state = "not configured" if self.error else "enforced" if self.enforced else "open"
        return f"DataPlaneGate({self.environment}, {state}, {len(self._keys)} keys)"

    @classmethod
    def from_environment(
        cls,
        environment: str,
        audit_path: str | os.PathLike[str],
        *,
        environ: Mapping[str, str] | None = None,
        policy_path: str | os.PathLike[str] = DEFAULT_POLICY_PATH,
    ) -> DataPlaneGate:
        """The gate of this deployment: keys from ``RECSYS_API_KEYS`` or ``RECSYS_API_KEYS_FILE``
        (see :func:`api_keys_from_environment`), the policy file, the audit log. Never raises
        for a configuration problem: it returns a gate that is not ready, naming the problem."""
        environment = str(environment)
        audit = AuditLog(audit_path, fsync=False)  # a line per request: see AuditLog
        try:
            keys = api_keys_from_environment(environ)
        except CredentialError as error:  # the message names positions and subjects, no key
            return cls(environment, {}, None, audit, error=f"{NOT_CONFIGURED}: {error}")
        if not keys and environment not in KEYS_REQUIRED_ENVIRONMENTS:
            return cls(environment, {}, None, None)  # open
        if not keys:
            return cls(
                environment,
                {},
                None,
                audit,
                error=(
                    f"{NOT_CONFIGURED}: no API keys in {environment}; set {API_KEYS_FILE_VAR} "
                    f"(a mounted secret file) or {API_KEYS_VAR}"
                ),
            )
        try:
            policy = load_policy(policy_path)
        except PolicyError as error:
            return cls(environment, {}, None, audit, error=f"{NOT_CONFIGURED}: {error}")
        return cls(environment, keys, policy, audit)

    @property
    def ready(self) -> bool:
        return self.error is None

    @property
    def warning(self) -> str | None:
        """Why the gate is open, for one warning at start; None when it is not."""
        if self.enforced:
            return None
        return (
            f"no API keys ({API_KEYS_VAR} / {API_KEYS_FILE_VAR}): serving without "
            f"authentication in {self.environment}; acceptance and prod refuse readiness "
            "without keys"
        )

    def admit(
        self, action: str, authorization: str | None, *, now: datetime | None = None
    ) -> Admission:
        """Decide one request for ``action`` from its ``Authorization`` header, audit it and
        say which status to answer. An audit log that cannot be written raises ``OSError``:
        the caller refuses the request (503) rather than act unaudited."""
        if not self.enforced:
            return Admission(200)
        resource = self._resources.get(action)
        if resource is None:  # a route mapped to an action the engine does not know
            resource = Resource({"environment": self.environment})
        if self.error is not None or self.policy is None or self.audit is None:
            decision = Decision(False, None, NOT_CONFIGURED)
            if self.audit is not None:
                self.audit.record(None, action, resource, decision, now=now)
            return Admission(503, decision)
        token = bearer_token(authorization)
        subject = subject_for_api_key(self._keys, token) if token else None
        decision = authorize(self.policy, subject, action, resource, self.audit, now=now)
        if decision.allowed:
            return Admission(200, decision)
        return Admission(401 if subject is None else 403, decision)
