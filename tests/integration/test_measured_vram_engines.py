"""Measured VRAM on real containers: the NVML stand-in reports the real host PIDs of the
stack's containers (from the engine's inspect, ``State.Pid``) and of a plain host process; the
scan goes through pynvml in a child process, the attribution through this machine's /proc and
the real engine, and each process lands on its service or among the others."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from applies import ownership
from gpus.backends.base import GpuReading
from gpus.services import gpu_inventory_sync, processes_attribute
from tests.plugins.dockerd import SERVICES
from tests.plugins.nvml import NVML_STUB_DATA

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

A5500_UUID = "GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500"


def inventory_without_processes(tmp_path: Path) -> Path:
    """The reference GPUs with no process of their own: the test gives them real PIDs."""
    data = tmp_path / "gpus.txt"
    lines = (NVML_STUB_DATA / "reference.txt").read_text().splitlines()
    data.write_text("\n".join(line for line in lines if not line.startswith("process")) + "\n")
    return data


def as_reading(entry: dict) -> GpuReading:
    entry = dict(entry)
    entry["compute_capability"] = tuple(entry["compute_capability"] or ()) or None
    entry["processes"] = tuple(tuple(p) for p in entry["processes"])
    entry["graphics_processes"] = tuple(tuple(p) for p in entry["graphics_processes"])
    return GpuReading(**entry)


def test_each_container_is_attributed_to_its_service_and_a_host_process_is_other(
    engine_stack_shared, nvml_scan, settings, tmp_path, key_client
):
    stack = engine_stack_shared
    settings.GPUCONFIG_COMPOSE_PROJECT = stack.project
    settings.GPUCONFIG_CONTAINER_RUNTIME = stack.engine
    ownership._listed.clear()
    containers = {s: stack.inspect(stack.container(s)["Id"]) for s in SERVICES}
    pids = {s: int(c["State"]["Pid"]) for s, c in containers.items()}
    assert all(pids.values()), pids
    used = {s: 1000 + 100 * n for n, s in enumerate(SERVICES)}
    host = subprocess.Popen(["sleep", "120"])
    try:
        listing = tmp_path / "processes.txt"
        listing.write_text(
            "".join(f"0 compute {pids[s]} {used[s]}\n" for s in SERVICES[:4])
            # The enrichment draws too (a graphics context) on the small GPU.
            + f"1 graphics {pids['ai-enrichment']} {used['ai-enrichment']}\n"
            + f"0 compute {host.pid} 512\n"
        )
        outcome = nvml_scan(
            inventory_without_processes(tmp_path),
            env={"GPUCONFIG_NVML_STUB_PROCESSES": str(listing)},
        )
        assert "error" not in outcome, outcome
        readings = [as_reading(r) for r in outcome["readings"]]
        processes = processes_attribute(readings)
        gpu_inventory_sync(readings=readings, backend="nvml", processes=processes)
    finally:
        host.kill()
        host.wait()

    gpus = {g["uuid"]: g for g in key_client.get("/api/system/gpus").json()["gpus"]}
    listed = {p["pid"]: p for g in gpus.values() for p in g["processes"]}
    for service in SERVICES:
        process = listed[pids[service]]
        name = containers[service]["Name"].lstrip("/")
        assert (process["service"], process["container"], process["used_mb"]) == (
            service,
            name,
            used[service],
        ), (stack.engine, process)
    assert listed[pids["ai-enrichment"]]["kind"] == "graphics"
    assert listed[host.pid] == {
        "pid": host.pid,
        "name": "sleep",
        "used_mb": 512,
        "service": None,
        "container": None,
        "kind": "compute",
    }
    services = {
        s["name"]: s for s in key_client.get("/api/system/gpu-config/services").json()["services"]
    }
    assert {s: services[s]["vram_used_mb"] for s in SERVICES} == used


def test_a_container_of_another_project_is_other_with_its_name(
    engine_stack_shared, nvml_scan, settings, tmp_path
):
    """The same containers, but gpuconfig manages another compose project: none is a
    service's; each keeps its container's name."""
    stack = engine_stack_shared
    settings.GPUCONFIG_COMPOSE_PROJECT = f"{stack.project}-not"
    settings.GPUCONFIG_CONTAINER_RUNTIME = stack.engine
    ownership._listed.clear()
    inspected = stack.inspect(stack.container("ai-llm")["Id"])
    listing = tmp_path / "processes.txt"
    listing.write_text(f"0 compute {inspected['State']['Pid']} 2048\n")
    outcome = nvml_scan(
        inventory_without_processes(tmp_path),
        env={"GPUCONFIG_NVML_STUB_PROCESSES": str(listing)},
    )
    processes = processes_attribute([as_reading(r) for r in outcome["readings"]])
    (process,) = processes[A5500_UUID]
    assert process.service is None
    assert process.container_id == inspected["Id"]
    assert process.container_name == inspected["Name"].lstrip("/")
