"""The generated override merges cleanly over a base compose file (Debian's docker-compose)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from assignments.models import GpuConfig
from assignments.services import config_save
from tests.conftest import config_files, reference_uuid

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

BASE = {
    "services": {
        name: {
            "image": "gpuconfig-test/busybox:latest",
            "network_mode": "none",
            "command": ["sleep", "3600"],
            **(
                {"environment": ["VRAM_BUDGET_GB=6.8", "MODEL_ZOO=/models"]}
                if name == "ai-enrichment"
                else {}
            ),
        }
        for name in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
    }
}


def compose_config(tmp_path, override_text: str) -> dict:
    compose = shutil.which("docker-compose")
    assert compose, "Debian's docker-compose is needed (apt-get install docker-compose)"
    (tmp_path / "base.yml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "override.yml").write_text(override_text)
    done = subprocess.run(
        [compose, "-f", "base.yml", "-f", "override.yml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.parametrize("strategy", ["vram_based", "isolation_first", "balanced"])
def test_override_merges_with_the_base_file(
    reference_inventory, django_capture_on_commit_callbacks, settings, tmp_path, strategy
):
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy=strategy)
        if strategy == "isolation_first":
            # The saved strategy stays isolation_first; only the budget is set on top of its plan.
            config_save(
                assignments=[
                    {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5}
                ]
            )
    assert GpuConfig.load().strategy == strategy
    assignments = yaml.safe_load(config_files(settings)["gpu-assignments.yml"])
    assert assignments["strategy"] == strategy
    merged = compose_config(tmp_path, config_files(settings)["docker-compose.gpu-override.yml"])
    services = merged["services"]
    assert set(services) == set(BASE["services"])
    for svc in services.values():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"
        assert devices[0]["capabilities"] == ["gpu"]
        assert svc["image"] == "gpuconfig-test/busybox:latest"
    env = services["ai-enrichment"]["environment"]
    # compose merges environment lists by variable: the override's budget wins, the rest stays
    assert env["MODEL_ZOO"] == "/models"
    if strategy == "isolation_first":
        assert env["VRAM_BUDGET_GB"] == "3.5"
        for name in BASE["services"]:
            devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert devices[0]["device_ids"] == (["0"] if name == "ai-llm" else ["1"]), name


def test_uuid_device_ids_merge_too(
    reference_inventory, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.GPUCONFIG_DEVICE_ID_FORMAT = "uuid"
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="vram_based")
    merged = compose_config(tmp_path, config_files(settings)["docker-compose.gpu-override.yml"])
    services = merged["services"]

    def ids(service):
        return services[service]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]

    # vram_based: the LLM on the big card, the rest wherever most VRAM is left
    assert ids("ai-llm") == [reference_uuid(0)]
    saved = yaml.safe_load(config_files(settings)["gpu-assignments.yml"])["assignments"]
    for name in BASE["services"]:
        assert ids(name) == [reference_uuid(saved[name]["gpu"])], name
