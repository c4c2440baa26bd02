"""Apply for each GPU form on the real engines: the stack comes up with the page's command, an
apply with nothing changed recreates nothing, an apply that moves services to GPU 0 gives each
new container its GPU the way its form does, and a later ``up -d`` recreates nothing (files and
containers agree).

- Docker 20.10 (Debian's dockerd) under Compose v2: ``CUDA_VISIBLE_DEVICES`` selecting among
  every GPU (``count: all``), literal and from ``.env``. This engine has no CDI (Docker 25+
  does), so CDI-pinned services cannot be created on it at all; the Docker runtime keeps a
  Docker 25+ ``cdi`` device request a CDI name (tests/unit/test_runtime_gpu_forms.py).
- Podman 4.3 under podman-compose 1.6, with the CDI stand-in spec: CDI names (from ``.env`` and
  literal) and ``nvidia.com/gpu=all`` with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from applies.runtime import podman as podman_runtime
from assignments.files import tools
from assignments.services import config_save
from tests.integration import test_compose_tools
from tests.integration.test_compose_tools import _apply, _containers
from tests.plugins.dockerd import BASE_COMPOSE

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

tool_env = test_compose_tools.tool_env


def _stand_in(**gpu) -> dict:
    """A service of the engines' base (busybox that looks like an AI service) with ``gpu``."""
    service = dict(yaml.safe_load(BASE_COMPOSE.read_text())["x-ai-service"])
    service.pop("volumes", None)
    return {**service, **gpu}


def _write_base(directory: Path, services: dict, dotenv: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "data").mkdir()
    (directory / ".env").write_text(dotenv)
    base = directory / "docker-compose.yml"
    base.write_text(yaml.safe_dump({"services": services}, sort_keys=False))
    return base


def _compose(argv: list[str], cwd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=240, check=False, env=env
    )
    assert done.returncode == 0, f"{argv}\n{done.stderr}"
    return done


def _save(placement: dict[str, int], capture) -> None:
    with capture(execute=True):
        config_save(
            strategy="manual",
            assignments=[{"service": s, "gpu_index": g} for s, g in placement.items()],
        )


@pytest.mark.docker
def test_docker_cuda_pinned_services_keep_every_gpu_and_select_gpu_0(
    docker_engine,
    tool_env,
    reference_inventory,
    settings,
    tmp_path,
    staff_client,
    django_capture_on_commit_callbacks,
):
    every = {
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
                }
            }
        }
    }
    base = _write_base(
        tmp_path / "stack",
        {
            "ai-llm": _stand_in(**every, environment={"CUDA_VISIBLE_DEVICES": "${GPU_LLM:-0}"}),
            "ai-clip": _stand_in(**every, environment={"CUDA_VISIBLE_DEVICES": "1"}),
        },
        "GPU_LLM=1\n",
    )
    project = f"gpucf{uuid.uuid4().hex[:8]}"
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V2
    settings.GPUCONFIG_COMPOSE_PROJECT = project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 90
    settings.GPUCONFIG_HEALTH_GRACE = 1
    _save({"ai-llm": 1, "ai-clip": 1}, django_capture_on_commit_callbacks)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"], report
    assert {r["form"] for r in report["services"]} == {"reservation+cuda"}
    up = report["up_command"]
    try:
        _compose(up, report["cwd"])
        first = {s: c["Id"] for s, c in _containers(project).items()}
        assert set(first) == {"ai-llm", "ai-clip"}

        run = _apply(django_capture_on_commit_callbacks)
        assert (run.status, run.results) == ("succeeded", {}), run.log

        _save({"ai-llm": 0, "ai-clip": 0}, django_capture_on_commit_callbacks)
        assert staff_client.get("/api/system/gpu-config/compose").json()["ok"]
        run = _apply(django_capture_on_commit_callbacks)
        assert run.status == "succeeded", (run.error, run.log)
        assert set(run.results) == {"ai-llm", "ai-clip"}
        import docker

        client = docker.from_env()
        try:
            after = _containers(project)
            for service in ("ai-llm", "ai-clip"):
                attrs = client.api.inspect_container(after[service]["Id"])
                (request,) = attrs["HostConfig"]["DeviceRequests"]
                assert request["Count"] == -1, request  # still every GPU
                assert "CUDA_VISIBLE_DEVICES=0" in attrs["Config"]["Env"], service
        finally:
            client.close()
        ids = {s: c["Id"] for s, c in after.items()}
        again = _compose(up, report["cwd"])
        assert {s: c["Id"] for s, c in _containers(project).items()} == ids, again.stderr
        # A second apply has nothing to do either.
        run = _apply(django_capture_on_commit_callbacks)
        assert (run.status, run.results) == ("succeeded", {}), run.log
    finally:
        subprocess.run(
            [*up[:-2], "down", "-v", "--timeout", "1"],
            cwd=report["cwd"],
            capture_output=True,
            timeout=180,
            check=False,
        )


