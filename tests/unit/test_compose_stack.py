"""The user's compose stack: reading the base, the files written per tool, the merge model and
the budget semantics that follow from the base. No compose tool runs here (see
tests/integration/test_compose_tools.py for the tools' own verdict)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from applies.applying import differs
from applies.runtime.base import ContainerState
from applies.selectors import apply_targets
from assignments.files import model, rendering, tools
from assignments.files.reading import stack_read
from assignments.selectors import config_entries
from assignments.services import config_save
from tests.conftest import FIXTURES

HSI = FIXTURES / "compose" / "hsi"
PLAIN = FIXTURES / "compose" / "plain"
MOVES = [
    {"service": "ai-llm", "gpu_index": 0},
    {"service": "ai-yolo26", "gpu_index": 0},
    {"service": "ai-florence", "gpu_index": 1},
    {"service": "ai-clip", "gpu_index": 0},
    {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5},
]


def copy_stack(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    (target / "data").mkdir(exist_ok=True)
    (target / "models").mkdir(exist_ok=True)
    return target / "docker-compose.yml"


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    """No compose tool on PATH: the project's merge model answers."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    tools.tool_cache_clear()
    yield
    tools.tool_cache_clear()


@pytest.fixture
def hsi(settings, tmp_path, no_tools):
    path = copy_stack(HSI, tmp_path)
    settings.GPUCONFIG_COMPOSE_FILE = str(path)
    return path


def test_reading_the_base_records_how_each_gpu_is_pinned(tmp_path):
    stack = stack_read((copy_stack(HSI, tmp_path),), environ={})
    pins = {name: (s.pin.kind, s.pin.devices, s.pin.variable) for name, s in stack.services.items()}
    assert pins == {
        "backend": ("count", ("count:1",), ""),
        "ai-llm": ("count", ("count:1",), ""),
        "ai-yolo26": ("variable", ("1",), "GPU_YOLO26"),  # from .env
        "ai-florence": ("variable", ("1",), "GPU_FLORENCE"),
        "ai-clip": ("count", ("count:1",), ""),
        "ai-enrichment": ("variable", ("0",), "GPU_ENRICHMENT"),
        "ai-enrichment-light": ("variable", ("1",), "GPU_ENRICHMENT_LIGHT"),  # the default
        "frontend": ("none", (), ""),
    }
    assert stack.services["ai-enrichment"].budget_gb == 6.0
    assert stack.services["ai-enrichment-light"].budget_gb == 2.5
    # The line of its `count: 1`, where a fix is shown.
    line = stack.services["ai-llm"].pin.line
    assert (HSI / "docker-compose.yml").read_text().splitlines()[line - 1].strip() == "count: 1"
    assert set(stack.gpu_services) == set(pins) - {"frontend"}
    assert stack.default_project() == "hsi"


def test_the_environment_wins_over_dotenv_like_compose(tmp_path):
    stack = stack_read((copy_stack(HSI, tmp_path),), environ={"GPU_YOLO26": "0"})
    assert stack.services["ai-yolo26"].pin.devices == ("0",)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:+y}", {"A": "1"}, "y"),
        ("$A/$${B}", {"A": "a"}, "a/${B}"),
        ("${A:-${B:-z}}", {}, "z"),
    ],
)
def test_interpolation_follows_compose(text, env, expected):
    assert model.interpolate_text(text, env) == expected


def test_a_required_variable_that_is_missing_is_an_error():
    with pytest.raises(model.ComposeInvalid, match="GPU_X"):
        model.interpolate_text("${GPU_X:?set GPU_X}", {})


def test_the_model_appends_device_requests_like_compose_and_honours_the_tags():
    def service(devices: str) -> dict:
        return model.load(
            f"services: {{a: {{deploy: {{resources: {{reservations: {{devices: {devices}}}}}}}}}}}"
        )

    base = service("[{driver: nvidia, count: 1}]")
    plain = service("[{driver: nvidia, device_ids: ['1']}]")
    tagged = service("!override [{driver: nvidia, device_ids: ['1']}]")
    reset = service("!reset []")

    def effective(*docs):
        return model.effective_devices(model.merge_files(list(docs))["services"]["a"])

    assert effective(base, plain) == (["count:1", "1"], 2)
    assert effective(base, tagged) == (["1"], 1)
    assert effective(base, reset, plain) == (["1"], 1)


