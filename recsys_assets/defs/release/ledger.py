"""The release ledger in the Dagster UI: what serves in each environment, and how it got there.

``releases`` reads the ledger (``recsys_assets.release.ledger``) and changes nothing: its
materialization shows the current release per environment, the history (releases, rollbacks,
who and why) and the release KPIs, so every step of a release is visible in the catalogue.
Materialize it after ``python -m recsys_assets promote`` or ``rollback``; ``release_job``
refreshes it after each pipeline release.
"""

import dagster as dg

from recsys_assets.core import constants as c
from recsys_assets.release import ledger

TAGS = {"domain": "serving"}
CODE_VERSION = "1"


@dg.asset(
    name="releases",
    deps=["bento"],
    group_name="serving",
    owners=[c.OWNER_DATA],
    tags=TAGS,
    code_version=CODE_VERSION,
    kinds={"bentoml"},
)
def release_ledger(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The release ledger, read only: the current release bundle of each environment (dev,
    test, acceptance, prod), every release and rollback with who and why, the share of releases
    rolled back and the deployment velocity (training finished -> serving in prod)."""
    path = ledger.ledger_path()
    records = ledger.read_ledger(path)
    folded = ledger.fold(records)
    figures = ledger.release_kpis(records, ledger.loop_events_of_every_environment())
    current = ledger.current_rows(folded)
    rollback, velocity = figures["rollback"], figures["velocity"]
    context.log.info("%d releases in %s", len(folded), path)
    return dg.MaterializeResult(
        metadata={
            "current": dg.MetadataValue.md(ledger.markdown_table(current)),
            "history": dg.MetadataValue.md(ledger.markdown_table(ledger.history_rows(folded))),
            **{f"current_{row['environment']}": row["release_id"] or "none" for row in current},
            "releases": rollback["releases"],
            "rolled_back": rollback["rolled_back"],
            "rollback_share": dg.MetadataValue.float(float(rollback["share"] or 0.0)),
            "rollback_by_environment": dg.MetadataValue.json(rollback["by_environment"]),
            "velocity_mean_s": dg.MetadataValue.float(float(velocity["mean_s"] or 0.0)),
            "velocity_history": dg.MetadataValue.json(velocity["history"]),
            "ledger": dg.MetadataValue.path(str(path)),
        }
    )
