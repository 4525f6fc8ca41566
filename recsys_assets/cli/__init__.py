"""Command line: ``python -m recsys_assets demo`` runs the pipeline end to end on local files;
``simulate`` runs the closed loop on the synthetic shop, ``loop`` prints its decisions.

Runs go through a persistent Dagster instance (``DAGSTER_HOME``, default ``.dagster_home/``),
so everything the demo did is visible afterwards in the UI that ``make dev`` opens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from recsys_assets.config.settings import DATA_CONFIG_VAR, PROJECT_ROOT

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
# The demo prints its own summary; Dagster's step-by-step log stays in the run's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def prepare_dagster_home() -> Path:
    """Use ``DAGSTER_HOME`` or ``.dagster_home/``, seeded with the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME)))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def run_ingestion(partition_keys: list[str] | None = None) -> list[dict[str, object]]:
    """Materialise the ingestion job for each partition (all by default); one row per run."""
    import dagster as dg

    from recsys_assets.definitions import defs

    job = defs.resolve_job_def("ingestion_job")
    keys = partition_keys or job.partitions_def.get_partition_keys()
    instance = dg.DagsterInstance.get()
    rows = []
    for key in keys:
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        rows.append(
            {
                "partition": key,
                "ok": result.success,
                **_row_counts(result),
                "seconds": round(time.perf_counter() - started, 2),
                "error": _failure(result),
            }
        )
    return rows


def run_job(
    name: str, tags: dict[str, str] | None = None, run_config: dict | None = None
) -> tuple[bool, dict[str, dict[str, object]], str | None]:
    """Run an unpartitioned job once: (ok, metadata by asset and check, error)."""
    import dagster as dg

    from recsys_assets.definitions import defs

    result = defs.resolve_job_def(name).execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={**QUIET, **(run_config or {})},
        tags=tags,
    )
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.event_specific_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    for check in result.get_asset_check_evaluations():
        metadata[f"check:{check.check_name}"] = {
            "passed": check.passed,
            **{k: v.value for k, v in check.metadata.items()},
        }
    return result.success, metadata, _failure(result)


def _failure(result) -> str | None:
    if result.success:
        return None
    return (
        "; ".join(
            _root_message(event.event_specific_data.error)
            for event in result.all_events
            if event.is_step_failure
        )
        or "a blocking check failed"
    )