@pytest.fixture
def committed_inventory(simulated_gpus, live_db):
    """The reference inventory in a committed database: Podman recreates run in threads, each
    writing its journal through its own connection."""
    from gpus.services import gpu_scan_run
    from tests.conftest import guide_layout

    gpu_scan_run()
    guide_layout()


@pytest.mark.podman
@pytest.mark.django_db(transaction=True)
def test_podman_cdi_and_cuda_pinned_services_move_in_their_form(
    podman_service,
    tool_env,
    committed_inventory,
    settings,
    tmp_path,
    monkeypatch,
    staff_client,
    django_capture_on_commit_callbacks,
):
    monkeypatch.setenv("CONTAINER_HOST", podman_service.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    base = _write_base(
        tmp_path / "stack",
        {
            "ai-llm": _stand_in(devices=["nvidia.com/gpu=${GPU_LLM:-0}"]),
            "ai-clip": _stand_in(devices=["nvidia.com/gpu=1"]),
            "ai-yolo26": _stand_in(
                devices=["nvidia.com/gpu=all"], environment={"CUDA_VISIBLE_DEVICES": "1"}
            ),
        },
        "GPU_LLM=1\n",
    )
    project = f"gpucq{uuid.uuid4().hex[:8]}"
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.PODMAN
    settings.GPUCONFIG_COMPOSE_PROJECT = project
    settings.GPUCONFIG_CONTAINER_RUNTIME = "podman"
    settings.GPUCONFIG_HEALTH_TIMEOUT = 90
    settings.GPUCONFIG_HEALTH_GRACE = 1
    _save({"ai-llm": 1, "ai-clip": 1, "ai-yolo26": 1}, django_capture_on_commit_callbacks)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"], report
    forms = {r["service"]: r["form"] for r in report["services"]}
    assert forms == {"ai-llm": "cdi", "ai-clip": "cdi", "ai-yolo26": "cdi+cuda"}
    up = report["up_command"]
    env = podman_service.cli_env()

    def containers() -> dict[str, dict]:
        listed = podman_service.podman(
            "ps",
            "-a",
            "--format",
            "json",
            "--filter",
            f"label=com.docker.compose.project={project}",
        ).stdout
        return {c["Labels"]["com.docker.compose.service"]: c for c in json.loads(listed or "[]")}

    try:
        _compose(up, report["cwd"], env)
        first = {s: c["Id"] for s, c in containers().items()}
        assert set(first) == {"ai-llm", "ai-clip", "ai-yolo26"}

        run = _apply(django_capture_on_commit_callbacks)
        assert (run.status, run.results) == ("succeeded", {}), run.log

        _save({"ai-llm": 0, "ai-clip": 0, "ai-yolo26": 0}, django_capture_on_commit_callbacks)
        assert staff_client.get("/api/system/gpu-config/compose").json()["ok"]
        run = _apply(django_capture_on_commit_callbacks)
        assert run.status == "succeeded", (run.error, run.log)
        assert set(run.results) == {"ai-llm", "ai-clip", "ai-yolo26"}
        after = containers()
        devices, envs = {}, {}
        for service, listed in after.items():
            attrs = json.loads(podman_service.podman("inspect", listed["Id"]).stdout)[0]
            devices[service] = podman_runtime.created_devices(attrs)
            envs[service] = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert devices == {
            "ai-llm": ["nvidia.com/gpu=0"],
            "ai-clip": ["nvidia.com/gpu=0"],
            "ai-yolo26": ["nvidia.com/gpu=all"],
        }
        assert envs["ai-yolo26"]["CUDA_VISIBLE_DEVICES"] == "0"
        ids = {s: c["Id"] for s, c in after.items()}
        _compose(up, report["cwd"], env)
        assert {s: c["Id"] for s, c in containers().items()} == ids
        run = _apply(django_capture_on_commit_callbacks)
        assert (run.status, run.results) == ("succeeded", {}), run.log
    finally:
        subprocess.run(
            [*up[:-2], "down", "-v", "--timeout", "1"],
            cwd=report["cwd"],
            capture_output=True,
            timeout=180,
            check=False,
            env=env,
        )
        podman_service.podman("pod", "rm", "-f", "--ignore", f"pod_{project}", check=False)
