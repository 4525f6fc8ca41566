"""Serving domain: the challenger, its quality gate, the promoted model, the bento and the
release ledger."""

import dagster as dg

from recsys_assets.defs.serving.assets import (
    bento,
    challenger_model,
    promoted_model,
    quality_gate,
)
from recsys_assets.defs.serving.releases import release_ledger

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.assets(challenger_model, promoted_model, bento, release_ledger),
    description="Make the evaluated ranker servable, gate it against the champion and the "
    "latency budget, promote it to the BentoML model store, build its bento, record the release "
    "and show the release ledger.",
)

defs = dg.Definitions(
    assets=[challenger_model, promoted_model, bento, release_ledger],
    asset_checks=[quality_gate],
    jobs=[release_job],
)
