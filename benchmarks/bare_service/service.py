"""A minimal BentoML 1.4 service: the serving floor the real recommender is compared against.

It does no work beyond BentoML's own request handling (routing, validation of the typed
arguments, JSON encoding), so latency measured against it is the framework's share.

From the repository root:
    bentoml serve benchmarks.bare_service.service:Bare --port 3000
"""

from __future__ import annotations

import bentoml

FIXED_ITEMS = [f"item-{i:03d}" for i in range(10)]


@bentoml.service(workers=1)
class Bare:
    """One worker (the BentoML default for a class service), one fixed answer."""

    @bentoml.api
    def recommend(self, customer_id: str, k: int = 10) -> dict:
        """The first k of a fixed item list, shaped like a real recommendation response."""
        return {"customer_id": customer_id, "items": FIXED_ITEMS[:k]}
