"""Reading every GPU form of a base and what the compose check says about it, with gpuconfig's
merge model (no compose tool on PATH; tests/integration/test_compose_forms.py runs the tools):
the gateway stack, compose profiles, a base that cannot be read, no base at all, ``?tool=``
for a tool other than the one in use, and docker-compose 1.29's ``version:``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assignments.files import model, rendering, tools
from assignments.files.reading import stack_read
from assignments.models import AiService
from assignments.services import config_save
from tests.conftest import FIXTURES
from tests.unit.test_compose_stack import copy_stack, no_tools  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

FORMS = FIXTURES / "compose" / "forms"
GATEWAY = FIXTURES / "compose" / "gateway"


def test_reading_finds_each_form_and_the_variable_it_reads(tmp_path):
    found = {}
    for form in ("reservation", "cdi", "runtime", "cuda", "gpus"):
        stack = stack_read((copy_stack(FORMS / form, tmp_path / form),), environ={})
        found[form] = {n: (s.form, s.use.effective, s.variables) for n, s in stack.services.items()}
    assert found["cdi"]["ai-llm"] == ("cdi", ["1"], {"cdi": "GPU_LLM"})  # .env says 1
    assert found["cdi"]["ai-florence"] == ("cdi", ["1"], {})
    assert found["runtime"]["ai-llm"] == ("runtime", ["1"], {"runtime": "GPU_LLM"})
    assert found["cuda"]["ai-llm"] == ("cdi+cuda", ["1"], {"cuda": "GPU_LLM"})
    assert found["cuda"]["ai-florence"] == ("reservation+cuda", ["1"], {})
    # device_ids ['0', '1'] with CUDA_VISIBLE_DEVICES=1: the second one exposed.
    assert found["cuda"]["ai-clip"][:2] == ("reservation+cuda", ["1"])
    assert found["gpus"]["ai-llm"][:2] == ("gpus", ["all"])
    assert found["gpus"]["ai-yolo26"][:2] == ("gpus", ["1"])
    assert found["reservation"]["ai-yolo26"][:2] == ("reservation", ["count:1"])


def test_effective_follows_cuda_among_what_is_exposed():
    use = model.gpu_use
    assert use(
        {"devices": ["nvidia.com/gpu=all"], "environment": ["CUDA_VISIBLE_DEVICES=1"]}
    ).effective == ["1"]
    pair = {"devices": ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]}
    assert use({**pair, "environment": {"CUDA_VISIBLE_DEVICES": "1"}}).effective == ["1"]
    assert use({**pair, "environment": {"CUDA_VISIBLE_DEVICES": "0"}}).effective == ["0"]
    # CUDA stops at an id past what is exposed: no GPU.
    one = {"devices": ["nvidia.com/gpu=1"], "environment": {"CUDA_VISIBLE_DEVICES": "1"}}
    assert use(one).effective == []
    # The runtime's variable counts only with runtime: nvidia.
    assert use({"environment": {"NVIDIA_VISIBLE_DEVICES": "1"}}).effective == []
    assert (
        use({"runtime": "nvidia", "environment": {"NVIDIA_VISIBLE_DEVICES": "void"}}).effective
        == []
    )
    # Two forms, two GPUs: both are reported.
    both = {"devices": ["nvidia.com/gpu=0"], "gpus": [{"driver": "nvidia", "device_ids": ["1"]}]}
    assert use(both).effective == ["0", "1"] and use(both).sources == 2


@pytest.fixture
def gateway(settings, tmp_path, reference_inventory, no_tools):  # noqa: F811
    AiService.objects.create(
        name="ai-gateway", display_name="Triton gateway", vram_required_mb=6000, sort_order=9
    )
    base = copy_stack(GATEWAY, tmp_path)
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    return base


def _page(client) -> str:
    from django.contrib.auth import get_user_model
    from django.test import Client

    browser = Client()
    browser.force_login(get_user_model().objects.get(is_staff=True))
    response = browser.get("/settings/gpu/compose/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def _report(client, **params) -> dict:
    response = client.get("/api/system/gpu-config/compose", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_gateway_stack_moved_to_gpu_0_keeps_its_cdi_all_and_selects_with_cuda(
    gateway, settings, staff_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=[{"service": "ai-gateway", "gpu_index": 0}])
    report = _report(staff_client)
    rows = {r["service"]: r for r in report["services"]}
    assert rows["ai-gateway"] == {
        "service": "ai-gateway",
        "form": "cdi+cuda",
        "assigned": ["0"],
        "effective": ["0"],
        "ok": True,
        "problem": "",
    }
    # The base reads CUDA_VISIBLE_DEVICES from a variable: gpuconfig sets it, lists untouched.
    env = (Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.ENV_NAME).read_text()
    assert env.splitlines()[-1] == "GPU_AI_SERVICES=0"
    override = (Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.OVERRIDE_NAME).read_text()
    assert "devices" not in override and "CUDA_VISIBLE_DEVICES" not in override
    assert "--env-file" in report["config_command"]
    assert report["unmanaged"] == ["backend"]
    # ai-llm is under the inactive `vlm` profile: listed apart, not checked, not "missing".
    assert report["inactive"] == [{"service": "ai-llm", "profiles": ["vlm"], "form": "cdi"}]
    assert "ai-llm" not in rows and "ai-llm" not in report["not_in_stack"]


def test_a_profile_made_active_by_gpuconfig_places_the_vlm_by_its_variable(
    gateway, settings, staff_client, django_capture_on_commit_callbacks
):
    settings.GPUCONFIG_COMPOSE_PROFILES = "vlm"
    with django_capture_on_commit_callbacks(execute=True):
        config_save(
            strategy="manual",
            assignments=[
                {"service": "ai-gateway", "gpu_index": 1},
                {"service": "ai-llm", "gpu_index": 0},
            ],
        )
    report = _report(staff_client)
    rows = {r["service"]: r for r in report["services"]}
    assert rows["ai-llm"]["form"] == "cdi" and rows["ai-llm"]["ok"], rows["ai-llm"]
    assert rows["ai-llm"]["effective"] == ["0"]
    assert report["inactive"] == [] and report["profiles"] == ["vlm"]
    assert report["up_command"][report["up_command"].index("--profile") + 1] == "vlm"
    env = (Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.ENV_NAME).read_text()
    assert "GPU_LLM=0" in env.splitlines()


def test_compose_profiles_in_the_environment_activate_a_profile(gateway, monkeypatch):
    monkeypatch.setenv("COMPOSE_PROFILES", "vlm")
    stack = stack_read((gateway,))
    assert "ai-llm" in stack.services and not stack.inactive


def test_a_base_gpuconfig_cannot_read_says_why(gateway, staff_client):
    gateway.write_text("services:\n  x: !!python/object:os.system {}\n")
    report = _report(staff_client)
    assert report["ok"] is False
    assert report["error"].startswith("gpuconfig cannot read the base compose file:")
    assert "python/object" in report["error"]
    assert report["base_files"] == [str(gateway)]  # not taken for "no file"
    assert report["notice"] == ""
    page = _page(staff_client)
    assert "gpuconfig cannot read the base compose file" in page
    assert "Set GPUCONFIG_COMPOSE_FILE" not in page


def test_without_a_base_the_panel_says_what_to_set_and_shows_no_error(
    settings, reference_inventory, staff_client, monkeypatch, tmp_path
):
    # A compose tool is installed: it is not run on the override alone (it would fail on
    # services with neither an image nor a build context).
    settings.GPUCONFIG_COMPOSE_FILE = None
    report = _report(staff_client)
    assert report["error"] == "" and report["checked_by"] == "model"
    assert report["notice"].startswith("No base compose file is set: set GPUCONFIG_COMPOSE_FILE")
    assert all(r["problem"] == "" for r in report["services"]), report["services"]
    page = _page(staff_client)
    assert "No base compose file is set" in page
    assert 'role="alert"' not in page


def test_another_tool_asked_gets_its_files_in_a_preview_folder_the_commands_name(
    gateway, settings, staff_client
):
    config_save(strategy="manual", assignments=[{"service": "ai-gateway", "gpu_index": 0}])
    report = _report(staff_client, tool=tools.PODMAN)
    folder = Path(settings.GPUCONFIG_CONFIG_DIR).resolve() / "preview" / tools.PODMAN
    assert report["files_dir"] == str(folder)
    assert f"files in {Path(settings.GPUCONFIG_CONFIG_DIR).resolve()} are for" in report["preview"]
    named = [a for a in report["config_command"] if a.startswith(str(folder))]
    assert named and all(Path(a).is_file() for a in named)
    # The tool in use has no preview: its files are the ones in the config folder.
    assert _report(staff_client)["preview"] == ""


def test_docker_compose_v1_files_carry_the_base_version(tmp_path):
    entries = []
    for version, expected in ((None, "3.9"), ("3.9", "3.9"), ("2.4", "2.4")):
        base = tmp_path / f"b{expected}{version}" / "docker-compose.yml"
        base.parent.mkdir()
        data = {"services": {"web": {"image": "busybox"}}}
        if version:
            data = {"version": version, **data}
        base.write_text(yaml.safe_dump(data))
        stack = stack_read((base,), environ={})
        out = rendering.render(entries, stack=stack, tool=tools.V1, id_format="index")
        assert yaml.safe_load(out.files[rendering.OVERRIDE_NAME]) == {
            "version": expected,
            "services": {},
        }
        v2 = rendering.render(entries, stack=stack, tool=tools.V2, id_format="index")
        assert "version" not in yaml.safe_load(v2.files[rendering.OVERRIDE_NAME])


def test_a_service_hosting_several_models_needs_their_sum_edited_in_the_admin(
    gateway, staff_user, django_capture_on_commit_callbacks
):
    """The gateway's parts, added in the admin's inline, make its need; the page lists them."""
    from django.test import Client

    gateway_service = AiService.objects.get(name="ai-gateway")
    browser = Client()
    staff_user.is_superuser = True
    staff_user.save()
    browser.force_login(staff_user)
    url = f"/admin/assignments/aiservice/{gateway_service.pk}/change/"
    form = {
        "name": "ai-gateway",
        "display_name": "Triton gateway",
        "vram_required_mb": "6000",
        "sort_order": "9",
        "enabled": "on",
        "parts-TOTAL_FORMS": "3",
        "parts-INITIAL_FORMS": "0",
        "parts-MIN_NUM_FORMS": "0",
        "parts-MAX_NUM_FORMS": "1000",
    }
    for i, (name, mb) in enumerate((("detector", 2048), ("re-id", 1024), ("threat", 1536))):
        form |= {
            f"parts-{i}-name": name,
            f"parts-{i}-vram_mb": str(mb),
            f"parts-{i}-sort_order": str(i),
        }
    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    gateway_service.refresh_from_db()
    assert gateway_service.vram_required_mb == 2048 + 1024 + 1536
    assert [p.name for p in gateway_service.parts.all()] == ["detector", "re-id", "threat"]
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=[{"service": "ai-gateway", "gpu_index": 0}])
    page = _page(browser)
    assert "hosts detector 2.0 GB + re-id 1.0 GB + threat 1.5 GB" in page