def test_v2_files_replace_the_base_reservation(
    reference_inventory, hsi, settings, django_capture_on_commit_callbacks
):
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V2
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    config = Path(settings.GPUCONFIG_CONFIG_DIR)
    text = (config / rendering.OVERRIDE_NAME).read_text()
    assert text.count("devices: !override") == 5
    assert not (config / rendering.RESET_NAME).exists()
    override = model.load(text)["services"]
    assert set(override) == {"ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment"}
    assert override["ai-enrichment"]["environment"] == ["VRAM_BUDGET_GB=3.5"]
    assert "environment" not in override["ai-llm"]


def test_podman_files_reset_then_add(
    reference_inventory, hsi, settings, django_capture_on_commit_callbacks
):
    settings.GPUCONFIG_COMPOSE_TOOL = tools.PODMAN
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    config = Path(settings.GPUCONFIG_CONFIG_DIR)
    assert "!override" not in (config / rendering.OVERRIDE_NAME).read_text()
    assert (config / rendering.RESET_NAME).read_text().count("devices: !reset []") == 5


def test_v1_uses_the_base_variables_and_reports_what_it_cannot_express(
    reference_inventory, hsi, settings, client
):
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V1
    config_save(strategy="manual", assignments=MOVES)
    entries = config_entries()
    from assignments.files.project import files_render

    rendered = files_render(entries)
    assert "!" not in rendered.files[rendering.OVERRIDE_NAME]
    assert set(rendered.files) == {rendering.OVERRIDE_NAME}
    assert rendered.env_file.splitlines()[-3:] == [
        "GPU_ENRICHMENT=1",
        "GPU_FLORENCE=1",
        "GPU_YOLO26=0",
    ]
    assert "GPU_LLM=0" in rendered.env_file  # the base .env is kept
    assert set(rendered.problems) == {"ai-llm", "ai-clip"}
    assert "count: 1" in rendered.problems["ai-llm"]
    assert "patch -b -p1" in rendered.problems["ai-llm"]
    assert "+              device_ids: ['${GPU_LLM:-0}']" in rendered.patch
    assert "+              device_ids: ['${GPU_CLIP:-0}']" in rendered.patch
    assert rendered.patch.count("-              count: 1") == 2


def test_the_check_without_a_tool_uses_the_merge_model(
    reference_inventory, hsi, settings, staff_client
):
    settings.GPUCONFIG_COMPOSE_PROJECT = "hsi-prod"
    config_save(strategy="manual", assignments=MOVES)
    res = staff_client.get("/api/system/gpu-config/compose")
    assert res.status_code == 200, res.content
    body = res.json()
    assert body["checked_by"] == "model"
    assert body["tool"] == {"name": tools.V2, "version": None}
    assert body["ok"] is True, body
    assert {r["service"]: r["effective"] for r in body["services"]} == {
        "ai-llm": ["0"],
        "ai-yolo26": ["0"],
        "ai-florence": ["1"],
        "ai-clip": ["0"],
        "ai-enrichment": ["1"],
    }
    assert body["up_command"][:4] == ["docker", "compose", "-p", "hsi-prod"]
    assert body["up_command"][-2:] == ["up", "-d"]
    assert body["cwd"] == str(hsi.parent)
    assert body["unmanaged"] == ["ai-enrichment-light", "backend"]

    v1 = staff_client.get("/api/system/gpu-config/compose?tool=docker-compose-v1").json()
    bad = {r["service"]: r for r in v1["services"] if not r["ok"]}
    assert set(bad) == {"ai-llm", "ai-clip"}
    assert bad["ai-llm"]["effective"] == ["count:1"]
    assert v1["ok"] is False
    assert "--env-file" in v1["up_command"]


def test_an_unknown_tool_is_a_400(reference_inventory, hsi, staff_client):
    res = staff_client.get("/api/system/gpu-config/compose?tool=docker-swarm")
    assert res.status_code == 400
    assert "docker-compose-v2" in res.json()["detail"]


def test_a_plain_base_gets_plain_entries_only_for_its_own_services(
    reference_inventory,
    settings,
    tmp_path,
    no_tools,
    staff_client,
    django_capture_on_commit_callbacks,
):
    settings.GPUCONFIG_COMPOSE_FILE = str(copy_stack(PLAIN, tmp_path))
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V2
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    text = (Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.OVERRIDE_NAME).read_text()
    assert "!override" not in text
    assert set(yaml.safe_load(text)["services"]) == {"ai-llm", "ai-yolo26", "ai-enrichment"}
    body = staff_client.get("/api/system/gpu-config/compose").json()
    assert body["ok"] is True
    assert body["not_in_stack"] == ["ai-clip", "ai-florence"]


