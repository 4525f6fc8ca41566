"""Evaluation domain: the report over every trained model."""

import dagster as dg

from recsys_assets.defs.evaluation.assets import evaluation_report

models_job = dg.define_asset_job(
    "models_job",
    # The reduced training set is materialised on its own until it meets its bar.
    selection=dg.AssetSelection.groups("training", "evaluation")
    - dg.AssetSelection.assets("reduced_training_set"),
    description="Split, fit every candidate generator and the XGBoost ranker, evaluate them on "
    "the fixed protocol and write the evaluation report.",
)

defs = dg.Definitions(assets=[evaluation_report], jobs=[models_job])
