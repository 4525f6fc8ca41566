"""Evaluation domain: the model chosen on the validation period and the report over every
trained model."""

import dagster as dg

from recsys_assets.defs.evaluation.assets import evaluation_report, selected_model

models_job = dg.define_asset_job(
    "models_job",
    # The reduced training set is materialised on its own until it meets its bar.
    selection=dg.AssetSelection.groups("training", "evaluation")
    - dg.AssetSelection.assets("reduced_training_set"),
    description="Split, fit every simple model and the XGBoost ranker, score them on the "
    "validation period and choose the model to promote, evaluate them on the fixed protocol's "
    "test period and write the evaluation report.",
)

defs = dg.Definitions(assets=[selected_model, evaluation_report], jobs=[models_job])