def test_the_default_budget_is_the_base_files(reference_inventory, hsi, settings):
    entries = {e.service: e for e in config_entries()}
    assert entries["ai-enrichment"].budget_gb == 6.0
    assert entries["ai-enrichment"].budget_saved is False


def test_no_override_saved_means_no_recreate_for_the_budget(reference_inventory, hsi):
    """The ai-enrichment "GPU 0 -> GPU 0" case: a container already on its GPU whose budget is
    the base file's (or anything else) is not recreated when no budget override is saved."""
    config_save(strategy="manual", assignments=[{"service": "ai-enrichment", "gpu_index": 0}])
    target = next(t for t in apply_targets() if t.service == "ai-enrichment")
    assert target.keep_budget
    for budget in (6.0, 6.8, None):
        running = ContainerState("id", "ai-enrichment", "running", None, ("0",), budget)
        assert not differs(running, target)
    moved = ContainerState("id", "ai-enrichment", "running", None, ("1",), 6.0)
    assert differs(moved, target)


def test_a_budget_above_the_card_is_saved_with_the_guides_warning(
    reference_inventory, staff_client
):
    res = staff_client.put(
        "/api/system/gpu-config",
        {"assignments": [{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 5}]},
        format="json",
    )
    assert res.status_code == 200, res.content
    body = res.json()
    details = [d for d in body["warning_details"] if d["service"] == "ai-enrichment"]
    assert [d["suggested_budget_gb"] for d in details] == [3.5], body
    assert any("3.5 GB" in w for w in body["warnings"])
    for nonsense in (0, -1, "lots", 2000):
        res = staff_client.put(
            "/api/system/gpu-config",
            {
                "assignments": [
                    {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": nonsense}
                ]
            },
            format="json",
        )
        assert res.status_code == 400, nonsense


def test_the_page_shows_the_command_and_flags_what_the_tool_gets_wrong(
    reference_inventory, hsi, settings, client, staff_user
):
    client.force_login(staff_user)
    config_save(strategy="manual", assignments=MOVES)
    page = client.get("/settings/gpu/").content.decode()
    assert 'hx-get="/settings/gpu/compose/"' in page  # filled by its own request
    body = client.get("/settings/gpu/compose/?tool=docker-compose-v1").content.decode()
    assert "docker-compose -p hsi -f" in body
    assert body.count('class="compose-bad"') == 2  # ai-llm and ai-clip: count: 1 in the base
    assert "patch -b -p1" in body
    assert "Patch for the base file" in body
    ok = client.get("/settings/gpu/compose/").content.decode()
    assert "docker compose -p hsi -f" in ok
    assert 'class="compose-bad"' not in ok
    assert client.get("/settings/gpu/compose/?tool=nope").status_code == 400


def test_stack_gpu_services_missing_from_the_catalog_are_offered_not_added(
    reference_inventory, hsi, client, staff_user, plain_user
):
    from assignments.models import AiService, ConfigVersion

    client.force_login(staff_user)
    body = client.get("/settings/gpu/compose/").content.decode()
    assert 'name="service" value="ai-enrichment-light"' in body
    assert 'name="service" value="backend"' in body
    assert not AiService.objects.filter(name__in=["backend", "ai-enrichment-light"]).exists()
    res = client.post(
        "/settings/gpu/compose/add/", {"service": "ai-enrichment-light", "vram_gb": "2.5"}
    )
    assert res.status_code == 302
    added = AiService.objects.get(name="ai-enrichment-light")
    assert (added.vram_required_mb, added.budget_adjustable, added.default_budget_gb) == (
        2560,
        True,
        2.5,
    )
    # Added as every catalog change is saved: with a version naming who added it.
    version = ConfigVersion.objects.order_by("-pk").first()
    assert (version.source, version.actor) == (ConfigVersion.Source.CATALOG, staff_user.username)
    assert "ai-enrichment-light" in [a["service"] for a in version.assignments]
    client.post("/settings/gpu/compose/add/", {"service": "frontend", "vram_gb": "1"})
    assert not AiService.objects.filter(name="frontend").exists()  # no GPU: not offered
    client.force_login(plain_user)
    client.post("/settings/gpu/compose/add/", {"service": "backend", "vram_gb": "1"})
    assert not AiService.objects.filter(name="backend").exists()


def test_the_admin_offers_them_with_the_estimate_filled_in(reference_inventory, hsi, admin_client):
    body = admin_client.get("/admin/assignments/aiservice/").content.decode()
    assert "GPU services of the compose stack not in the catalog" in body
    assert "name=ai-enrichment-light" in body and "vram_required_mb=2560" in body
