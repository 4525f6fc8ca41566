"""Release domain: the canary analysis and its sensor, the A/B test report on average order
value, and the release ledger. The assets stay in the groups a user sees them in (monitoring for
the live analyses, serving for the ledger)."""

import dagster as dg

from recsys_assets.defs.release.ab_experiment import ab_test_report
from recsys_assets.defs.release.canary import canary_report
from recsys_assets.defs.release.canary_sensor import canary_job, canary_sensor
from recsys_assets.defs.release.ledger import release_ledger

defs = dg.Definitions(
    assets=[ab_test_report, canary_report, release_ledger],
    jobs=[canary_job],
    sensors=[canary_sensor],
)
