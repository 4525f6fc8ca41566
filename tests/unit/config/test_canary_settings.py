"""The canary's guardrails are a setting of each environment file (``canary:``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from recsys_assets.config import get_settings, settings
from recsys_assets.config.canary import GUARDRAILS, CanaryPolicy
from recsys_assets.config.settings import ENVIRONMENTS_DIR, Environment

# Environment -> the canary settings its file sets away from CanaryPolicy's defaults, on
# purpose (docs/how-to/change-a-guardrail.md). None today: every environment judges alike.
DIFFERS: dict[str, dict] = {}


@pytest.mark.parametrize("name", [e.value for e in Environment])
def test_each_environment_file_states_every_guardrail(name):
    block = yaml.safe_load((ENVIRONMENTS_DIR / f"{name}.yaml").read_text())["canary"]
    assert set(block) == set(CanaryPolicy.__dataclass_fields__)  # every key written out
    expected = dataclasses.replace(CanaryPolicy(), **DIFFERS.get(name, {}))
    assert get_settings(name).canary == expected  # the defaults, unless listed in DIFFERS


@pytest.fixture
def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Scratch copies of the environment files; ``write(canary)`` sets test.yaml's block
    (None removes it) and returns the file."""
    for source in ENVIRONMENTS_DIR.glob("*.yaml"):
        (tmp_path / source.name).write_text(source.read_text())
    monkeypatch.setattr(settings, "ENVIRONMENTS_DIR", tmp_path)

    def write(canary) -> Path:
        path = tmp_path / "test.yaml"
        raw = yaml.safe_load((ENVIRONMENTS_DIR / "test.yaml").read_text())
        if canary is None:
            raw.pop("canary")
        else:
            raw["canary"] = canary
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


def test_a_file_without_a_canary_block_gets_the_defaults(environments):
    environments(None)
    assert get_settings("test").canary == CanaryPolicy()
    environments({})  # an empty block: every default too
    assert get_settings("test").canary == CanaryPolicy()


def test_a_changed_guardrail_is_read(environments):
    environments({"max_p99_ratio": 1.2, "steps": [0.05, 0.5], "promote_needs": []})
    policy = get_settings("test").canary
    assert policy.max_p99_ratio == 1.2 and policy.steps == (0.05, 0.5)
    assert policy.promote_needs == () and policy.min_requests == 200  # the rest: defaults
    assert get_settings("prod").canary == CanaryPolicy()  # one environment only


def test_an_unknown_key_names_the_file_and_the_key(environments):
    path = environments({"max_p99_ration": 1.2})
    with pytest.raises(ValueError) as error:
        get_settings("test")
    message = str(error.value)
    assert message.startswith(f"{path}: unknown canary setting(s)")
    assert "['max_p99_ration']" in message and "max_p99_ratio" in message  # and the known keys


@pytest.mark.parametrize(
    ("canary", "says"),
    [
        ({"max_p99_ratio": -1.5}, "canary.max_p99_ratio must be positive, got -1.5"),
        ({"max_error_rate_increase": -0.01}, "canary.max_error_rate_increase must be in [0, 1]"),
        ({"min_p99_increase_ms": -10}, "canary.min_p99_increase_ms must be >= 0"),
        ({"min_conversion_ratio": "high"}, "canary.min_conversion_ratio must be a number"),
        ({"min_requests": 0}, "canary.min_requests must be at least 1"),
        ({"alpha": 1}, "canary.alpha must be in (0, 1)"),
        ({"steps": [0.5, 0.25]}, "canary.steps must be strictly increasing"),
        ({"steps": [0.0, 0.5]}, "canary.steps must be shares in (0, 1]"),
        ({"steps": [0.5, 1.5]}, "canary.steps must be shares in (0, 1]"),
        ({"steps": "0.1"}, "canary.steps must be a list of shares"),
        ({"promote_needs": ["aov"]}, "canary.promote_needs names unknown guardrail(s) ['aov']"),
        ({"promote_needs": "conversion"}, "canary.promote_needs must be a list"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(environments, canary, says):
    path = environments(canary)
    with pytest.raises(ValueError) as error:
        get_settings("test")
    assert str(error.value).startswith(f"{path}: ")
    assert says in str(error.value)


def test_a_canary_block_that_is_not_a_mapping_is_a_clear_error(environments):
    environments([0.1, 0.5])
    with pytest.raises(ValueError, match=r"test\.yaml: canary must be a mapping"):
        get_settings("test")


def test_the_policy_is_recorded_json_ready():
    recorded = CanaryPolicy().as_dict()
    assert recorded["steps"] == [0.1, 0.25, 0.5, 1.0]
    assert recorded["promote_needs"] == ["conversion"]
    assert set(recorded) == set(CanaryPolicy.__dataclass_fields__)
    assert CanaryPolicy(**recorded) == CanaryPolicy()
    assert set(CanaryPolicy().promote_needs) <= set(GUARDRAILS)


def test_the_project_s_own_files_are_named_from_the_project_root():
    with pytest.raises(ValueError) as error:
        settings._canary({"alpha": 2}, ENVIRONMENTS_DIR / "prod.yaml")
    assert str(error.value) == (
        "recsys_assets/config/environments/prod.yaml: canary.alpha must be in (0, 1), got 2.0"
    )
