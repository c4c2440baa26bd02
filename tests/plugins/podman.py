"""A real Podman service for the tests, and the five AI services running on it under
podman-compose.

``podman_service`` (session) starts the private service of ``scripts/test-podman.sh`` (or reuses
the one running): its own containers.conf, store and socket under ``GPUCONFIG_PODMAN_DIR``
(default ``/tmp/gpuconfig-podman``), a ``podman`` wrapper that podman-compose finds first on
PATH, and the CDI stand-in spec in /etc/cdi, which is removed when the session ends.
``podman_stack`` brings the services of ``tests/fixtures/compose/base.yml`` up with the same
GPU override as the Docker stack (podman-compose turns it into ``--device nvidia.com/gpu=0``),
in a project of its own, and removes everything afterwards. It points ``CONTAINER_HOST`` at the
service for the test (and clears ``DOCKER_HOST``), so ``auto`` finds Podman.
``podman_stack_shared`` is the same stack brought up once per test module, for tests that only
read it; like ``compose_stack_shared``, it fails a test that leaves the containers changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient

from tests.plugins.dockerd import (
    BASE_COMPOSE,
    PROJECT_LABEL,
    SERVICES,
    gpu_override,
    run_tool,
    untouched_state,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-podman.sh"
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")


@dataclass(frozen=True)
class PodmanService:
    """The private service: its socket URL and the folder holding the ``podman`` wrapper."""

    host: str
    bin_dir: Path

    def cli_env(self) -> dict[str, str]:
        """An environment in which ``podman`` (and so podman-compose) is the private one."""
        env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_HOST", "DOCKER_HOST")}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_tool([str(self.bin_dir / "podman"), *args], env=self.cli_env(), check=check)


def _script(command: str) -> subprocess.CompletedProcess[str]:
    return run_tool(["bash", str(SCRIPT), command])


def service_start() -> PodmanService:
    """Start the test service if it is not running; return where it answers."""
    values = dict(
        line.split("=", 1) for line in _script("start").stdout.splitlines() if "=" in line
    )
    return PodmanService(host=values["CONTAINER_HOST"], bin_dir=Path(values["PODMAN_BIN"]))


def service_stop() -> None:
    """Stop the test service and remove its CDI stand-in spec."""
    _script("stop")


class PodmanStack:
    """A podman-compose project of the five services, with the same calls as the Docker
    ``ComposeStack``."""

    engine = "podman"

    def __init__(self, service: PodmanService, project: str, directory: Path) -> None:
        self.service = service
        self.project = project
        self.dir = directory

    @property
    def files(self) -> list[Path]:
        return [self.dir / "base.yml", self.dir / "override.yml"]

    def client(self) -> PodmanClient:
        return PodmanClient(base_url=self.service.host)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run podman-compose on this project, with the private ``podman`` first on PATH."""
        command = [str(PODMAN_COMPOSE), "-p", self.project]
        for path in self.files:
            command += ["-f", str(path)]
        return run_tool([*command, *args], cwd=self.dir, env=self.service.cli_env(), check=check)

    def containers(self, *, all_: bool = True) -> list[dict[str, Any]]:
        """The service's listing of every container of the project (aside copies included)."""
        with self.client() as client:
            response = client.api.get(
                "/containers/json",
                params={
                    "all": all_,
                    "filters": json.dumps({"label": [f"{PROJECT_LABEL}={self.project}"]}),
                },
            )
            response.raise_for_status()
            return response.json() or []

    def container(self, service: str) -> dict[str, Any]:
        """The inspect data of the service's container (the one named by podman-compose)."""
        return self.inspect(f"{self.project}_{service}_1")

    def inspect(self, ref: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.api.get(f"/containers/{ref}/json")
            response.raise_for_status()
            return response.json()

    def remove(self, ref: str) -> None:
        with self.client() as client:
            client.api.delete(f"/containers/{ref}", params={"force": True}).raise_for_status()

    def exec(self, ref: str, *command: str) -> str:
        return self.service.podman("exec", ref, *command).stdout

    def proc_environ(self, ref: str) -> dict[str, str]:
        """The environment of a container's PID 1, as the process sees it."""
        raw = self.exec(ref, "cat", "/proc/1/environ")
        return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)

    def wait_healthy(self, services: tuple[str, ...] = SERVICES, timeout: float = 60) -> None:
        """Podman without systemd runs no healthcheck by itself: run them until all pass."""
        deadline = time.monotonic() + timeout
        pending = set(services)
        with self.client() as client:
            while pending and time.monotonic() < deadline:
                for service in sorted(pending):
                    name = f"{self.project}_{service}_1"
                    status = client.api.get(f"/containers/{name}/healthcheck")
                    if status.ok and status.json().get("Status") == "healthy":
                        pending.discard(service)
                if pending:
                    time.sleep(0.2)
        if pending:
            raise RuntimeError(f"{self.project}: not healthy within {timeout}s: {sorted(pending)}")

    def volumes(self) -> set[str]:
        with self.client() as client:
            response = client.api.get(
                "/volumes/json",
                params={"filters": json.dumps({"label": [f"{PROJECT_LABEL}={self.project}"]})},
            )
            named = {v["Name"] for v in (response.json() or [])} if response.ok else set()
        for listed in self.containers():
            with contextlib.suppress(Exception):
                mounts = self.inspect(listed["Id"]).get("Mounts") or []
                named |= {m["Name"] for m in mounts if m.get("Type") == "volume" and m.get("Name")}
        return named


