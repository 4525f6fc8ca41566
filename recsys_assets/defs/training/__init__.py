"""Training domain: the evaluation split and the candidate generators."""

import dagster as dg

from recsys_assets.defs.training.assets import evaluation_split, model_assets, ranker_model

defs = dg.Definitions(assets=[evaluation_split, *model_assets, ranker_model])
