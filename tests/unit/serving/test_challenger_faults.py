"""The service's drill knobs (bentos/recommender/faults.py): parsed from the environment, a bad
value named, refused in acceptance and prod, and the failure draw fixed per request id."""

from __future__ import annotations

import pytest

from bentos.recommender.faults import (
    CHALLENGER_DELAY_VAR,
    CHALLENGER_ERROR_RATE_VAR,
    ChallengerFaults,
)


def test_no_knob_set_injects_nothing():
    faults = ChallengerFaults.from_environment("prod", {})
    assert faults == ChallengerFaults(delay_s=0.0, error_rate=0.0)
    assert not faults.fails("any-request")


def test_knobs_are_read_in_dev_and_test():
    environ = {CHALLENGER_DELAY_VAR: " 50 ", CHALLENGER_ERROR_RATE_VAR: "0.25"}
    assert ChallengerFaults.from_environment("test", environ) == ChallengerFaults(0.05, 0.25)
    assert ChallengerFaults.from_environment("dev", {CHALLENGER_DELAY_VAR: "0"}).delay_s == 0.0


@pytest.mark.parametrize("environment", ["acceptance", "prod"])
@pytest.mark.parametrize(
    "variable, value", [(CHALLENGER_DELAY_VAR, "50"), (CHALLENGER_ERROR_RATE_VAR, "0.5")]
)
def test_a_knob_is_refused_in_acceptance_and_prod(environment, variable, value):
    with pytest.raises(RuntimeError, match=f"{variable}='{value}' is a test and drill knob"):
        ChallengerFaults.from_environment(environment, {variable: value})


@pytest.mark.parametrize(
    "variable, value",
    [
        (CHALLENGER_DELAY_VAR, "-1"),
        (CHALLENGER_DELAY_VAR, "inf"),
        (CHALLENGER_DELAY_VAR, "nan"),
        (CHALLENGER_DELAY_VAR, "slow"),
        (CHALLENGER_ERROR_RATE_VAR, "1.5"),
        (CHALLENGER_ERROR_RATE_VAR, "nan"),
        (CHALLENGER_ERROR_RATE_VAR, "half"),
    ],
)
def test_a_bad_value_is_named(variable, value):
    with pytest.raises(ValueError, match=f"{variable}='{value}'"):
        ChallengerFaults.from_environment("test", {variable: value})


def test_the_failure_draw_is_fixed_per_request_id():
    faults = ChallengerFaults(error_rate=0.5)
    ids = [f"{n:032x}" for n in range(2_000)]
    failed = [faults.fails(request_id) for request_id in ids]
    assert failed == [faults.fails(request_id) for request_id in ids]
    assert 0.45 < sum(failed) / len(ids) < 0.55
    assert all(ChallengerFaults(error_rate=1.0).fails(request_id) for request_id in ids[:50])
