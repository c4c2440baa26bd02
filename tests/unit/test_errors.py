"""Refusals carry their reason as data: where it belongs and what HTTP status it means."""

from __future__ import annotations

import pytest

from applies.services import ApplyBusy
from assignments.services import ConfigInvalid, config_validate
from gpuconfig_site.errors import ApplicationError, http_status


def _refusal(**change) -> ApplicationError:
    with pytest.raises(ConfigInvalid) as caught:
        config_validate(**change)
    return caught.value


def test_a_budget_refusal_names_its_service_and_field(reference_inventory):
    error = _refusal(
        assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 2000}]
    )
    assert error.extra == {
        "code": "config_invalid",
        "service": "ai-enrichment",
        "field": "vram_budget_override",
    }
    assert error.message.startswith("ai-enrichment: a VRAM budget of 2000 GB is more than")


def test_a_gpu_refusal_names_the_gpu_field(reference_inventory):
    error = _refusal(assignments=[{"service": "ai-llm", "gpu_index": 7}])
    assert error.extra == {"code": "gpu_unavailable", "service": "ai-llm", "field": "gpu_index"}


def test_an_unknown_strategy_has_one_message(reference_inventory):
    error = _refusal(strategy="fastest")
    assert error.extra == {"code": "unknown_strategy", "field": "strategy"}
    assert error.message.startswith("Unknown strategy 'fastest'; choose one of: manual,")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigInvalid("no"), 400),
        (ApplyBusy("busy"), 409),
        (ApplicationError("down", code="engine_unavailable"), 503),
        (ApplicationError("refused", code="engine_refused"), 502),
    ],
)
def test_each_kind_of_refusal_maps_to_one_status(error, status):
    assert http_status(error) == status
