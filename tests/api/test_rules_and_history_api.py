"""Rules and history through the API: rules read and replaced, honoured by a preview and
reported when they conflict; versions listed, compared and rolled back to; the configuration
exported to YAML and imported (with a dry run). Bad input gets a 400 with the reason, and
changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assignments.models import ConfigVersion, ServiceRule
from gpus.services import gpu_scan_run
from tests.conftest import config_files, reference_uuid, saved_state

pytestmark = pytest.mark.django_db

BASE = "/api/system/gpu-config"


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run a request with its after-commit work (the generated files) done."""

    def do(call, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return call(*args, **kwargs)

    return do


def rules_state():
    return sorted(
        (r.service.name, r.pin_gpu_uuid, r.exclusive, r.priority, tuple(r.never_with.all()))
        for r in ServiceRule.objects.select_related("service")
    )


def save(client, commit, assignments, strategy=None):
    body = {"assignments": assignments}
    if strategy:
        body["strategy"] = strategy
    response = commit(client.put, BASE, body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["version"]


# --- rules ---------------------------------------------------------------------------------


def test_rules_are_read_and_replaced_as_a_whole(staff_client, reference_inventory):
    assert staff_client.get(f"{BASE}/rules").json()["rules"] == []
    body = {
        "rules": [
            {"service": "ai-llm", "pin_gpu_uuid": reference_uuid(0), "exclusive": True},
            {"service": "ai-clip", "never_with": ["ai-yolo26"], "priority": 3},
        ]
    }
    response = staff_client.put(f"{BASE}/rules", body, format="json")
    assert response.status_code == 200, response.json()
    rules = {r["service"]: r for r in staff_client.get(f"{BASE}/rules").json()["rules"]}
    assert rules["ai-llm"]["pin_gpu_uuid"] == reference_uuid(0)
    assert rules["ai-llm"]["exclusive"] is True
    assert rules["ai-clip"] == {
        "service": "ai-clip",
        "pin_gpu_uuid": None,
        "exclusive": False,
        "never_with": ["ai-yolo26"],
        "priority": 3,
    }
    staff_client.put(f"{BASE}/rules", {"rules": [body["rules"][1]]}, format="json")
    assert [r["service"] for r in staff_client.get(f"{BASE}/rules").json()["rules"]] == ["ai-clip"]


def test_a_preview_honours_the_rules(staff_client, reference_inventory):
    staff_client.put(
        f"{BASE}/rules",
        {"rules": [{"service": "ai-clip", "pin_gpu_uuid": reference_uuid(1)}]},
        format="json",
    )
    for strategy in ("vram_based", "latency_optimized", "isolation_first", "balanced"):
        preview = staff_client.get(f"{BASE}/preview", {"strategy": strategy}).json()
        placed = {a["service"]: a["gpu_index"] for a in preview["proposed_assignments"]}
        assert placed["ai-clip"] == 1, strategy


def test_rules_that_cannot_hold_are_a_rule_conflict_naming_them(staff_client, reference_inventory):
    body = {
        "rules": [
            {"service": "ai-llm", "exclusive": True, "priority": 5},
            {"service": "ai-enrichment", "exclusive": True},
        ]
    }
    answer = staff_client.put(f"{BASE}/rules", body, format="json").json()
    conflicts = [w for w in answer["warning_details"] if w["code"] == "rule_conflict"]
    assert len(conflicts) == 1
    assert conflicts[0]["rules"] == ["ai-llm exclusive", "ai-enrichment exclusive"]
    assert "add a GPU" in conflicts[0]["remedies"]
    assert conflicts[0]["service"] == "ai-enrichment"  # the lower priority gives way
    preview = staff_client.get(f"{BASE}/preview", {"strategy": "vram_based"}).json()
    assert any(w["code"] == "rule_conflict" for w in preview["warning_details"])


def test_a_manual_edit_that_breaks_a_rule_is_saved_with_a_warning(
    staff_client, reference_inventory, commit
):
    staff_client.put(
        f"{BASE}/rules",
        {"rules": [{"service": "ai-clip", "never_with": ["ai-yolo26"]}]},
        format="json",
    )
    response = commit(
        staff_client.put,
        BASE,
        {
            "strategy": "manual",
            "assignments": [
                {"service": "ai-clip", "gpu_index": 1},
                {"service": "ai-yolo26", "gpu_index": 1},
            ],
        },
        format="json",
    )
    assert response.status_code == 200
    broken = [w for w in response.json()["warning_details"] if w["code"] == "rule_broken"]
    assert [w["service"] for w in broken] == ["ai-clip"]
    assert "ai-clip and ai-yolo26 share GPU 1" in broken[0]["message"]


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ({"service": "ai-nope"}, "Unknown service 'ai-nope'"),
        ({"service": "ai-llm", "pin_gpu_uuid": "GPU-missing"}, "no GPU with UUID 'GPU-missing'"),
        ({"service": "ai-llm", "never_with": ["ai-llm"]}, "kept apart from itself"),
        ({"service": "ai-llm", "never_with": ["ghost"]}, "unknown service 'ghost'"),
        ({"service": "ai-llm", "priority": -1}, "priority must be between 0 and 1000"),
        ({"service": "ai-llm", "exclusive": "yes"}, "exclusive must be true or false"),
        ({"service": "ai-llm", "colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_bad_rules_get_a_400_with_the_reason_and_change_nothing(
    staff_client, reference_inventory, settings, rule, reason
):
    staff_client.put(f"{BASE}/rules", {"rules": [{"service": "ai-clip", "priority": 2}]})
    before = (saved_state(settings), rules_state())
    good = {"service": "ai-yolo26", "exclusive": True}
    response = staff_client.put(f"{BASE}/rules", {"rules": [good, rule]}, format="json")
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert (saved_state(settings), rules_state()) == before


def test_changing_rules_needs_a_staff_account(viewer_client, reference_inventory):
    response = viewer_client.put(f"{BASE}/rules", {"rules": []}, format="json")
    assert response.status_code == 403
    assert viewer_client.get(f"{BASE}/rules").status_code == 200


# --- versions, diff, rollback ---------------------------------------------------------------


def test_versions_are_listed_newest_first_with_their_ids(staff_client, reference_inventory, commit):
    first = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 1}])
    second = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 0}])
    versions = staff_client.get(f"{BASE}/versions").json()["versions"]
    assert [v["id"] for v in versions][:2] == [second, first]
    assert versions[0]["source"] == "save"


