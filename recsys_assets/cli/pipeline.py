"""The pipeline's commands: ``demo`` runs it end to end, ``lineage`` and ``audit`` print what a
partition or a model was built from, ``dev`` opens the Dagster UI on the same instance.

Dagster, the definitions, pandas and BentoML load inside the commands, so that ``--help`` does
not pay for them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from recsys_assets.config import get_settings
from recsys_assets.config.settings import BENTOML_HOME_VAR, DATA_CONFIG_VAR, PROJECT_ROOT
from recsys_assets.evaluation.report import headline_table
from recsys_assets.runs import prepare_dagster_home, run_ingestion, run_job


def add_commands(commands: argparse._SubParsersAction) -> None:
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


# Row counts up to 999,999,999 (11 characters with separators) keep at least two spaces apart.
_COUNT_WIDTH = 13


def partition_table(rows: list[dict]) -> list[str]:
    """The demo's per-partition lines: a header, one line per partition run, and the totals."""
    w = _COUNT_WIDTH
    lines = [f"{'partition':<12}{'raw':>{w}}{'valid':>{w}}{'quarant.':>{w}}{'secs':>8}"]
    for row in rows:
        status = "" if row["ok"] else f"  FAILED: {row['error']}"
        lines.append(
            f"{row['partition']:<12}{row['raw']:>{w},}{row['validated']:>{w},}"
            f"{row['quarantined']:>{w},}{row['seconds']:>8}{status}"
        )
    totals = {k: sum(int(r[k]) for r in rows) for k in ("raw", "validated", "quarantined")}
    lines.append(
        f"{'total':<12}{totals['raw']:>{w},}{totals['validated']:>{w},}{totals['quarantined']:>{w},}"
    )
    return lines


def demo(args: argparse.Namespace) -> int:
    if args.data_config:
        os.environ[DATA_CONFIG_VAR] = str(Path(args.data_config).resolve())
    home = prepare_dagster_home()
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
    print()
    print("\n".join(partition_table(rows)))
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

    print(
        "\nmodels: fitting the ranker and the simple models, choosing on the validation period, "
        "evaluating on the test period ..."
    )
    ok, _, error = run_job("models_job")
    if not ok:
        print(f"models failed: {error}", file=sys.stderr)
        return 1
    report = json.loads((settings.reports_dir / "evaluation.json").read_text())
    print(f"  protocol: {report['protocol']}")
    selection = report.get("selection") or {}
    judged = "" if selection.get("judged", True) else " (not judged)"
    print(f"  chosen on validation: {selection.get('chosen')}{judged}: {selection.get('rule')}")
    print("  test period, after the choice:")
    print(headline_table(report))

    print("\nrelease: serving model, quality gate, BentoML model store, bento ...")
    ok, release, error = run_job("release_job")
    gate = release.get("check:quality_gate")
    challenger = release.get("challenger_model", {})
    if challenger:
        print(
            f"  challenger {challenger['model_version']} ({challenger.get('model', 'ranker')}): "
            f"in-process latency p50 {challenger['latency_p50_ms']} ms, "
            f"p99 {challenger['latency_p99_ms']} ms"
        )
    if gate is not None:
        reasons, warnings = gate.get("reasons") or [], gate.get("warnings") or []
        print(f"  quality gate: {'REFUSED' if reasons else 'passed'}")
        figures = gate.get("figures") or {}
        if figures.get("baseline"):
            print(
                f"    against the best simple model {figures['baseline']} "
                f"({figures.get('baseline_rule')} rule: {figures.get('baseline_rule_why')})"
            )
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
    feature service, code version, parameters, evaluation figures, promotion, and the features
    the model reads with the Feast features they come from."""
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
    _print_features(lineage)
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


def _print_features(lineage: dict) -> None:
    """The model's inputs as its lineage records them: name, then the Feast features each is
    read from (stored) or computed from (derived); candidate columns come from the generators."""
    features = lineage.get("features")
    if "features" not in lineage:  # recorded before lineage named the features
        print("features:         not recorded in this lineage")
        return
    if not features:
        print("features:         none (the model reads no features)")
        return
    kinds = [f.get("kind") for f in features]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    print(f"features:         {len(features)} model inputs ({counts})")
    width = max(len(str(f["name"])) for f in features) + 2
    for feature in features:
        refs = ", ".join(feature.get("feast_refs") or [])
        source = {
            "stored": refs,
            "derived": f"derived from {refs}",
        }.get(feature.get("kind"), "candidate generators")
        print(f"  {feature['name']:<{width}}{source}")


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
    os.environ.setdefault(BENTOML_HOME_VAR, str(get_settings().bentoml_home))
    # BentoML reads its home when first imported: only now
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
    prepare_dagster_home()
    # A shell that started us in the background may have left SIGINT ignored; dagster dev then
    # ignores SIGTERM too and cannot be stopped. Restore the default before exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    command += ["--host", args.host, "--port", str(args.port)]
    os.execvp(command[0], command)
    return 0  # not reached
