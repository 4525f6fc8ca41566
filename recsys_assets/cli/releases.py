"""Releases by hand, as an operator: ``models`` lists the registry, ``promote`` moves a release
to the next environment, ``rollback`` takes one back, ``canary`` shapes the canary and promotes
its challenger (what a release manager does where the canary analyser may not promote: prod),
and ``releases`` prints the release ledger. Every change goes through the access policy
(``RECSYS_OPERATOR_KEY``) and is audited.

The registry and the ledger import BentoML and pandas: they load inside the commands, after
:func:`_registry` has pointed BentoML at the environment's store (BentoML reads its home when
first imported), and so that ``--help`` does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from recsys_assets.access.control import AccessDenied, authorize_control, operator_subject
from recsys_assets.access.policy import CredentialError
from recsys_assets.config import get_settings, variables
from recsys_assets.config.settings import BENTOML_HOME_VAR
from recsys_assets.release.canary.routing import current_config

ENVIRONMENTS = ("dev", "test", "acceptance", "prod")


def add_commands(commands: argparse._SubParsersAction) -> None:
    models_parser = commands.add_parser(
        "models", help="list the registry's model versions with their stage"
    )
    models_parser.set_defaults(handler=models)
    rollback_parser = commands.add_parser(
        "rollback", help=f"take the current release back ({variables.OPERATOR_KEY.name})"
    )
    rollback_parser.add_argument(
        "--to", help="the release id or model version to return to (default: the previous)"
    )
    rollback_parser.add_argument("--reason", required=True, help="why, for the record")
    rollback_parser.set_defaults(handler=rollback)
    promote_parser = commands.add_parser(
        "promote", help=f"move a release to the next environment ({variables.OPERATOR_KEY.name})"
    )
    promote_parser.add_argument("version", help="the model version (current release of --from)")
    promote_parser.add_argument("--from", dest="from_env", required=True, choices=ENVIRONMENTS)
    promote_parser.add_argument("--to", dest="to_env", required=True, choices=ENVIRONMENTS)
    promote_parser.add_argument("--reason", required=True, help="why, for the record")
    promote_parser.set_defaults(handler=promote)
    releases_parser = commands.add_parser(
        "releases", help="the release ledger: current release per environment and history"
    )
    releases_parser.add_argument("--env", choices=ENVIRONMENTS, help="only this environment")
    releases_parser.add_argument("--json", action="store_true", help="print JSON")
    releases_parser.set_defaults(handler=release_ledger)
    canary_parser = commands.add_parser(
        "canary", help="show, start, reshape, stop or promote the canary (through the policy)"
    )
    canary_parser.add_argument("action", choices=["status", "start", "share", "stop", "promote"])
    canary_parser.add_argument("challenger", nargs="?", help="start: the challenger's model tag")
    canary_parser.add_argument("--share", type=float, default=0.1, help="challenger's share")
    canary_parser.add_argument("--reason", default="by hand", help="why (audited)")
    canary_parser.set_defaults(handler=canary)


def _registry() -> None:
    """Point BentoML at the environment's store before it is first imported (its
    ``RECSYS_BENTOML_HOME_<ENV>`` if set: :func:`recsys_assets.release.ledger.environment_home`)."""
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
    print(f"registry: {os.environ[variables.BENTOML_HOME.name]} ({len(versions)} versions)")
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
    print(f"serve it: {variables.MODEL_TAG.name}={done['tag']} make serve  (or its bento)")
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


def canary(args: argparse.Namespace) -> int:
    """Show, start, reshape, stop or promote the canary of this environment by hand, as the
    operator behind ``RECSYS_OPERATOR_KEY`` (policy action ``set_canary_share``, ``rollback``
    for stop, ``promote`` for promote; audited). The service follows the state file within a
    second. Exit 2 on bad input, 3 when the policy denies."""
    from recsys_assets.release.canary.actions import set_canary

    settings = get_settings()
    if args.action == "promote":
        return _promote_canary(args, settings)
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


def _promote_canary(args: argparse.Namespace, settings) -> int:
    """``canary promote``: the challenger in force gets every customer, is marked ``promoted``
    in this environment's registry and recorded as its release, by the operator (policy action
    ``promote``, audited): how a release manager approves a canary that awaits approval."""
    _registry()
    from recsys_assets.release.canary.actions import APPLIED, NOTHING, promote_challenger

    try:
        challenger = current_config(settings.canary_state, os.environ)[0].challenger_tag
        if challenger is None:
            print("error: no canary is running: nothing to promote", file=sys.stderr)
            return 2
        applied = promote_challenger(
            challenger, subject=operator_subject(), reason=args.reason,
            state_path=settings.canary_state, environment=settings.environment.value,
            loop_log=settings.loop_log,
        )  # fmt: skip
    except AccessDenied as error:
        print(f"denied: {error}", file=sys.stderr)
        return 3
    except (CredentialError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if applied.outcome == NOTHING:  # promoted before: nothing to do again
        print(f"canary: {applied.detail}")
        return 0
    if applied.outcome != APPLIED:
        print(f"error: {applied.detail}", file=sys.stderr)
        return 2
    print(f"canary: {applied.detail}")
    print(f"  registry: {applied.registry}; {applied.release}")
    return 0