def _root_message(error) -> str:
    """The innermost error's message: what went wrong, without Dagster's wrapping."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _row_counts(result) -> dict[str, int]:
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        rows = materialization.metadata.get("dagster/row_count")
        if rows is not None:
            counts[materialization.asset_key.to_user_string()] = int(rows.value)
    return {
        "raw": counts.get("raw_events", 0),
        "validated": counts.get("validated_events", 0),
        "quarantined": counts.get("quarantined_events", 0),
    }


def demo(args: argparse.Namespace) -> int:
    if args.data_config:
        os.environ[DATA_CONFIG_VAR] = str(Path(args.data_config).resolve())
    home = prepare_dagster_home()
    from recsys_assets.config import get_settings
    from recsys_assets.evaluation.report import headline_table
    from recsys_assets.ingestion.sources import SourceError

    settings = get_settings()
    print(f"environment: {settings.environment.value}")
    print(f"source:      {settings.data_config}")
    started = time.perf_counter()
    try:
        rows = run_ingestion(args.partition or None)
    except SourceError as exc:  # raised while the definitions load: config or file unusable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'partition':<12}{'raw':>9}{'valid':>9}{'quarant.':>9}{'secs':>7}")
    for row in rows:
        status = "" if row["ok"] else f"  FAILED: {row['error']}"
        print(
            f"{row['partition']:<12}{row['raw']:>9,}{row['validated']:>9,}"
            f"{row['quarantined']:>9,}{row['seconds']:>7}{status}"
        )
    totals = {k: sum(int(r[k]) for r in rows) for k in ("raw", "validated", "quarantined")}
    print(f"{'total':<12}{totals['raw']:>9,}{totals['validated']:>9,}{totals['quarantined']:>9,}")
    failed = [r["partition"] for r in rows if not r["ok"]]
    if failed:
        print(f"\n{len(failed)} partition(s) failed: {failed}", file=sys.stderr)
        return 1

    print("\nfeatures: computing tables, feast apply, materialising the online store ...")
    ok, features, error = run_job("features_job")
    if not ok:
        print(f"features failed: {error}", file=sys.stderr)
        return 1
    for name, meta in features.items():
        if "dagster/row_count" in meta:  # the feature tables
            print(f"  {name:<28}{meta['dagster/row_count']:>10,} rows")
    online = features["online_features"]
    check = features["check:training_serving_consistency"]
    print(f"  online store: {online['online_entities']} in {online['materialize_seconds']} s")
    print(
        f"  online = offline for {check['values_compared']:,} sampled values "
        f"({check['mismatches']} mismatches)"
    )

    print("\nmodels: fitting the candidate generators, evaluating on the fixed protocol ...")
    ok, _, error = run_job("models_job")
    if not ok:
        print(f"models failed: {error}", file=sys.stderr)
        return 1
    report = json.loads((settings.reports_dir / "evaluation.json").read_text())
    print(f"  protocol: {report['protocol']}")
    print(headline_table(report))

    print("\nrelease: serving model, quality gate, BentoML model store, bento ...")
    ok, release, error = run_job("release_job")
    gate = release.get("check:quality_gate")
    challenger = release.get("challenger_model", {})
    if challenger:
        print(
            f"  challenger {challenger['model_version']}: in-process latency p50 "
            f"{challenger['latency_p50_ms']} ms, p99 {challenger['latency_p99_ms']} ms"
        )
    if gate is not None:
        reasons, warnings = gate.get("reasons") or [], gate.get("warnings") or []
        print(f"  quality gate: {'REFUSED' if reasons else 'passed'}")
        for warning in warnings:
            print(f"    warning: {warning}")
        for reason in reasons:
            print(f"    refused: {reason}", file=sys.stderr)
    if not ok:
        print(f"release failed: {error}", file=sys.stderr)
        return 1
    print(f"  promoted: {release['promoted_model']['tag']}  bento: {release['bento']['bento_tag']}")

    print(f"\nfinished in {time.perf_counter() - started:.1f} s")
    print("\noutputs:")
    warehouse = settings.warehouse_path or f"${settings.warehouse.env_var_name}"
    print(f"  event tables (DuckDB): {warehouse}  (schema 'events')")
    print(f"  feature tables (parquet) and Feast registry: {settings.feature_repo / 'data'}")
    print(f"  Feast config: {settings.feature_repo / settings.feature_store_yaml}")
    print(f"  fitted models: {settings.model_dir}")
    print(f"  evaluation report: {settings.reports_dir / 'evaluation.html'} (figures: .json)")
    print(f"  BentoML store (promoted models, bentos): {settings.bentoml_home}")
    print("  serve it: make serve   (http://127.0.0.1:3001, /recommend, /feedback, /metrics)")
    print(f"  Dagster runs, metadata, check results: {home}  (open with: make dev)")
    print("  per-partition data versions and lineage: python -m recsys_assets lineage")
    return 0


def lineage(args: argparse.Namespace) -> int:
    """Print what each partition was built from: rows, data versions, source and rules."""
    import dagster as dg

    from recsys_assets.defs.ingestion.assets import event_partitions
    from recsys_assets.defs.lineage import partition_lineage

    prepare_dagster_home()
    keys = args.partition or event_partitions.get_partition_keys()
    rows = partition_lineage(dg.DagsterInstance.get(), keys)
    print(f"{'partition':<12}{'raw':>9}{'valid':>9}{'quarant.':>9}  "
          f"{'validated version':<18}{'source sha256':<18}rules")  # fmt: skip
    for row in rows:
        version = str(row.get("validated_events.data_version") or "-")[:16]
        source = str(row.get("raw_events.source_sha256") or "-")[:16]
        counts = [row.get(f"{t}.rows") for t in ("raw_events", "validated_events")]
        counts.append(row.get("quarantined_events.rows"))
        cells = "".join(f"{'-' if n is None else f'{n:,}':>9}" for n in counts)
        rules = row.get("validated_events.rules_version") or "-"
        print(f"{row['partition']:<12}{cells}  {version:<18}{source:<18}{rules}")
    return 0


def audit(args: argparse.Namespace) -> int:
    """Print everything a model came from: partitions and their versions, quarantine counts,
    feature service, code version, parameters, evaluation figures, promotion."""
    import dagster as dg

    prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    event, known = _model_materialization(instance, args.model, args.version)
    if event is None and not known:
        print(f"error: no materialisation of {args.model!r} yet (run make demo)", file=sys.stderr)
        return 2
    if event is None:
        print(
            f"error: {args.model} has no version {args.version}; known versions (newest "
            f"first): {', '.join(known[:10])}",
            file=sys.stderr,
        )
        return 2
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    lineage = metadata.get("lineage") or {}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.timestamp))
    print(f"model:            {args.model}  version {metadata.get('model_version')}")
    print(f"materialised:     {when} UTC, run {event.run_id}")
    print(f"code version:     {lineage.get('code_version')}")
    print(f"parameters:       {json.dumps(lineage.get('params'), sort_keys=True)}")
    service = lineage.get("feature_service")
    registry = lineage.get("feature_registry_version")
    print(f"feature service:  {service or '-'}" + (f" (registry {registry})" if service else ""))
    print(f"training data:    version {metadata.get('train_data_version')}")
    figures = {k: v for k, v in metadata.items() if "@" in k}
    print("evaluation:       " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print(f"promoted:         {_promotion(metadata.get('model_version'))}")
    print(f"\n{'partition':<12}{'validated':>10}{'quarant.':>10}  {'validated version':<18}"
          f"{'source sha256':<18}rules")  # fmt: skip
    for row in lineage.get("partitions", []):
        counts = [row.get("validated_events.rows"), row.get("quarantined_events.rows")]
        cells = "".join(f"{'-' if n is None else f'{n:,}':>10}" for n in counts)
        version = str(row.get("validated_events.data_version") or "-")[:16]
        source = str(row.get("raw_events.source_sha256") or "-")[:16]
        rules = row.get("validated_events.rules_version") or "-"
        print(f"{row['partition']:<12}{cells}  {version:<18}{source:<18}{rules}")
    return 0


def _model_materialization(instance, model: str, version: str | None, limit: int = 200):
    """The materialisation of ``model`` with ``version`` (latest when None) from the instance's
    history, and the versions seen (newest first)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(model)), limit=limit
    ).records
    known: list[str] = []
    for record in records:
        entry = record.event_log_entry
        meta = entry.asset_materialization.metadata
        found = meta["model_version"].value if "model_version" in meta else None
        if found is not None and found not in known:
            known.append(str(found))
        if version is None or found == version:
            return entry, known
    return None, known