def test_the_diff_of_two_versions_gives_gpu_and_budget_before_and_after(
    staff_client, reference_inventory, commit
):
    first = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 1}])
    second = save(
        staff_client,
        commit,
        [
            {"service": "ai-clip", "gpu_index": 0},
            {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.0},
        ],
    )
    diff = staff_client.get(f"{BASE}/versions/{first}/diff/{second}").json()
    assert diff["changes"] == [
        {
            "service": "ai-clip",
            "before": {"gpu_index": 1, "vram_budget_override": None},
            "after": {"gpu_index": 0, "vram_budget_override": None},
        },
        {
            "service": "ai-enrichment",
            "before": {"gpu_index": 1, "vram_budget_override": None},
            "after": {"gpu_index": 1, "vram_budget_override": 3.0},
        },
    ]
    back = staff_client.get(f"{BASE}/versions/{second}/diff/{first}").json()["changes"]
    assert [(c["before"], c["after"]) for c in back] == [
        (c["after"], c["before"]) for c in diff["changes"]
    ]
    assert staff_client.get(f"{BASE}/versions/{first}/diff/{first}").json()["changes"] == []


def test_a_diff_with_an_unknown_version_is_a_404(staff_client, reference_inventory, commit):
    first = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 1}])
    response = staff_client.get(f"{BASE}/versions/{first}/diff/999999")
    assert response.status_code == 404
    assert "no configuration version 999999" in response.json()["detail"]


def test_rolling_back_records_a_new_version_with_the_old_assignments(
    staff_client, reference_inventory, commit, settings
):
    old = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 1}])
    save(
        staff_client,
        commit,
        [
            {"service": "ai-clip", "gpu_index": 0},
            {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 2.5},
        ],
    )
    count = ConfigVersion.objects.count()
    response = commit(staff_client.post, f"{BASE}/versions/{old}/restore")
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert ConfigVersion.objects.count() == count + 1
    assert answer["version"] == ConfigVersion.objects.order_by("-pk").first().pk != old
    assert ConfigVersion.objects.get(pk=answer["version"]).source == "rollback"
    assert [c["service"] for c in answer["changes"]] == ["ai-clip", "ai-enrichment"]
    current = {a["service"]: a for a in staff_client.get(BASE).json()["assignments"]}
    assert current["ai-clip"]["gpu_index"] == 1
    assert current["ai-enrichment"]["vram_budget_override"] is None
    diff = staff_client.get(f"{BASE}/versions/{old}/diff/{answer['version']}").json()
    assert diff["changes"] == []
    written = yaml.safe_load(
        (Path(settings.GPUCONFIG_CONFIG_DIR) / "gpu-assignments.yml").read_text()
    )
    assert written["assignments"]["ai-clip"]["gpu"] == 1