@contextlib.contextmanager
def running_podman_stack(
    service: PodmanService, directory: Path, project: str | None = None
) -> Iterator[PodmanStack]:
    """Bring the five services up on GPU 0 with podman-compose from files written to
    ``directory``, wait until all are healthy, and remove the containers, copies left aside,
    pod and volumes on exit."""
    stack = PodmanStack(service, project or f"gpucp{uuid.uuid4().hex[:10]}", directory)
    (stack.dir / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BASE_COMPOSE, stack.dir / "base.yml")
    (stack.dir / "override.yml").write_text(gpu_override({s: ("0",) for s in SERVICES}))
    volumes: set[str] = set()
    try:
        stack.compose("up", "-d")
        volumes |= stack.volumes()
        stack.wait_healthy()
        yield stack
    finally:
        volumes |= stack.volumes()
        for listed in stack.containers():
            with contextlib.suppress(Exception):
                stack.remove(listed["Id"])
        stack.compose("down", "-v", "--timeout", "1", check=False)
        service.podman("pod", "rm", "-f", "--ignore", f"pod_{stack.project}", check=False)
        for name in volumes:
            service.podman("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def podman_service() -> Iterator[PodmanService]:
    """The private Podman service; stopped, and its CDI stand-in removed, when the session ends."""
    if not PODMAN_COMPOSE.exists():
        raise RuntimeError(f"{PODMAN_COMPOSE} not found (pip install -e '.[test]')")
    service = service_start()
    yield service
    service_stop()


@pytest.fixture
def podman_stack(podman_service, tmp_path, monkeypatch) -> Iterator[PodmanStack]:
    """The five services up and healthy on GPU 0 under podman-compose; ``CONTAINER_HOST`` points
    at the service for this test."""
    monkeypatch.setenv("CONTAINER_HOST", podman_service.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with running_podman_stack(podman_service, tmp_path / "stack") as stack:
        yield stack


@pytest.fixture(scope="module")
def podman_stack_module(podman_service, tmp_path_factory) -> Iterator[PodmanStack]:
    """``podman_stack`` brought up once for the module (its calls name the service's socket
    themselves, so the environment is left alone); take ``podman_stack_shared``."""
    with running_podman_stack(podman_service, tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture
def podman_stack_shared(podman_stack_module, podman_service, monkeypatch) -> Iterator[PodmanStack]:
    """The module's stack for a test that only reads it, with ``CONTAINER_HOST`` pointing at
    the service for the test; fails the test that leaves its containers changed."""
    monkeypatch.setenv("CONTAINER_HOST", podman_service.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    before = untouched_state(podman_stack_module)
    yield podman_stack_module
    after = untouched_state(podman_stack_module)
    if after != before:
        raise AssertionError(
            f"the shared stack {podman_stack_module.project} was changed by the test: "
            f"{before} -> {after}"
        )
