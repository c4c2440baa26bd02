"""Mapping NVML's host PIDs to containers: ``/proc/<pid>/cgroup`` parsing from real and written
samples (``tests/fixtures/cgroup``), and the attribution of a scan's processes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gpus.attribution import (
    COMPUTE,
    GRAPHICS,
    ContainerOwner,
    ContainerRef,
    ProcReader,
    container_of,
    processes_attribute,
    service_totals,
)
from gpus.backends.base import GpuReading

CGROUPS = Path(__file__).parents[1] / "fixtures" / "cgroup"

DOCKER_ID = "8d45bb1a96ec28b7348556bdbdd8ce497e638ada2345ee4c3f10aab8067b8144"
PODMAN_ID = "ea685625c916dae004cfeef7c6dc74bd6e4870c912ddce88e2c877dfee04a654"
ROOTLESS_ID = "9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b2d"


def sample(name: str) -> str:
    return (CGROUPS / name).read_text()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Captured here from the test engines (cgroup v1, cgroupfs driver).
        ("docker-v1-cgroupfs.txt", ContainerRef(DOCKER_ID, "docker")),
        ("podman-v1.txt", ContainerRef(PODMAN_ID, "podman")),
        # Written in the shapes of systemd-managed cgroup v2 hosts and Kubernetes.
        (
            "docker-v2-systemd.txt",
            ContainerRef(
                "3f1c0a9e5b7d4c2a8e6f0b1d3c5a7e9f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a", "docker"
            ),
        ),
        ("podman-v2-rootless.txt", ContainerRef(ROOTLESS_ID, "podman")),
        ("podman-v2-conmon.txt", ContainerRef(ROOTLESS_ID, "podman")),
        (
            "podman-v2-root.txt",
            ContainerRef(
                "5e7a9c1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b2d4f6a8c", "podman"
            ),
        ),
        (
            "kubernetes-v2-systemd.txt",
            ContainerRef(
                "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "containerd"
            ),
        ),
        (
            "kubernetes-v1-cgroupfs.txt",
            ContainerRef(
                "c0ffee1234567890abcdef1234567890abcdef1234567890abcdef1234567890", "kubernetes"
            ),
        ),
    ],
)
def test_cgroup_file_names_the_container_and_its_engine(name, expected):
    assert container_of(sample(name)) == expected


@pytest.mark.parametrize(
    "name", ["host-session-v2.txt", "host-service-v2.txt", "podman-conmon-v1.txt"]
)
def test_process_outside_any_container_has_none(name):
    """A login session, a systemd service and Podman's conmon under cgroupfs (which names no
    container) are host processes."""
    assert container_of(sample(name)) is None


def test_this_test_process_is_a_host_process():
    """Read from the real /proc: the test runner is in no container."""
    assert container_of(Path(f"/proc/{os.getpid()}/cgroup").read_text()) is None


def fake_proc(root: Path, pid: int, *, comm: str, cgroup: str) -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "comm").write_text(comm + "\n")
    shutil.copyfile(CGROUPS / cgroup, folder / "cgroup")


def reading(uuid: str, processes=(), graphics=()) -> GpuReading:
    return GpuReading(
        index=0, uuid=uuid, name="GPU", processes=tuple(processes), graphics_processes=graphics
    )


def test_scan_processes_are_attributed_to_services_and_others(tmp_path):
    """Docker and Podman containers the resolver knows become their services; a container it
    does not manage keeps its name; a host process and an invisible PID are others."""
    fake_proc(tmp_path, 101, comm="llama-server", cgroup="docker-v1-cgroupfs.txt")
    fake_proc(tmp_path, 102, comm="python3", cgroup="podman-v1.txt")
    fake_proc(tmp_path, 103, comm="ollama", cgroup="host-service-v2.txt")
    fake_proc(tmp_path, 104, comm="jupyter", cgroup="podman-v2-rootless.txt")
    asked: list[set[str]] = []

    def resolve(ids):
        asked.append(set(ids))
        return {
            DOCKER_ID: ContainerOwner("hsi-ai-llm-1", "ai-llm"),
            PODMAN_ID: ContainerOwner("hsi_ai-clip_1", "ai-clip"),
            ROOTLESS_ID: ContainerOwner("notebook", None),
        }

    readings = [
        reading("GPU-0", [(101, 20480), (103, 2048), (999, 512)]),
        reading("GPU-1", [(102, 1200)], graphics=((104, 300),)),
    ]
    found = processes_attribute(
        readings=readings, reader=ProcReader(str(tmp_path)), resolve=resolve
    )

    assert asked == [{DOCKER_ID, PODMAN_ID, ROOTLESS_ID}]  # one call for the whole scan
    gpu0 = {p.pid: p for p in found["GPU-0"]}
    assert (gpu0[101].service, gpu0[101].container_name, gpu0[101].name) == (
        "ai-llm",
        "hsi-ai-llm-1",
        "llama-server",
    )
    assert (gpu0[103].service, gpu0[103].container_id, gpu0[103].name) == (None, "", "ollama")
    assert gpu0[999].resolved is False and gpu0[999].name == ""
    gpu1 = {p.pid: p for p in found["GPU-1"]}
    assert gpu1[102].service == "ai-clip" and gpu1[102].kind == COMPUTE
    assert (gpu1[104].service, gpu1[104].container_name, gpu1[104].kind) == (
        None,
        "notebook",
        GRAPHICS,
    )
    assert service_totals(found) == {("ai-llm", "GPU-0"): 20480, ("ai-clip", "GPU-1"): 1200}


def test_a_pid_listed_as_compute_and_graphics_counts_once(tmp_path):
    fake_proc(tmp_path, 7, comm="Xorg", cgroup="host-session-v2.txt")
    found = processes_attribute(
        readings=[reading("GPU-0", [(7, 100)], graphics=((7, 120),))],
        reader=ProcReader(str(tmp_path)),
    )
    assert [(p.pid, p.used_mb) for p in found["GPU-0"]] == [(7, 120)]


def test_an_engine_that_cannot_answer_leaves_processes_with_their_container_ids(tmp_path):
    fake_proc(tmp_path, 101, comm="llama-server", cgroup="docker-v1-cgroupfs.txt")

    def resolve(ids):
        raise ConnectionError("engine away")

    found = processes_attribute(
        readings=[reading("GPU-0", [(101, 100)])], reader=ProcReader(str(tmp_path)), resolve=resolve
    )
    (process,) = found["GPU-0"]
    assert (process.container_id, process.service, process.resolved) == (DOCKER_ID, None, True)


def test_a_reused_pid_is_read_again(tmp_path):
    """The reader remembers a PID until its /proc entry is a new one."""
    fake_proc(tmp_path, 5, comm="old", cgroup="host-service-v2.txt")
    reader = ProcReader(str(tmp_path))
    assert reader.read(5).name == "old"
    shutil.rmtree(tmp_path / "5")
    assert reader.read(5).resolved is False
    fake_proc(tmp_path, 5, comm="new", cgroup="docker-v1-cgroupfs.txt")
    seen = reader.read(5)
    assert seen.name == "new" and seen.container.id == DOCKER_ID


def test_lost_gpus_are_not_attributed(tmp_path):
    lost = GpuReading(index=1, uuid="GPU-1", name="GPU", lost=True, processes=((5, 10),))
    assert processes_attribute(readings=[lost], reader=ProcReader(str(tmp_path))) == {}
