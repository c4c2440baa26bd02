"""docker-compose 1.29 (Debian's /usr/bin/docker-compose) on a base whose two GPU services are
pinned by ``count: 1``: gpuconfig can change nothing from another file there, so its override
has no service; without ``version:`` 1.29 read it as the old version 1 format and refused every
command ("Version mismatch"). The page's ``config`` and ``up`` commands must run as shown, on a
``version``-less base and on a ``version: "3.9"`` base."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from assignments.files import rendering, tools
from assignments.services import config_save
from tests.integration import test_compose_tools

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

tool_env = test_compose_tools.tool_env

GPU_SERVICE = {
    "image": "gpuconfig-test/busybox:latest",
    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
    "network_mode": "none",
    "deploy": {
        "resources": {
            "reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}
        }
    },
}


def _base(tmp_path: Path, version: str | None) -> Path:
    data: dict = {"services": {"ai-llm": GPU_SERVICE, "ai-yolo26": GPU_SERVICE}}
    if version:
        data = {"version": version, **data}
    base = tmp_path / "stack" / "docker-compose.yml"
    base.parent.mkdir()
    base.write_text(yaml.safe_dump(data, sort_keys=False))
    return base


def _run(argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stderr}"
    return done


@pytest.mark.docker
@pytest.mark.parametrize("version", [None, "3.9"], ids=["no-version", "version-3.9"])
def test_v1_config_and_up_run_as_the_page_shows_them(
    version,
    docker_engine,
    tool_env,
    reference_inventory,
    settings,
    tmp_path,
    staff_client,
    django_capture_on_commit_callbacks,
):
    base = _base(tmp_path, version)
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    settings.GPUCONFIG_COMPOSE_TOOL = tools.V1
    settings.GPUCONFIG_COMPOSE_PROJECT = f"gpucv1{uuid.uuid4().hex[:8]}"
    with django_capture_on_commit_callbacks(execute=True):
        config_save(
            strategy="manual",
            assignments=[
                {"service": "ai-llm", "gpu_index": 0},
                {"service": "ai-yolo26", "gpu_index": 1},
            ],
        )
    override = Path(settings.GPUCONFIG_CONFIG_DIR) / rendering.OVERRIDE_NAME
    assert yaml.safe_load(override.read_text()) == {"version": version or "3.9", "services": {}}
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["tool"]["name"] == tools.V1 and report["checked_by"] == "tool"
    assert report["error"] == "", report["error"]  # no "Version mismatch"
    # count: 1 cannot be replaced from another file by 1.29: reported with the patch.
    assert all("patch -b -p1" in row["problem"] for row in report["services"])
    assert report["config_command"][0] == "docker-compose"
    config = yaml.safe_load(_run(report["config_command"], report["cwd"]).stdout)
    assert set(config["services"]) == {"ai-llm", "ai-yolo26"}
    try:
        _run(report["up_command"], report["cwd"])
    finally:
        subprocess.run(
            [*report["up_command"][:-2], "down", "-v", "--timeout", "1"],
            cwd=report["cwd"],
            capture_output=True,
            timeout=180,
            check=False,
        )