def _promotion(model_version: str | None) -> str:
    """Where a model (ranker or serving version) was promoted, from the BentoML registry."""
    from recsys_assets.config import get_settings
    from recsys_assets.config.settings import BENTOML_HOME_VAR

    os.environ.setdefault(BENTOML_HOME_VAR, str(get_settings().bentoml_home))
    from recsys_assets.serving.registry import promoted_versions

    hits = [
        v
        for v in promoted_versions()
        if model_version in (v["version"], v["metadata"].get("lineage", {}).get("ranker_version"))
    ]
    if not hits:
        return "no"
    return "; ".join(
        f"yes, as {v['tag']} on {v['metadata'].get('promoted_at', v['created'])} "
        f"({v['labels'].get('environment', '?')}, store {os.environ[BENTOML_HOME_VAR]})"
        for v in hits
    )


def dev(args: argparse.Namespace) -> int:
    """Replace this process with ``dagster dev`` (webserver + daemon) on the project workspace."""
    import signal

    prepare_dagster_home()
    # A shell that started us in the background may have left SIGINT ignored; dagster dev then
    # ignores SIGTERM too and cannot be stopped. Restore the default before exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    command += ["--host", args.host, "--port", str(args.port)]
    os.execvp(command[0], command)
    return 0  # not reached


SERVICE = "bentos.recommender.service:Recommender"


