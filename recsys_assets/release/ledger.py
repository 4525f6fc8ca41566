"""Release bundles and their ledger: what serves in each environment, who put it there and why.

A *release* is one bundle: a model version from the registry (BentoML model store) with its
bento (may be null), the feature service it was trained and is served with, the data versions
of its lineage and its evaluation (metrics, the Dagster run that evaluated and promoted it). It
enters the environments in order, dev -> test -> acceptance -> prod: the pipeline releases into
its own environment (never prod: the policy keeps it out), a person moves the current release
of environment N-1 into N (:func:`promote_release`), and a rollback takes the whole bundle back
(:func:`rollback_release`), the registry of that environment included.

The ledger is one append-only JSON-lines file for every environment (``RECSYS_RELEASE_LEDGER``,
default ``data/releases/ledger.jsonl``): releases move between environments, so one file holds
the whole path of a model. Two kinds of lines: ``release`` (a bundle entered an environment)
and ``rolled_back`` (a release was taken back: by whom, when, why). The state of an environment
is the fold of its lines (:func:`fold`): the newest release not rolled back is current. Writes
take an exclusive lock for the whole check-and-append and fsync, like the loop log.

Each environment has its own BentoML home: ``RECSYS_BENTOML_HOME_<ENV>`` if set, else
``BENTOML_HOME`` for the environment this process runs in (``RECSYS_ENV``), else
``data/bentoml/<env>``. Models are copied between homes through BentoML store objects, so one
process reads and writes every environment's store whatever its own ``BENTOML_HOME``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys_assets.access.control import authorize_control, control_audit_path
from recsys_assets.access.policy import Subject
from recsys_assets.config import variables
from recsys_assets.config.settings import PROJECT_ROOT, Environment, get_settings
from recsys_assets.core import constants as c
from recsys_assets.core import jsonl
from recsys_assets.monitoring import loop
from recsys_assets.serving import registry

LEDGER_VAR = variables.RELEASE_LEDGER.name
DEFAULT_LEDGER = PROJECT_ROOT / "data" / "releases" / "ledger.jsonl"
HOME_VAR_PREFIX = variables.BENTOML_HOME_PER_ENV.prefix  # + DEV, TEST, ACCEPTANCE, PROD
ORDER: tuple[str, ...] = tuple(e.value for e in Environment)  # dev -> test -> acceptance -> prod
PROD = Environment.PROD.value

# Ledger line kinds, and the status a fold gives each release.
RELEASE = "release"  # a bundle entered an environment
ROLLED_BACK = "rolled_back"  # a release was taken back (line and status)
CURRENT = "current"  # the newest release of its environment not rolled back
SUPERSEDED = "superseded"  # a newer release of its environment took over


_dumps = functools.partial(json.dumps, separators=(",", ":"), default=str)  # a ledger line


class ReleaseError(ValueError):
    """A release or rollback that cannot be done as asked (nothing was written)."""


# --- where things are ------------------------------------------------------------------------


def ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """The release ledger: ``$RECSYS_RELEASE_LEDGER`` or ``data/releases/ledger.jsonl``."""
    environ = os.environ if environ is None else environ
    value = variables.RELEASE_LEDGER.read(environ)
    return Path(value) if value else DEFAULT_LEDGER


def _check_environment(environment: str) -> str:
    if environment not in ORDER:
        raise ReleaseError(f"{environment!r} is not an environment; use one of {list(ORDER)}")
    return environment


def environment_home(environment: str, environ: Mapping[str, str] | None = None) -> Path:
    """The BentoML home of ``environment``: ``RECSYS_BENTOML_HOME_<ENV>``, else ``BENTOML_HOME``
    when it is this process's environment, else the settings' default ``data/bentoml/<env>``."""
    environ = os.environ if environ is None else environ
    _check_environment(environment)
    explicit = variables.BENTOML_HOME_PER_ENV.read(environment, environ)
    if explicit:
        return Path(explicit)
    own, home = variables.ENV.read(environ), variables.BENTOML_HOME.read(environ)
    if environment == own and home:
        return Path(home)
    return PROJECT_ROOT / "data" / "bentoml" / environment


def environment_audit_path(environment: str) -> Path:
    """The control-plane audit log of ``environment`` (beside its loop log)."""
    return control_audit_path(get_settings(environment).loop_log)


# --- the ledger: reading, folding, appending -------------------------------------------------


def _ledger_lines(records: Iterable[Any]) -> list[dict[str, Any]]:
    """The ledger's lines among parsed records (torn lines are already left out)."""
    return [
        record
        for record in records
        if isinstance(record, dict) and record.get("event") in (RELEASE, ROLLED_BACK)
    ]


