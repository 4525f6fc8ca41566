"""Loading pickles written before the domain packages existed.

Fitted models, splits and promoted serving models are pickled, and a pickle names the module of
every class it holds. Until the layout moved to one package per domain, those modules lived in
``recsys_assets.lib`` (and ``recsys_assets.constants``, ``simulate``, ``drill``). A store written
then (the BentoML registry, the model store under ``data/models/``) still loads: :func:`load`
reads the old module names as their new ones. Nothing else is renamed, and pickles written now
load with plain :func:`pickle.load` too.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

# Where each module of the old flat layout lives now.
MOVED_MODULES = {
    "recsys_assets.constants": "recsys_assets.core.constants",
    "recsys_assets.lib.versioning": "recsys_assets.core.versioning",
    "recsys_assets.lib.jsonable": "recsys_assets.core.jsonable",
    "recsys_assets.lib.processes": "recsys_assets.core.processes",
    "recsys_assets.lib.policy": "recsys_assets.access.policy",
    "recsys_assets.lib.control": "recsys_assets.access.control",
    "recsys_assets.lib.telemetry": "recsys_assets.observability.telemetry",
    "recsys_assets.lib.pipeline_metrics": "recsys_assets.defs.observability.pipeline_metrics",
    "recsys_assets.lib.pipeline_traces": "recsys_assets.defs.observability.pipeline_traces",
    "recsys_assets.lib.sources": "recsys_assets.ingestion.sources",
    "recsys_assets.lib.validation": "recsys_assets.ingestion.validation",
    "recsys_assets.lib.synthetic": "recsys_assets.ingestion.synthetic",
    "recsys_assets.lib.feedback": "recsys_assets.ingestion.feedback",
    "recsys_assets.lib.features": "recsys_assets.features.tables",
    "recsys_assets.lib.feature_store": "recsys_assets.features.store",
    "recsys_assets.lib.evaluation": "recsys_assets.evaluation.protocol",
    "recsys_assets.lib.metrics": "recsys_assets.evaluation.metrics",
    "recsys_assets.lib.reports": "recsys_assets.evaluation.report",
    "recsys_assets.lib.candidates": "recsys_assets.training.candidates",
    "recsys_assets.lib.ranking": "recsys_assets.training.ranker",
    "recsys_assets.lib.reduction": "recsys_assets.training.reduction",
    "recsys_assets.lib.serving": "recsys_assets.serving.model",
    "recsys_assets.lib.model_registry": "recsys_assets.serving.registry",
    "recsys_assets.lib.served_log": "recsys_assets.serving.served_log",
    "recsys_assets.lib.monitoring": "recsys_assets.monitoring.monitors",
    "recsys_assets.lib.loop": "recsys_assets.monitoring.loop",
    "recsys_assets.lib.timeline": "recsys_assets.monitoring.timeline",
    "recsys_assets.lib.dashboard": "recsys_assets.monitoring.dashboard",
    "recsys_assets.lib.gate": "recsys_assets.release.gate",
    "recsys_assets.lib.releases": "recsys_assets.release.ledger",
    "recsys_assets.lib.canary": "recsys_assets.release.canary.routing",
    "recsys_assets.lib.canary_analysis": "recsys_assets.release.canary.analysis",
    "recsys_assets.lib.canary_control": "recsys_assets.release.canary.actions",
    "recsys_assets.lib.abtest": "recsys_assets.release.ab_statistics",
    "recsys_assets.lib.experiment": "recsys_assets.release.ab_experiment",
    "recsys_assets.lib.deploy": "recsys_assets.release.kubernetes",
    "recsys_assets.lib.simulation": "recsys_assets.simulation.shoppers",
    "recsys_assets.simulate": "recsys_assets.simulation.closed_loop",
    "recsys_assets.drill": "recsys_assets.simulation.drill",
}


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def load(handle: IO[bytes]) -> Any:
    """:func:`pickle.load`, reading classes of the old flat layout from their new modules."""
    return _RenamingUnpickler(handle).load()