def serve(args: argparse.Namespace) -> int:
    """Replace this process with ``bentoml serve`` of the recommendation service, on the
    environment's BentoML store (the latest promoted model unless RECSYS_MODEL_TAG says)."""
    import signal

    from recsys_assets.config import get_settings
    from recsys_assets.config.settings import BENTOML_HOME_VAR

    os.environ.setdefault(BENTOML_HOME_VAR, str(get_settings().bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if "RECSYS_MODEL_TAG" not in os.environ:  # the champion, not BentoML's newest ("latest")
        from recsys_assets.serving.registry import current_promoted

        champion = current_promoted()
        if champion is not None:
            os.environ["RECSYS_MODEL_TAG"] = champion["tag"]
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    bentoml = str(Path(sys.executable).parent / "bentoml")
    command = [bentoml, "serve", SERVICE, "--host", args.host, "--port", str(args.port)]
    os.chdir(PROJECT_ROOT)
    os.execvp(command[0], command)
    return 0  # not reached


def loop_log(args: argparse.Namespace) -> int:
    """Print the loop's event log (decisions with their reasons, releases) and its KPIs."""
    from recsys_assets.config import get_settings
    from recsys_assets.monitoring import loop

    settings = get_settings()
    events = loop.LoopLog(settings.loop_log).read(args.kind or None)
    print(f"loop log: {settings.loop_log} ({len(events)} events)")
    for event in events[-args.last :] if args.last else events:
        if event["kind"] == loop.DECISION:
            verdict = "FIRE" if event.get("fire") else "hold"
            detail = f"{verdict}: {event.get('reason')}"
        else:
            shown = ("model_version", "tag", "bento", "day", "reasons", "port")
            detail = ", ".join(f"{k} {event[k]}" for k in shown if k in event)
        print(f"  {event['ts'][:19]}  {event['kind']:<19}{detail}")
    figures = loop.kpis(loop.LoopLog(settings.loop_log).read())

    def seconds(block: dict) -> str:
        mean = block["mean_s"]
        return "-" if mean is None else f"{mean:.0f} s (mean of {block['count']})"

    print(
        f"incidents {figures['incidents']} (open {figures['open_incidents']}, refused by the gate "
        f"{figures['refused_by_gate']}); MTTD {seconds(figures['mttd'])}; "
        f"MTTR {seconds(figures['mttr'])}; deployment {seconds(figures['deployment'])}"
    )
    return 0


def timeline(args: argparse.Namespace) -> int:
    """Print one timeline of the environment: loop events, control-plane and service access
    decisions (the service's allows counted), and Dagster runs, oldest first."""
    import dagster as dg

    from recsys_assets.access.control import control_audit_path
    from recsys_assets.access.policy import audit_log_path
    from recsys_assets.config import get_settings
    from recsys_assets.monitoring import loop
    from recsys_assets.monitoring import timeline as tl

    settings = get_settings()
    prepare_dagster_home()
    entries = tl.timeline(
        loop_events=loop.LoopLog(settings.loop_log).read(),
        control_audit=tl.read_jsonl(control_audit_path(settings.loop_log)),
        access_audit=tl.read_jsonl(
            audit_log_path(settings.feedback_log), tail_bytes=tl.ACCESS_TAIL_BYTES
        ),
        runs=tl.dagster_runs(dg.DagsterInstance.get()),
        since=args.since,
    )
    shown = entries[-args.last :] if args.last else entries
    if args.json:
        print(json.dumps([e.as_dict() for e in shown], indent=2))
        return 0
    print(f"timeline of {settings.environment.value}: {len(entries)} entries")
    for entry in shown:
        who = f" [{entry.subject}]" if entry.subject else ""
        print(f"  {entry.ts[:23]}  {entry.source:<8} {entry.kind:<24}{who} {entry.summary}")
    return 0


def drill(args: argparse.Namespace) -> int:
    """Stage a faulty challenger (slow, or a bad model) in a canary and watch the system roll
    it back on its own."""
    from recsys_assets.simulation.drill import (
        DEFAULT_WORKDIR,
        SLOW,
        Drill,
        DrillPlan,
        print_summary,
        write_summary,
    )

    if args.fault == SLOW:
        delay_ms = DrillPlan.delay_ms if args.delay_ms is None else args.delay_ms
    elif args.delay_ms is None:
        delay_ms = 0.0  # the bad model answers at the champion's speed
    else:
        print(f"drill failed: --delay-ms is for --fault {SLOW} only", file=sys.stderr)
        return 2
    plan = DrillPlan(
        fault=args.fault, delay_ms=delay_ms, share=args.share, interval_s=args.interval,
        port=args.port,
    )  # fmt: skip
    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    try:
        summary = Drill(plan, workdir).run()
    except RuntimeError as error:
        print(f"drill failed: {error}", file=sys.stderr)
        return 1
    print_summary(summary)
    print(f"report: {write_summary(summary, workdir)}")
    return 0 if summary["rolled_back"] else 1


def _registry() -> None:
    """Point BentoML at the environment's store before it is first imported (its
    ``RECSYS_BENTOML_HOME_<ENV>`` if set: :func:`recsys_assets.release.ledger.environment_home`)."""
    from recsys_assets.config import get_settings
    from recsys_assets.config.settings import BENTOML_HOME_VAR
    from recsys_assets.release.ledger import environment_home

    own = get_settings().environment.value
    os.environ.setdefault(BENTOML_HOME_VAR, str(environment_home(own)))


def models(args: argparse.Namespace) -> int:
    """Print every model version in the registry with its stage, newest first, and its stage
    in each environment's registry ('-': not there)."""
    _registry()
    from recsys_assets.release.ledger import ORDER, environment_home
    from recsys_assets.serving.registry import CANDIDATE, PROMOTED, model_versions

    versions = model_versions()
    stages = {
        env: {v["version"]: v["stage"] for v in model_versions(home=environment_home(env))}
        for env in ORDER
    }
    champion = next((v["version"] for v in versions if v["stage"] == PROMOTED), None)
    print(f"registry: {os.environ['BENTOML_HOME']} ({len(versions)} versions)")
    envs = "".join(f"{env:<12}" for env in ORDER)
    print(f"  {'version':<20}{'stage':<13}{'created':<22}{'ndcg@10':>9}  {envs}note")
    for v in versions:
        ndcg = v["metadata"].get("metrics", {}).get("ndcg")
        note = "champion" if v["version"] == champion else ""
        if v["stage"] == CANDIDATE:
            note = "candidate: awaiting approval by a release manager"
        elif v["stage"] != PROMOTED:
            note = f"rolled back to {v['labels'].get('rolled_back_to', '?')}: " + v["labels"].get(
                "rollback_reason", ""
            )
        cell = f"{ndcg:.4f}" if isinstance(ndcg, int | float) else "-"
        where = "".join(f"{stages[env].get(v['version'], '-'):<12}" for env in ORDER)
        print(
            f"  {v['version']:<20}{v['stage']:<13}{v['created'][:19]:<22}{cell:>9}  {where}{note}"
        )
    return 0


def rollback(args: argparse.Namespace) -> int:
    """Take the current release of this environment back (one command), as the operator behind
    ``RECSYS_OPERATOR_KEY`` (policy action ``rollback``, audited): the whole bundle, registry
    and release ledger; an environment with no release in the ledger rolls back its registry
    alone. Exit 2 on bad input, 3 when the policy denies; logged to the loop log."""
    _registry()
    from recsys_assets.access.control import AccessDenied, authorize_control, operator_subject
    from recsys_assets.access.policy import CredentialError
    from recsys_assets.config import get_settings
    from recsys_assets.monitoring import loop
    from recsys_assets.release import ledger as releases
    from recsys_assets.serving.registry import RollbackError
    from recsys_assets.serving.registry import rollback as roll_back

    env = get_settings().environment.value
    try:
        subject = operator_subject()
        if releases.current_release(env) is not None:
            bundle = releases.rollback_release(
                env, subject=subject, reason=args.reason, to_release_id=_release_to(env, args.to)
            )
            done = {"to": bundle["to"]["model_version"], "tag": bundle["to"]["model_tag"],
                    "rolled_back": bundle["rolled_back_versions"]}  # fmt: skip
        else:
            authorize_control(
                subject, "rollback", env, audit_path=releases.environment_audit_path(env),
                model_version=args.to,
            )  # fmt: skip
            done = roll_back(args.to, reason=args.reason, home=releases.environment_home(env))
            bundle = None
    except AccessDenied as error:
        print(f"denied: {error}", file=sys.stderr)
        return 3
    except (CredentialError, RollbackError, releases.ReleaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    extra = {"release_id": bundle["to"]["release_id"], "rolled_back_releases":
             bundle["rolled_back"], "bento": bundle["bento_tag"]} if bundle else {}  # fmt: skip
    loop.LoopLog(get_settings().loop_log).append(
        loop.ROLLED_BACK, model_version=done["to"], rolled_back=done["rolled_back"],
        reason=args.reason, by=subject.id if subject else None, **extra,
    )  # fmt: skip
    if bundle:
        print(f"rolled back release(s) {', '.join(bundle['rolled_back'])} in {env}; current "
              f"release is {bundle['to']['release_id']} again")  # fmt: skip
        print(f"serve its bento: {bundle['bento_tag'] or '(none recorded)'}")
    print(f"rolled back {', '.join(done['rolled_back'])}; champion is {done['tag']} again")
    print(f"serve it: RECSYS_MODEL_TAG={done['tag']} make serve  (or its bento)")
    return 0


def _release_to(env: str, to: str | None) -> str | None:
    """``rollback --to``: a release id, or a model version (its newest release that is not
    current and not rolled back); anything else goes on as given, for a clear error."""
    from recsys_assets.release import ledger as releases

    if to is None:
        return None
    earlier = [r for r in releases.releases(env) if r["status"] == releases.SUPERSEDED]
    matches = [r["release_id"] for r in earlier if to in (r["release_id"], r["model_version"])]
    return matches[-1] if matches else to


def promote(args: argparse.Namespace) -> int:
    """Move the current release of ``--from`` into ``--to`` (the next environment) as the
    operator behind ``RECSYS_OPERATOR_KEY`` (policy action ``promote``, audited): the model
    (and its bento) is copied into the target's registry and the release recorded. Exit 2 on
    bad input or out-of-order environments, 3 when the policy denies."""
    from recsys_assets.access.control import AccessDenied, operator_subject
    from recsys_assets.access.policy import CredentialError
    from recsys_assets.config import get_settings
    from recsys_assets.monitoring import loop
    from recsys_assets.release import ledger as releases

    try:
        subject = operator_subject()
        done = releases.promote_release(
            args.version, from_env=args.from_env, to_env=args.to_env, subject=subject,
            reason=args.reason,
        )  # fmt: skip
    except AccessDenied as error:
        print(f"denied: {error}", file=sys.stderr)
        return 3
    except (CredentialError, releases.ReleaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    loop.LoopLog(get_settings(args.to_env).loop_log).append(
        loop.RELEASED, model_version=done["model_version"], release_id=done["release_id"],
        environment=args.to_env, from_environment=args.from_env, bento=done["bento_tag"],
        by=done["released_by"]["id"], reason=args.reason,
    )  # fmt: skip
    print(f"released {done['model_tag']} from {args.from_env} to {args.to_env} as "
          f"{done['release_id']} (bento {done['bento_tag'] or '-'}), by {subject.id}")  # fmt: skip
    return 0


def canary(args: argparse.Namespace) -> int:
    """Show, start, reshape or stop the canary of this environment by hand, as the operator
    behind ``RECSYS_OPERATOR_KEY`` (policy action ``set_canary_share``, or ``rollback`` for
    stop; audited). The service follows the state file within a second. Exit 2 on bad input,
    3 when the policy denies."""
    from recsys_assets.access.control import AccessDenied, operator_subject
    from recsys_assets.access.policy import CredentialError
    from recsys_assets.config import get_settings
    from recsys_assets.release.canary.actions import set_canary
    from recsys_assets.release.canary.routing import current_config

    settings = get_settings()
    if args.action == "status":
        config, state = current_config(settings.canary_state, os.environ)
        source = f"state file {settings.canary_state}" if state else "environment variables"
        challenger = config.challenger_tag or "none"
        print(f"canary ({settings.environment.value}, from the {source}): "
              f"challenger {challenger}, share {config.effective_share:g}")  # fmt: skip
        if state is not None:
            print(f"  generation {state.generation}, {state.updated_at} by {state.updated_by}: "
                  f"{state.reason}")  # fmt: skip
        return 0
    if args.action == "share":
        challenger = current_config(settings.canary_state, os.environ)[0].challenger_tag
        if challenger is None:
            print("error: no canary is running; start one first", file=sys.stderr)
            return 2
    else:
        challenger = args.challenger if args.action == "start" else None
    if args.action == "start" and not challenger:
        print("error: canary start needs the challenger's model tag", file=sys.stderr)
        return 2
    try:
        state = set_canary(
            challenger_tag=challenger, share=args.share if args.action != "stop" else 0.0,
            subject=operator_subject(), reason=args.reason, state_path=settings.canary_state,
            environment=settings.environment.value, loop_log=settings.loop_log,
        )  # fmt: skip
    except AccessDenied as error:
        print(f"denied: {error}", file=sys.stderr)
        return 3
    except (CredentialError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"canary: challenger {state.challenger_tag or 'none'}, share {state.share:g} "
          f"(generation {state.generation}, by {state.updated_by})")  # fmt: skip
    return 0


def release_ledger(args: argparse.Namespace) -> int:
    """Print the release ledger: the current release of each environment, then every release
    and rollback (``--env``: one environment; ``--json``: machine-readable), and its KPIs."""
    from recsys_assets.release import ledger as releases

    path = releases.ledger_path()
    records = releases.read_ledger(path)
    folded = releases.fold(records)
    figures = releases.release_kpis(records, releases.loop_events_of_every_environment())
    current = [r for r in releases.current_rows(folded) if args.env in (None, r["environment"])]
    history = [r for r in folded if args.env in (None, r["environment"])]
    if args.json:
        print(json.dumps({"ledger": str(path), "current": current, "releases": history,
                          "kpis": figures}, indent=2, default=str))  # fmt: skip
        return 0
    print(f"release ledger: {path} ({len(history)} releases)")
    print(f"  {'environment':<12}{'release':<28}{'model':<18}{'from':<12}bento")
    for row in current:
        print(f"  {row['environment']:<12}{row['release_id'] or '-':<28}"
              f"{row['model_version'] or '-':<18}{row['from'] or '-':<12}"
              f"{row['bento_tag'] or '-'}")  # fmt: skip
    print("history:")
    for row in releases.history_rows(history):
        print(f"  {row['released_at'][:19]}  {row['environment']:<12}{row['release_id']:<28}"
              f"{row['status']:<12}{row['released_by']}: {row['reason']}")  # fmt: skip
        if row["rolled_back"]:
            print(f"  {'':<21}rolled back {row['rolled_back']}")
    rollback, velocity = figures["rollback"], figures["velocity"]
    rollback = rollback["by_environment"][args.env] if args.env else rollback
    share = "-" if rollback["share"] is None else f"{rollback['share']:.0%}"
    mean = "-" if velocity["mean_s"] is None else f"{velocity['mean_s']:.0f} s"
    print(f"rolled back {rollback['rolled_back']} of {rollback['releases']} releases ({share}); "
          f"training -> prod {mean} (mean of {velocity['count']})")  # fmt: skip
    return 0


def simulate(args: argparse.Namespace) -> int:
    """Run the closed-loop simulation (recsys_assets/simulation/closed_loop.py) and print its
    results."""
    from recsys_assets.simulation.closed_loop import (
        DEFAULT_WORKDIR,
        Simulation,
        SimulationPlan,
        Workspace,
        print_summary,
    )

    plan = SimulationPlan.small() if args.small else SimulationPlan()
    overrides = {k: v for k, v in vars(args).items() if k in plan.__dataclass_fields__}
    plan = SimulationPlan(
        **{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    )
    workspace = Workspace(Path(args.workdir or DEFAULT_WORKDIR).resolve())
    workspace.create(plan)
    print(f"simulation: {plan}")
    print(f"workspace:  {workspace.root}")
    summary = Simulation(plan, workspace).run()
    print_summary(summary)
    return 0


def metrics(args: argparse.Namespace) -> int:
    """Serve the pipeline's Prometheus metrics, read from the Dagster instance at each scrape
    (``--once``: print them and exit)."""
    import contextlib
    import signal

    import dagster as dg

    from recsys_assets.defs.observability import pipeline_metrics

    prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    if args.once:
        sys.stdout.write(pipeline_metrics.render(instance).decode())
        return 0
    home = os.environ["DAGSTER_HOME"]
    print(f"pipeline metrics of {home} on http://{args.host}:{args.port}/metrics", flush=True)
    # Ctrl-C stops it, even when a shell that started it in the background ignored SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        pipeline_metrics.serve(args.port, args.host, instance=instance)
    return 0


def traces(args: argparse.Namespace) -> int:
    """Print a run's trace (one JSON span per line) to stdout, whatever RECSYS_TRACING says."""
    import dagster as dg

    from recsys_assets.defs.observability.pipeline_traces import (
        find_run_id,
        run_spans,
        trace_id_for_run,
    )
    from recsys_assets.observability.telemetry import console_exporter

    prepare_dagster_home()
    instance = dg.DagsterInstance.get()
    run_id = find_run_id(instance, args.run_id)
    if run_id is None:
        print(f"error: no single run matches {args.run_id!r}", file=sys.stderr)
        return 2
    spans = run_spans(instance, run_id)  # the run's root span first, then its steps in order
    console_exporter().export(spans)
    print(f"run {run_id}: {len(spans)} spans, trace id {trace_id_for_run(run_id)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the main job end to end")
    demo_parser.add_argument(
        "--data-config", help="source config YAML (default: the environment's, UCI Online Retail)"
    )
    demo_parser.add_argument(
        "--partition", action="append", help="run only this partition key (repeatable)"
    )
    demo_parser.set_defaults(handler=demo)
    lineage_parser = commands.add_parser(
        "lineage", help="print each partition's rows, data versions, source and rules version"
    )
    lineage_parser.add_argument("--partition", action="append", help="only this partition key")
    lineage_parser.set_defaults(handler=lineage)
    audit_parser = commands.add_parser(
        "audit", help="print everything a model came from (lineage, versions, figures)"
    )
    audit_parser.add_argument("model", nargs="?", default="ranker_model", help="model asset")
    audit_parser.add_argument("--version", help="check that this is the model version audited")
    audit_parser.set_defaults(handler=audit)
    dev_parser = commands.add_parser("dev", help="open the Dagster UI with the daemon")
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=3000)
    dev_parser.set_defaults(handler=dev)
    serve_parser = commands.add_parser("serve", help="serve the promoted model over HTTP")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=3001)
    serve_parser.set_defaults(handler=serve)
    loop_parser = commands.add_parser(
        "loop", help="print the loop's decisions and releases, and MTTD / MTTR / velocity"
    )
    loop_parser.add_argument("--kind", action="append", help="only this event kind (repeatable)")
    loop_parser.add_argument("--last", type=int, help="only the last N events")
    loop_parser.set_defaults(handler=loop_log)
    models_parser = commands.add_parser(
        "models", help="list the registry's model versions with their stage"
    )
    models_parser.set_defaults(handler=models)
    rollback_parser = commands.add_parser(
        "rollback", help="take the current release back (RECSYS_OPERATOR_KEY)"
    )
    rollback_parser.add_argument(
        "--to", help="the release id or model version to return to (default: the previous)"
    )
    rollback_parser.add_argument("--reason", required=True, help="why, for the record")
    rollback_parser.set_defaults(handler=rollback)
    environments = ("dev", "test", "acceptance", "prod")
    promote_parser = commands.add_parser(
        "promote", help="move a release to the next environment (RECSYS_OPERATOR_KEY)"
    )
    promote_parser.add_argument("version", help="the model version (current release of --from)")
    promote_parser.add_argument("--from", dest="from_env", required=True, choices=environments)
    promote_parser.add_argument("--to", dest="to_env", required=True, choices=environments)
    promote_parser.add_argument("--reason", required=True, help="why, for the record")
    promote_parser.set_defaults(handler=promote)
    releases_parser = commands.add_parser(
        "releases", help="the release ledger: current release per environment and history"
    )
    releases_parser.add_argument("--env", choices=environments, help="only this environment")
    releases_parser.add_argument("--json", action="store_true", help="print JSON")
    releases_parser.set_defaults(handler=release_ledger)
    simulate_parser = commands.add_parser(
        "simulate", help="run the synthetic shop against the service: drift, retraining, recovery"
    )
    simulate_parser.add_argument("--small", action="store_true", help="the test's small plan")
    simulate_parser.add_argument("--workdir", help="workspace (default data/simulation/)")
    simulate_parser.add_argument("--days", type=int, help="simulated days after the history")
    simulate_parser.add_argument("--drift-day", type=int, help="day the drift starts (0-based)")
    simulate_parser.add_argument("--shoppers-per-day", type=int, help="lists served per day")
    simulate_parser.add_argument("--port", type=int, help="the service's first port")
    simulate_parser.set_defaults(handler=simulate)
    metrics_parser = commands.add_parser(
        "metrics", help="serve the pipeline's Prometheus metrics (runs, assets, checks, drift)"
    )
    metrics_parser.add_argument("--host", default="127.0.0.1")
    metrics_parser.add_argument("--port", type=int, default=9464)
    metrics_parser.add_argument("--once", action="store_true", help="print them once and exit")
    metrics_parser.set_defaults(handler=metrics)
    traces_parser = commands.add_parser(
        "traces", help="print a run's OpenTelemetry spans as JSON (trace id = run id)"
    )
    traces_parser.add_argument("run_id", help="the Dagster run id (or a unique prefix)")
    traces_parser.set_defaults(handler=traces)
    canary_parser = commands.add_parser(
        "canary", help="show, start, reshape or stop the canary (through the policy)"
    )
    canary_parser.add_argument("action", choices=["status", "start", "share", "stop"])
    canary_parser.add_argument("challenger", nargs="?", help="start: the challenger's model tag")
    canary_parser.add_argument("--share", type=float, default=0.1, help="challenger's share")
    canary_parser.add_argument("--reason", default="by hand", help="why (audited)")
    canary_parser.set_defaults(handler=canary)
    timeline_parser = commands.add_parser(
        "timeline", help="loop events, access decisions and pipeline runs as one timeline"
    )
    timeline_parser.add_argument("--since", help="ISO time: drop what came before")
    timeline_parser.add_argument("--last", type=int, default=0, help="only the newest N")
    timeline_parser.add_argument("--json", action="store_true", help="JSON instead of lines")
    timeline_parser.set_defaults(handler=timeline)
    drill_parser = commands.add_parser(
        "drill", help="stage a faulty challenger in a canary: detection and automatic rollback"
    )
    drill_parser.add_argument(
        "--fault", choices=("slow", "bad-model"), default="slow",
        help="slow: the champion made slower by the drill knob; bad-model: the champion with "
        "candidates misjoined across customers (caught on click-through and conversion)",
    )  # fmt: skip
    drill_parser.add_argument(
        "--delay-ms", type=float, help="the slow challenger's delay (default 60)"
    )
    drill_parser.add_argument("--share", type=float, default=0.5, help="challenger's share")
    drill_parser.add_argument("--interval", type=float, default=5.0, help="analysis cadence (s)")
    drill_parser.add_argument("--port", type=int, default=3071)
    drill_parser.add_argument("--workdir", help="scratch folder (default data/drill)")
    drill_parser.set_defaults(handler=drill)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
