"""The lint of the user's stack, one test per rule: each one finds its problem in a base that
has it, gives its fix, and stays quiet on the same base without it. Read through the API
(``GET /api/system/gpu-config/lint``) with the files gpuconfig writes merged in."""

from __future__ import annotations

import pytest
import yaml

from assignments.services import config_save
from tests.unit.test_compose_stack import no_tools  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

HEALTHY = {
    "image": "busybox",
    "restart": "unless-stopped",
    "healthcheck": {"test": ["CMD", "true"]},
    "deploy": {
        "resources": {
            "reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}
        }
    },
}


@pytest.fixture
def lint(settings, tmp_path, reference_inventory, staff_client, no_tools):  # noqa: F811
    """Writes a base whose ai-llm is HEALTHY plus ``changes``, saves ai-llm on GPU 0, returns the
    lint's findings for ``rule``."""
    settings.GPUCONFIG_CDI_SPEC_DIRS = [str(tmp_path / "cdi")]

    def findings(rule: str, **changes) -> list[dict]:
        service = {**HEALTHY, **changes}
        service = {k: v for k, v in service.items() if v is not None}
        base = tmp_path / "stack" / "docker-compose.yml"
        base.parent.mkdir(exist_ok=True)
        base.write_text(yaml.safe_dump({"services": {"ai-llm": service}}))
        settings.GPUCONFIG_COMPOSE_FILE = str(base)
        config_save(strategy="manual", assignments=[{"service": "ai-llm", "gpu_index": 0}])
        response = staff_client.get("/api/system/gpu-config/lint")
        assert response.status_code == 200
        report = response.json()
        assert report["error"] == ""
        return [f for f in report["findings"] if f["rule"] == rule]

    return findings


def test_a_healthy_gpu_service_has_no_finding(lint):
    assert lint("env-against-assignment") == []
    assert lint("privileged") == lint("no-healthcheck") == lint("restart-no") == []


def test_nvidia_visible_devices_against_the_assignment_is_found(lint):
    (found,) = lint("env-against-assignment", environment={"NVIDIA_VISIBLE_DEVICES": "1"})
    assert found["service"] == "ai-llm" and "Remove NVIDIA_VISIBLE_DEVICES" in found["fix"]
    assert lint("env-against-assignment", environment={"NVIDIA_VISIBLE_DEVICES": "0"}) == []


def test_cuda_visible_devices_against_the_assignment_is_found(lint):
    # Every GPU exposed, CUDA selects one: gpuconfig rewrites it, so no finding.
    exposed = {
        "deploy": None,
        "devices": ["nvidia.com/gpu=all"],
        "environment": {"CUDA_VISIBLE_DEVICES": "1"},
    }
    assert lint("env-against-assignment", **exposed) == []
    # No GPU in the base: gpuconfig's request exposes one, and CUDA asks for a second one.
    (found,) = lint(
        "env-against-assignment", deploy=None, environment={"CUDA_VISIBLE_DEVICES": "1"}
    )
    assert "CUDA_VISIBLE_DEVICES=1" in found["message"]


def test_privileged_is_found(lint):
    (found,) = lint("privileged", privileged=True)
    assert "every GPU" in found["message"] and "cap_add" in found["fix"]


def test_dev_nvidia_mounted_directly_is_found(lint):
    (found,) = lint("dev-nvidia-mounted", devices=["/dev/nvidia1:/dev/nvidia1"])
    assert "/dev/nvidia1" in found["message"]
    (found,) = lint("dev-nvidia-mounted", volumes=["/dev/nvidiactl:/dev/nvidiactl"])
    assert "/dev/nvidiactl" in found["message"]
    assert lint("dev-nvidia-mounted", devices=["/dev/null:/dev/x"]) == []


def test_a_reservation_without_the_gpu_capability_is_found(lint):
    request = {"driver": "nvidia", "count": 1}
    deploy = {"resources": {"reservations": {"devices": [request]}}}
    (found,) = lint("reservation-without-gpu-capability", deploy=deploy)
    assert "capabilities: [gpu]" in found["fix"]


def test_a_gpu_service_without_a_healthcheck_is_found(lint):
    (found,) = lint("no-healthcheck", healthcheck=None)
    assert "Apply cannot tell" in found["message"]
    assert lint("no-healthcheck", healthcheck={"disable": True})


def test_restart_no_is_found(lint):
    (found,) = lint("restart-no", restart="no")
    assert "unless-stopped" in found["fix"]
    assert lint("restart-no", restart="always") == []


def test_a_cdi_spec_without_the_common_device_nodes_is_found(lint, tmp_path):
    folder = tmp_path / "cdi"
    folder.mkdir()
    device = {"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}}
    spec = {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [device]}
    (folder / "nvidia.yaml").write_text(yaml.safe_dump(spec))
    cdi = {"deploy": None, "devices": ["nvidia.com/gpu=0"]}
    (found,) = lint("cdi-spec-without-common-nodes", **cdi)
    assert "/dev/nvidiactl, /dev/nvidia-uvm" in found["message"]
    assert "ai-llm" in found["message"] and "nvidia-ctk cdi generate" in found["fix"]
    spec["containerEdits"] = {
        "deviceNodes": [{"path": "/dev/nvidiactl"}, {"path": "/dev/nvidia-uvm"}]
    }
    (folder / "nvidia.yaml").write_text(yaml.safe_dump(spec))
    assert lint("cdi-spec-without-common-nodes", **cdi) == []


def test_gpuconfig_check_prints_the_lint(lint, capsys):
    from ops.health import check_lint

    lint("restart-no", restart="no")
    check = check_lint()
    assert check.ok is False and "restart-no" in check.detail
