"""Training domain: the evaluation split and the candidate generators."""

import dagster as dg

from recsys_assets.defs.training.assets import evaluation_split, model_assets, ranker_model
from recsys_assets.defs.training.reduction import reduced_training_set

defs = dg.Definitions(assets=[evaluation_split, *model_assets, ranker_model, reduced_training_set])