def test_rolling_back_to_an_unknown_version_is_a_404_and_changes_nothing(
    staff_client, reference_inventory, settings
):
    before = saved_state(settings)
    response = staff_client.post(f"{BASE}/versions/424242/restore")
    assert response.status_code == 404
    assert saved_state(settings) == before


def test_rolling_back_to_a_version_whose_gpu_is_gone_is_refused(
    staff_client, reference_inventory, commit, settings
):
    old = save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 1}])
    version = ConfigVersion.objects.get(pk=old)
    version.assignments = [
        {**e, "gpu_uuid": "GPU-long-gone"} if e["service"] == "ai-clip" else e
        for e in version.assignments
    ]
    version.save()
    save(staff_client, commit, [{"service": "ai-clip", "gpu_index": 0}])
    before = saved_state(settings)
    response = staff_client.post(f"{BASE}/versions/{old}/restore")
    assert response.status_code == 400
    assert "GPU-long-gone" in response.json()["detail"]
    assert saved_state(settings) == before


# --- export and import ----------------------------------------------------------------------


def test_export_is_yaml_with_strategy_gpus_assignments_and_rules(staff_client, reference_inventory):
    staff_client.put(
        f"{BASE}/rules", {"rules": [{"service": "ai-llm", "exclusive": True}]}, format="json"
    )
    response = staff_client.get(f"{BASE}/export")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    document = yaml.safe_load(response.content)
    assert document["gpuconfig"] == 1
    assert [g["uuid"] for g in document["gpus"]] == [reference_uuid(0), reference_uuid(1)]
    by_service = {a["service"]: a for a in document["assignments"]}
    assert by_service["ai-enrichment"]["gpu_uuid"] == reference_uuid(1)
    assert document["rules"][0]["service"] == "ai-llm"


def exported(client) -> dict:
    return yaml.safe_load(client.get(f"{BASE}/export").content)


def post_yaml(client, document, *, dry_run=False):
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    url = f"{BASE}/import" + ("?dry_run=1" if dry_run else "")
    return client.post(url, text, content_type="application/yaml")


def test_an_import_dry_run_answers_the_diff_and_changes_nothing(
    staff_client, reference_inventory, settings
):
    document = exported(staff_client)
    for entry in document["assignments"]:
        if entry["service"] == "ai-clip":
            entry.update(gpu_index=1, gpu_uuid=reference_uuid(1))
    before = (saved_state(settings), rules_state())
    response = post_yaml(staff_client, document, dry_run=True)
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert answer["dry_run"] is True and answer["version"] is None
    assert answer["changes"] == [
        {
            "service": "ai-clip",
            "before": {"gpu_index": 0, "vram_budget_override": None},
            "after": {"gpu_index": 1, "vram_budget_override": None},
        }
    ]
    assert {m["by"] for m in answer["gpu_matches"]} == {"uuid"}
    assert (saved_state(settings), rules_state()) == before


def test_an_import_from_another_box_matches_gpus_by_name_and_size(
    staff_client, reference_inventory, commit
):
    """The other box's GPUs have other UUIDs (and other indices): matched by name and size."""
    document = exported(staff_client)
    other = {reference_uuid(0): "GPU-other-a5500", reference_uuid(1): "GPU-other-a400"}
    for gpu in document["gpus"]:
        gpu["uuid"] = other[gpu["uuid"]]
        gpu["index"] = 1 - gpu["index"]
    for entry in document["assignments"]:
        entry["gpu_uuid"] = other.get(entry["gpu_uuid"], entry["gpu_uuid"])
        if entry["service"] == "ai-clip":
            entry["gpu_uuid"] = "GPU-other-a400"
    document["rules"] = [{"service": "ai-llm", "pin_gpu_uuid": "GPU-other-a5500"}]
    response = commit(post_yaml, staff_client, document)
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert {(m["from_uuid"], m["to_index"], m["by"]) for m in answer["gpu_matches"]} == {
        ("GPU-other-a5500", 0, "name_and_size"),
        ("GPU-other-a400", 1, "name_and_size"),
    }
    assert ConfigVersion.objects.get(pk=answer["version"]).source == "import"
    current = {a["service"]: a["gpu_index"] for a in staff_client.get(BASE).json()["assignments"]}
    assert current["ai-clip"] == 1
    rules = staff_client.get(f"{BASE}/rules").json()["rules"]
    assert rules == [
        {
            "service": "ai-llm",
            "pin_gpu_uuid": reference_uuid(0),
            "exclusive": False,
            "never_with": [],
            "priority": 0,
        }
    ]


def _unknown_service(document):
    document["assignments"].append({"service": "ai-nope", "gpu_index": 0, "gpu_uuid": None})
    return document


