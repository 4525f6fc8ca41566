"""Serving domain: the challenger, its quality gate, the promoted model and the bento;
``release_job`` runs them and records the release (the ledger is in defs/release/)."""

import dagster as dg

from recsys_assets.defs.serving.assets import (
    bento,
    challenger_model,
    promoted_model,
    quality_gate,
)

release_job = dg.define_asset_job(
    "release_job",
    # The ledger asset (`releases`) is the release domain's (defs/release/ledger.py), by key.
    selection=dg.AssetSelection.assets(challenger_model, promoted_model, bento)
    | dg.AssetSelection.assets("releases"),
    description="Make the model chosen on the validation period servable, gate it against the "
    "champion, the best simple model and the latency budget, promote it to the BentoML model "
    "store, build its bento, record the release and show the release ledger.",
)

defs = dg.Definitions(
    assets=[challenger_model, promoted_model, bento],
    asset_checks=[quality_gate],
    jobs=[release_job],
)