def read_ledger(ledger: str | Path | None = None) -> list[dict[str, Any]]:
    """Every well-formed ledger line in the order written ([] when there is no ledger)."""
    path = ledger_path() if ledger is None else Path(ledger)
    return _ledger_lines(jsonl.read_records(path))


def _locked(path: Path) -> AbstractContextManager[jsonl.LockedJsonl[Mapping[str, Any]]]:
    """The ledger under an exclusive lock until the block ends: read it (``records()``), then
    append whole lines, each fsynced; a crashed writer's fragment is ended with a bare newline
    so it stays a line apart (like the loop log)."""
    writer = jsonl.JsonlWriter[Mapping[str, Any]](path, dumps=_dumps, durable=True, seal="newline")
    return writer.locked()


def fold(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Releases in ledger order with their ``status`` (current, superseded, rolled_back) and,
    once rolled back, ``rolled_back`` (by, at, reason, to_release_id). Pure."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("event") == RELEASE:
            found[record["release_id"]] = {**record, "status": SUPERSEDED, "rolled_back": None}
        elif record.get("event") == ROLLED_BACK and record.get("release_id") in found:
            release = found[record["release_id"]]
            release["status"] = ROLLED_BACK
            release["rolled_back"] = {
                k: record.get(k) for k in ("by", "at", "reason", "to_release_id")
            }
    latest: dict[str, dict[str, Any]] = {}
    for release in found.values():
        if release["status"] != ROLLED_BACK:
            latest[release["environment"]] = release
    for release in latest.values():
        release["status"] = CURRENT
    return list(found.values())


def releases(
    environment: str | None = None, *, ledger: str | Path | None = None
) -> list[dict[str, Any]]:
    """Every release (of ``environment``, or all), oldest first, with its status."""
    folded = fold(read_ledger(ledger))
    return [r for r in folded if environment is None or r["environment"] == environment]


def _current(folded: Iterable[Mapping[str, Any]], environment: str) -> dict[str, Any] | None:
    for release in folded:
        if release["environment"] == environment and release["status"] == CURRENT:
            return dict(release)
    return None


def current_release(environment: str, *, ledger: str | Path | None = None) -> dict[str, Any] | None:
    """The release serving in ``environment`` (newest not rolled back), or None."""
    return _current(fold(read_ledger(ledger)), _check_environment(environment))


# --- release records -------------------------------------------------------------------------


def now_utc() -> str:
    """The wall clock in ISO 8601 UTC, as ledger lines stamp it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def subject_record(subject: Subject) -> dict[str, Any]:
    """Who released or rolled back, as the ledger keeps it: id, role and kind (no secret)."""
    return {"id": subject.id, "role": subject.role, "kind": subject.kind}


def bundle_from_registry(version: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle fields a registry entry (:func:`model_registry.model_versions`) carries: the
    model, its feature service (name and Feast registry version), its data versions (training
    data, ranker, code, data end, each partition's tables) and its evaluation, named as
    :func:`record_release` takes them. Pure."""
    metadata = dict(version.get("metadata") or {})
    lineage = dict(metadata.get("lineage") or {})
    partitions: dict[str, dict[str, Any]] = {}
    for row in lineage.get("partitions") or []:
        if isinstance(row, dict) and row.get("partition"):
            partitions[str(row["partition"])] = {
                key.split(".", 1)[0]: value
                for key, value in row.items()
                if key.endswith(".data_version") and value not in (None, "")
            }
    latency = metadata.get("latency") or {}
    return {
        "model_tag": str(version["tag"]),
        "model_version": str(version["version"]),
        "feature_service": {
            "name": lineage.get("feature_service"),
            "version": lineage.get("feature_registry_version"),
        },
        "data_versions": {
            "train_data_version": lineage.get("train_data_version"),
            "ranker_version": lineage.get("ranker_version"),
            "code_version": lineage.get("code_version"),
            "data_end": metadata.get("data_end"),
            "partitions": partitions,
        },
        "evaluation": {
            "metrics": dict(metadata.get("metrics") or {}),
            "latency_p99_ms": latency.get("p99_ms") if isinstance(latency, dict) else None,
            "dagster_run_id": metadata.get("dagster_run_id"),
            "evaluated_at": metadata.get("promoted_at"),
            "sha256": metadata.get("sha256"),
        },
    }


def _release_id(environment: str, model_version: str) -> str:
    return f"{environment}-{model_version[:12]}-{uuid.uuid4().hex[:6]}"


def _release_record(
    *,
    environment: str,
    bundle: Mapping[str, Any],
    bento_tag: str | None,
    from_environment: str | None,
    released_by: Subject,
    reason: str,
    now: str | None,
) -> dict[str, Any]:
    return {
        "event": RELEASE,
        "release_id": _release_id(environment, str(bundle["model_version"])),
        "environment": environment,
        "model_tag": bundle["model_tag"],
        "model_version": bundle["model_version"],
        "bento_tag": bento_tag,
        "feature_service": dict(bundle.get("feature_service") or {}),
        "data_versions": dict(bundle.get("data_versions") or {}),
        "evaluation": dict(bundle.get("evaluation") or {}),
        "from_environment": from_environment,
        "released_by": subject_record(released_by),
        "released_at": now or now_utc(),
        "reason": reason,
    }


def record_release(
    *,
    environment: str,
    model_tag: str,
    model_version: str,
    bento_tag: str | None,
    feature_service: Mapping[str, Any],
    data_versions: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    released_by: Subject,
    reason: str,
    from_environment: str | None = None,
    ledger: str | Path | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Append a release line (the pipeline's release into its own environment; promotions go
    through :func:`promote_release`) and return it. Recording the environment's current
    bundle again (same model and bento) appends nothing and returns the current release."""
    _check_environment(environment)
    bundle = {"model_tag": model_tag, "model_version": model_version,
              "feature_service": feature_service, "data_versions": data_versions,
              "evaluation": evaluation}  # fmt: skip
    path = ledger_path() if ledger is None else Path(ledger)
    with _locked(path) as held:
        current = _current(fold(_ledger_lines(held.records())), environment)
        if current and (current["model_version"], current["bento_tag"]) == (
            model_version,
            bento_tag,
        ):
            return current
        record = _release_record(
            environment=environment, bundle=bundle, bento_tag=bento_tag,
            from_environment=from_environment, released_by=released_by, reason=reason, now=now,
        )  # fmt: skip
        held.append([record])
    return {**record, "status": CURRENT, "rolled_back": None}


def bento_built_for(model_version: str, home: str | Path) -> str | None:
    """The newest bento the pipeline built for ``model_version`` in the store under ``home``
    (``recommender:<model version>-<source hash>``), None when there is none."""
    folder = Path(home) / "bentos" / c.BENTO_NAME
    built = sorted(folder.glob(f"{model_version}-*"), key=lambda p: p.stat().st_mtime)
    return f"{c.BENTO_NAME}:{built[-1].name}" if built else None


def release_canary_winner(
    model_tag: str,
    environment: str,
    *,
    released_by: Subject,
    reason: str,
    ledger: str | Path | None = None,
) -> dict[str, Any] | None:
    """Record a challenger the canary promoted as ``environment``'s release: its bundle from
    the environment's registry and the bento built for it, ``released_by`` who promoted it.
    The canary already serves it to every customer; without this line the ledger would still
    name the old champion, and a rollback would go to the wrong bundle. None when the model is
    not in the registry. The promotion's door is
    :func:`recsys_assets.release.canary.actions.promote_challenger`: it asks the policy's
    ``promote`` for ``released_by`` (audited) before it changes anything, this among it."""
    home = environment_home(environment)
    entry = next((v for v in registry.model_versions(home=home) if v["tag"] == model_tag), None)
    if entry is None:
        return None
    return record_release(
        environment=environment,
        bento_tag=bento_built_for(entry["version"], home),
        released_by=released_by,
        reason=reason,
        ledger=ledger,
        **bundle_from_registry(entry),
    )


# --- promotion: environment N-1 -> N ---------------------------------------------------------


def _bare_version(version: str) -> str:
    """``recsys-ranker:abc`` or ``abc`` -> ``abc``."""
    return version.split(":", 1)[1] if ":" in version else version


def _check_promotion(
    folded: list[dict[str, Any]], version: str, from_env: str, to_env: str
) -> dict[str, Any]:
    """The release of ``from_env`` that may enter ``to_env``; raises :class:`ReleaseError`."""
    _check_environment(from_env)
    _check_environment(to_env)
    position = ORDER.index(to_env)
    if position == 0 or ORDER[position - 1] != from_env:
        expected = f"from {ORDER[position - 1]}" if position else "by the pipeline only"
        raise ReleaseError(
            f"cannot promote from {from_env} to {to_env}: releases go "
            f"{' -> '.join(ORDER)}, so {to_env} is entered {expected}"
        )
    source = _current(folded, from_env)
    if source is None:
        raise ReleaseError(
            f"cannot promote {version} from {from_env} to {to_env}: {from_env} has no current "
            "release"
        )
    if source["model_version"] != version:
        raise ReleaseError(
            f"cannot promote {version} from {from_env} to {to_env}: only the current release of "
            f"{from_env} may enter {to_env}, and that is {source['model_version']} "
            f"({source['release_id']})"
        )
    target = _current(folded, to_env)
    if target is not None and target["model_version"] == version:
        raise ReleaseError(
            f"{version} is already the current release of {to_env} ({target['release_id']})"
        )
    return source


def _registry_entry(version: str, home: Path, environment: str) -> dict[str, Any]:
    for entry in registry.model_versions(home=home):
        if entry["version"] == version:
            return entry
    raise ReleaseError(f"{version} is not in the registry of {environment} ({home})")


def _copy_model(entry: Mapping[str, Any], source: Path, target: Path) -> str:
    """Copy a model (its folder: files, labels, metadata, checksum) into another store."""
    import bentoml

    destination = registry.model_store(target)
    try:
        destination.get(entry["tag"])
    except bentoml.exceptions.NotFound:
        (target / "models").mkdir(parents=True, exist_ok=True)
        registry.model_store(source).get(entry["tag"]).save(destination)
    return str(entry["tag"])


def _copy_bento(tag: str | None, source: Path, target: Path) -> str | None:
    """Copy a bento's folder into another home; None when there is none to copy."""
    if not tag or ":" not in tag:
        return None
    name, version = tag.split(":", 1)
    origin = source / "bentos" / name / version
    if not origin.is_dir():
        return None
    destination = target / "bentos" / name / version
    if not destination.exists():
        shutil.copytree(origin, destination)
        (destination.parent / "latest").write_text(version)
    return tag


def promote_release(
    version: str,
    *,
    from_env: str,
    to_env: str,
    subject: Subject | None,
    reason: str,
    ledger: str | Path | None = None,
    audit_path: str | Path | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Move the current release of ``from_env`` (model ``version``) into ``to_env``, the next
    environment: checked (order, current release, model in the source store), authorized
    (policy action ``promote`` in ``to_env``, audited), then the model (and its bento) copied
    into the target store and marked promoted there, and the release recorded. Promoted
    versions of the target created after this one are marked rolled back, so the registry's
    champion is the release. Bad input raises :class:`ReleaseError` and writes nothing; a deny
    raises :class:`~recsys_assets.access.control.AccessDenied` after its audit line."""
    version = _bare_version(version)
    path = ledger_path() if ledger is None else Path(ledger)
    _check_promotion(fold(read_ledger(path)), version, from_env, to_env)
    source_home, target_home = environment_home(from_env), environment_home(to_env)
    entry = _registry_entry(version, source_home, from_env)
    authorize_control(
        subject, "promote", to_env,
        audit_path=audit_path or environment_audit_path(to_env),
        model_version=version, from_environment=from_env,
    )  # fmt: skip
    with _locked(path) as held:
        source = _check_promotion(fold(_ledger_lines(held.records())), version, from_env, to_env)
        tag = _copy_model(entry, source_home, target_home)
        record = _release_record(
            environment=to_env, bundle=bundle_from_registry(entry),
            bento_tag=_copy_bento(source.get("bento_tag"), source_home, target_home),
            from_environment=from_env, released_by=subject, reason=reason, now=now,
        )  # fmt: skip
        newer = [
            v for v in registry.promoted_versions(home=target_home)
            if _ts(v["created"]) > _ts(entry["created"]) and v["version"] != version
        ]  # fmt: skip
        for stale in newer:
            registry.set_stage(
                stale["tag"], registry.ROLLED_BACK, home=target_home, rolled_back_to=version,
                rollback_reason=f"superseded_by_{record['release_id']}",
            )  # fmt: skip
        registry.set_stage(
            tag, registry.PROMOTED, home=target_home, environment=to_env,
            promoted_from=from_env, release_id=record["release_id"],
        )  # fmt: skip
        held.append([record])
    return {**record, "status": CURRENT, "rolled_back": None}


# --- rollback of a bundle --------------------------------------------------------------------


def _check_rollback(
    folded: list[dict[str, Any]], environment: str, to_release_id: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The release to return to and the releases to roll back (newest last)."""
    _check_environment(environment)
    active = [r for r in folded if r["environment"] == environment and r["status"] != ROLLED_BACK]
    if not active:
        raise ReleaseError(f"nothing to roll back in {environment}: it has no release")
    if to_release_id is None:
        if len(active) < 2:
            raise ReleaseError(
                f"nothing to roll back in {environment}: {active[-1]['release_id']} is its only "
                "release not rolled back"
            )
        index = len(active) - 2
    else:
        ids = [r["release_id"] for r in active]
        if to_release_id not in ids:
            raise ReleaseError(
                f"{to_release_id!r} is not a release of {environment} that can serve again; "
                f"releases not rolled back: {ids}"
            )
        index = ids.index(to_release_id)
        if index == len(active) - 1:
            raise ReleaseError(f"{to_release_id} is already the current release of {environment}")
    return active[index], active[index + 1 :]


def rollback_release(
    environment: str,
    *,
    subject: Subject | None,
    reason: str,
    to_release_id: str | None = None,
    ledger: str | Path | None = None,
    audit_path: str | Path | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Take the current release of ``environment`` back (and any after ``to_release_id``):
    authorized (policy action ``rollback``, audited); the environment's registry returns to
    the target release's model (:func:`model_registry.rollback`) and the ledger records a
    ``rolled_back`` line per release taken back, so the target is current again and its bento
    is the one to serve. Returns ``{environment, from, to, rolled_back (release ids),
    rolled_back_versions, registry, bento_tag}``. Bad input raises :class:`ReleaseError` and
    writes nothing."""
    path = ledger_path() if ledger is None else Path(ledger)
    target, _ = _check_rollback(fold(read_ledger(path)), environment, to_release_id)
    home = environment_home(environment)
    entry = _registry_entry(target["model_version"], home, environment)
    authorize_control(
        subject, "rollback", environment,
        audit_path=audit_path or environment_audit_path(environment),
        model_version=target["model_version"], release_id=target["release_id"],
    )  # fmt: skip
    at = now or now_utc()
    with _locked(path) as held:
        folded = fold(_ledger_lines(held.records()))
        target, taken_back = _check_rollback(folded, environment, to_release_id)
        if entry["stage"] != registry.PROMOTED:  # taken back in the registry alone earlier
            registry.set_stage(entry["tag"], registry.PROMOTED, home=home)
        champion = registry.current_promoted(home=home)
        done = None
        if champion is not None and champion["version"] != target["model_version"]:
            done = registry.rollback(target["model_version"], reason=reason, home=home)
        for release in reversed(taken_back):
            held.append([{
                "event": ROLLED_BACK, "release_id": release["release_id"],
                "environment": environment, "model_version": release["model_version"],
                "to_release_id": target["release_id"], "by": subject_record(subject),
                "at": at, "reason": reason,
            }])  # fmt: skip
    return {
        "environment": environment,
        "from": taken_back[-1],
        "to": target,
        "rolled_back": [r["release_id"] for r in taken_back],
        "rolled_back_versions": [r["model_version"] for r in taken_back],
        "registry": done,
        "bento_tag": target.get("bento_tag"),
    }


# --- KPIs ------------------------------------------------------------------------------------


def _ts(value: str) -> datetime:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stats(values: list[float]) -> dict[str, Any]:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return {
        "count": len(known),
        "mean_s": sum(known) / len(known) if known else None,
        "latest_s": known[-1] if known else None,
    }


def release_kpis(
    records: Iterable[Mapping[str, Any]], loop_events: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """From the ledger and the loop logs: the share of releases rolled back (overall and per
    environment, with counts) and deployment velocity, training finished (the first
    ``training_finished`` of the model version) -> serving in prod (the prod release), per prod
    release in ``history``. Pure."""
    folded = fold(records)

    def share(items: list[dict[str, Any]]) -> dict[str, Any]:
        rolled = sum(1 for r in items if r["status"] == ROLLED_BACK)
        return {"releases": len(items), "rolled_back": rolled,
                "share": rolled / len(items) if items else None}  # fmt: skip

    trained: dict[str, datetime] = {}
    for event in loop_events:
        version = event.get("model_version")
        if event.get("kind") == loop.TRAINING_FINISHED and version and event.get("ts"):
            moment = _ts(event["ts"])
            trained[version] = min(trained.get(version, moment), moment)
    history = []
    for release in folded:
        if release["environment"] != PROD:
            continue
        finished = trained.get(release["model_version"])
        released = _ts(release["released_at"])
        seconds = (released - finished).total_seconds() if finished else None
        history.append({
            "release_id": release["release_id"], "model_version": release["model_version"],
            "training_finished": finished.isoformat() if finished else None,
            "released_at": release["released_at"], "velocity_s": seconds,
            "status": release["status"],
        })  # fmt: skip
    return {
        "rollback": {
            **share(folded),
            "by_environment": {
                env: share([r for r in folded if r["environment"] == env]) for env in ORDER
            },
        },
        "velocity": {**_stats([h["velocity_s"] for h in history]), "history": history},
    }


def loop_events_of_every_environment() -> list[dict[str, Any]]:
    """The loop events of every environment's log (each file read once)."""
    paths = dict.fromkeys(get_settings(env).loop_log for env in ORDER)
    return [event for path in paths for event in loop.LoopLog(path).read()]


# --- tables ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value).replace("|", "/")


def _by(release: Mapping[str, Any]) -> str:
    who = release.get("released_by") or {}
    return f"{who.get('id')} ({who.get('role')}, {who.get('kind')})"


def current_rows(folded: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per environment, in release order: its current release (or none)."""
    folded = list(folded)
    rows = []
    for env in ORDER:
        release = _current(folded, env) or {}
        ndcg = (release.get("evaluation") or {}).get("metrics", {}).get("ndcg")
        rows.append({
            "environment": env, "release_id": release.get("release_id"),
            "model_version": release.get("model_version"), "bento_tag": release.get("bento_tag"),
            "feature_service": "/".join(
                str(v) for v in (release.get("feature_service") or {}).values() if v
            ) or None,
            f"ndcg@{c.DEFAULT_K}": round(ndcg, 4) if isinstance(ndcg, int | float) else None,
            "from": release.get("from_environment"),
            "released_by": _by(release) if release else None,
            "released_at": release.get("released_at"),
        })  # fmt: skip
    return rows


def history_rows(folded: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every release, oldest first, with its status and why it was released or taken back."""
    rows = []
    for release in folded:
        back = release.get("rolled_back") or {}
        rows.append({
            "released_at": release["released_at"], "environment": release["environment"],
            "release_id": release["release_id"], "model_version": release["model_version"],
            "status": release["status"], "released_by": _by(release),
            "reason": release.get("reason"),
            "rolled_back": (f"{back.get('at')} by {(back.get('by') or {}).get('id')}: "
                            f"{back.get('reason')}") if back else None,
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (same keys each), '-' for missing values."""
    if not rows:
        return "_none_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join(lines)
