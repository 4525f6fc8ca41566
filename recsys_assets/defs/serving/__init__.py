"""Serving domain: the challenger, its quality gate, the promoted model and the bento."""

import dagster as dg

from recsys_assets.defs.serving.assets import (
    bento,
    challenger_model,
    promoted_model,
    quality_gate,
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.assets(challenger_model, promoted_model, bento),
    description="Make the evaluated ranker servable, gate it against the champion and the "
    "latency budget, promote it to the BentoML model store and build its bento.",
)

defs = dg.Definitions(
    assets=[challenger_model, promoted_model, bento],
    asset_checks=[quality_gate],
    jobs=[release_job],
)