def _unknown_gpu(document):
    document["gpus"].append(
        {"index": 7, "uuid": "GPU-h100", "name": "NVIDIA H100", "vram_total_mb": 81559}
    )
    document["assignments"][0]["gpu_uuid"] = "GPU-h100"
    return document


def _pin_to_missing_gpu(document):
    document["rules"] = [{"service": "ai-llm", "pin_gpu_uuid": "GPU-missing"}]
    return document


def _bad_budget(document):
    document["assignments"][-1]["vram_budget_override"] = -3
    return document


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_unknown_service, "unknown service 'ai-nope'"),
        (_unknown_gpu, "unknown GPU(s): NVIDIA H100 (GPU-h100)"),
        (_pin_to_missing_gpu, "pinned to GPU GPU-missing, which this box does not have"),
        (_bad_budget, "vram_budget_override must be greater than 0 GB"),
        (lambda d: "- just\n- a list\n", "not a gpuconfig configuration"),
        (lambda d: "key: [unclosed\n", "the YAML does not parse"),
        (lambda d: {"gpuconfig": 1, "strategy": "manual"}, "it has no assignments"),
        (lambda d: {**d, "gpuconfig": 99}, "the key gpuconfig must be 1"),
        (lambda d: {**d, "strategy": "random"}, "Unknown strategy 'random'"),
        (lambda d: {**d, "assignments": [{"service": ["x"]}]}, "assignments[0] has no service"),
        (lambda d: {**d, "rules": {"a": 1}}, "rules must be a list"),
        (lambda d: "[" * 5000 + "]" * 5000, "not a gpuconfig configuration"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_bad_import_gets_a_400_with_the_reason_and_changes_nothing(
    staff_client, reference_inventory, settings, change, reason, dry_run
):
    document = change(exported(staff_client))
    before = (saved_state(settings), rules_state())
    response = post_yaml(staff_client, document, dry_run=dry_run)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert (saved_state(settings), rules_state()) == before


def test_an_empty_import_body_is_a_400(staff_client, reference_inventory):
    response = staff_client.post(f"{BASE}/import", "", content_type="application/yaml")
    assert response.status_code == 400
    assert "Send the YAML" in response.json()["detail"]


def test_a_service_left_unplaced_for_priority_is_previewed_saved_and_shown_without_a_gpu(
    staff_client, staff_user, client, reference_inventory, commit, settings
):
    """Memory is short (a 12 GB card in place of the 24 GB one): with priorities set, the
    preview leaves a lower priority off its GPU with a warning, and the page's preview shows it
    unassigned; saving that plan keeps it without a GPU (its generated files give it no
    device), and the page still answers."""
    entries = yaml.safe_load(reference_inventory.read_text())
    entries[0].update(vram_total_mb=12288, vram_used_mb=0)  # a 12 GB card in place of 24 GB
    reference_inventory.write_text(yaml.safe_dump(entries))
    gpu_scan_run()
    staff_client.put(
        f"{BASE}/rules",
        {"rules": [{"service": "ai-llm", "priority": 9}, {"service": "ai-clip", "priority": 5}]},
        format="json",
    )
    preview = staff_client.get(f"{BASE}/preview", {"strategy": "vram_based"}).json()
    left = [w for w in preview["warning_details"] if w["code"] == "unplaced_for_priority"]
    assert left, preview["warning_details"]
    placed = {a["service"]: a["gpu_index"] for a in preview["proposed_assignments"]}
    for warning in left:
        assert placed[warning["service"]] is None
        assert warning["service"] not in ("ai-llm", "ai-clip")
        assert f"{warning['service']} is left unplaced" in warning["message"]
    assert (placed["ai-llm"], placed["ai-clip"]) == (0, 1)

    client.force_login(staff_user)
    shown = client.get("/settings/gpu/preview/?strategy=vram_based", HTTP_HX_REQUEST="true")
    assert shown.status_code == 200
    assert f"<strong>{left[0]['service']}</strong>: GPU" in shown.content.decode()
    assert "→ Unassigned" in shown.content.decode()

    response = commit(staff_client.put, BASE, {"strategy": "vram_based"}, format="json")
    assert response.status_code == 200, response.json()
    saved = {a["service"]: a["gpu_index"] for a in staff_client.get(BASE).json()["assignments"]}
    assert saved == placed
    listed = yaml.safe_load(config_files(settings)["gpu-assignments.yml"])["assignments"]
    override = config_files(settings)["docker-compose.gpu-override.yml"]
    for warning in left:
        assert listed[warning["service"]]["gpu"] is None
        assert f"  {warning['service']}:" not in override  # no device reserved
    assert "Not placed on any GPU: " in override
    assert client.get("/settings/gpu/").status_code == 200
