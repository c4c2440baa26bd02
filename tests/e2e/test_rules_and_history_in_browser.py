"""Rules and history in a real browser against the simulated reference hardware (RTX A5500
24 GB + RTX A400 4 GB): set a rule and preview a plan that honours it, see a conflict of rules
on the status strip, compare two versions, roll back after a confirmation showing the diff,
and import a configuration after a preview."""

from __future__ import annotations

import re

import pytest
import yaml
from playwright.sync_api import expect
from rest_framework.test import APIClient

from assignments.services import config_save
from tests.conftest import API_KEY, reference_uuid
from tests.e2e.pages import STAFF, screenshot

pytestmark = pytest.mark.e2e


def api(path: str):
    return APIClient(headers={"X-API-Key": API_KEY}).get(f"/api/system{path}")


def gpus_of(assignments: list[dict]) -> dict[str, int | None]:
    return {a["service"]: a["gpu_index"] for a in assignments}


def saved_gpus() -> dict[str, int | None]:
    return gpus_of(api("/gpu-config").json()["assignments"])


def test_a_rule_set_on_the_page_is_honoured_by_the_preview(browsing, reference_gpus, staff_user):
    free = api("/gpu-config/preview?strategy=vram_based").json()["proposed_assignments"]
    other = 1 - gpus_of(free)["ai-clip"]  # pin it where the strategy would not put it
    page = browsing.login(*STAFF)
    rules = page.locator("#rules")
    rules.get_by_label("Pin ai-clip to").select_option(reference_uuid(other))
    rules.get_by_role("button", name="Save rules").click()
    expect(page.locator(".messages")).to_contain_text("Rules saved")
    expect(page.locator("#rules").get_by_label("Pin ai-clip to")).to_have_value(
        reference_uuid(other)
    )
    page.get_by_label("Strategy").select_option("vram_based")
    expect(page.locator("#assignments .notice")).to_contain_text("Preview of VRAM-Based")
    expect(page.get_by_label("GPU for ai-clip")).to_have_value(str(other))
    screenshot(page, "rules-preview-desktop")


def test_rules_that_cannot_all_hold_show_on_the_status_strip(browsing, reference_gpus, staff_user):
    page = browsing.login(*STAFF)
    count = page.locator("#status-strip #problem-count")
    before = count.inner_text()
    rules = page.locator("#rules")
    rules.get_by_label("ai-llm exclusive").check()
    rules.get_by_label("ai-enrichment exclusive").check()
    rules.get_by_role("button", name="Save rules").click()
    expect(page.locator(".messages")).to_contain_text("Rules saved")
    problems = page.locator("#warnings")
    expect(problems).to_contain_text("These rules cannot all hold on these GPUs")
    expect(problems).to_contain_text("ai-llm exclusive, ai-enrichment exclusive")
    expect(problems).to_contain_text("add a GPU")
    # The rule kept (ai-llm exclusive) is broken by the saved layout: a second problem.
    expect(problems).to_contain_text("ai-llm should have GPU 0 (RTX A5500) to itself")
    n = int(re.match(r"(\d+)", before).group(1)) if before[0].isdigit() else 0
    expect(count).to_have_text(f"{n + 2} problems")
    screenshot(page, "rules-conflict-desktop")


@pytest.fixture
def two_versions(reference_gpus):
    """Two saved versions: ai-clip on GPU 1, then on GPU 0 with a 3 GB enrichment budget."""
    first = config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}]).version
    second = config_save(
        assignments=[
            {"service": "ai-clip", "gpu_index": 0},
            {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.0},
        ]
    ).version
    return first.pk, second.pk


def test_two_versions_are_compared_on_the_page(browsing, two_versions, staff_user):
    first, second = two_versions
    page = browsing.login(*STAFF)
    versions = page.locator("#versions")
    versions.get_by_label(f"Compare from version {first}").check()
    versions.get_by_label(f"Compare to version {second}").check()
    versions.get_by_role("button", name="Compare").click()
    diff = page.locator("#version-diff")
    expect(diff).to_contain_text(f"Version {first} → version {second}")
    rows = diff.locator("tr.change-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("ai-clip")
    expect(rows.nth(0)).to_contain_text("GPU 1")
    expect(rows.nth(0)).to_contain_text("GPU 0")
    expect(rows.nth(1)).to_contain_text("3.0 GB")


def test_a_rollback_shows_its_diff_first_and_records_a_new_version(
    browsing, two_versions, staff_user
):
    first, second = two_versions
    page = browsing.login(*STAFF)
    page.locator("#versions").get_by_label(f"Roll back to version {first}").click()
    confirm = page.locator("#restore-confirm")
    expect(confirm).to_contain_text(f"Roll back to version {first}?")
    expect(confirm.locator("tr.change-row")).to_have_count(2)
    assert saved_gpus()["ai-clip"] == 0  # nothing changed while asking
    screenshot(page, "rollback-confirm-desktop")
    confirm.get_by_role("button", name="Roll back").click()
    expect(page.locator(".messages")).to_contain_text(f"Rolled back to version {first}")
    assert saved_gpus()["ai-clip"] == 1
    versions = api("/gpu-config/versions").json()["versions"]
    assert versions[0]["source"] == "rollback" and versions[0]["id"] > second
    assert api(f"/gpu-config/versions/{first}/diff/{versions[0]['id']}").json()["changes"] == []


def test_an_import_is_previewed_before_it_changes_anything(browsing, reference_gpus, staff_user):
    document = yaml.safe_load(api("/gpu-config/export").content)
    before = saved_gpus()
    target = 1 - before["ai-clip"]
    for entry in document["assignments"]:
        if entry["service"] == "ai-clip":
            entry.update(gpu_index=target, gpu_uuid=reference_uuid(target))
    page = browsing.login(*STAFF)
    versions = page.locator("#versions")
    versions.get_by_label("Configuration to import (YAML)").fill(yaml.safe_dump(document))
    versions.get_by_role("button", name="Preview import").click()
    preview = page.locator("#import-preview")
    expect(preview).to_contain_text("Import preview")
    expect(preview.locator("tr.change-row")).to_have_count(1)
    expect(preview.locator("tr.change-row")).to_contain_text("ai-clip")
    assert saved_gpus() == before  # the preview changed nothing
    screenshot(page, "import-preview-desktop")
    preview.get_by_role("button", name="Import").click()
    expect(page.locator(".messages")).to_contain_text("Configuration imported as version")
    assert saved_gpus() == {**before, "ai-clip": target}


def test_an_import_that_is_not_a_configuration_is_refused_on_the_page(
    browsing, reference_gpus, staff_user
):
    before = saved_gpus()
    page = browsing.login(*STAFF)
    versions = page.locator("#versions")
    versions.get_by_label("Configuration to import (YAML)").fill("- just\n- a list\n")
    versions.get_by_role("button", name="Preview import").click()
    expect(page.locator("#versions-error")).to_contain_text("not a gpuconfig configuration")
    assert saved_gpus() == before
