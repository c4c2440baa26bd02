"""A real Docker engine for the tests, and the five AI services running on it under compose.

``docker_engine`` (session) starts the private engine of ``scripts/test-dockerd.sh`` (or reuses
the one running) and points ``DOCKER_HOST`` at it. ``compose_stack`` brings the services of
``tests/fixtures/compose/base.yml`` up with an override that puts all of them on GPU 0, in a
project of its own, with Debian's docker-compose, and removes everything afterwards.
``compose_stack_shared`` is the same stack brought up once per test module, for tests that only
read it: each test gets the engine's socket in its environment and fails if it leaves the
stack's containers changed.

Moving a service to GPU ``BROKEN_GPU`` gives it a container that never becomes healthy, to
``CRASHING_GPU`` one whose process exits at once.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import docker
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test-dockerd.sh"
BASE_COMPOSE = ROOT / "tests" / "fixtures" / "compose" / "base.yml"

SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
IMAGE = "gpuconfig-test/busybox:latest"
BROKEN_GPU = "99"  # a new container there never becomes healthy
CRASHING_GPU = "98"  # a new container there exits at once (and is restarted by its policy)
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def engine_host() -> str:
    """Start the test engine if it is not running; return its DOCKER_HOST value."""
    started = subprocess.run(
        [str(SCRIPT), "start"], capture_output=True, text=True, timeout=180, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT.relative_to(ROOT)} start failed ({started.returncode}):\n"
            f"{started.stdout}{started.stderr}"
        )
    for line in started.stdout.splitlines():
        if line.startswith("DOCKER_HOST="):
            return line.split("=", 1)[1]
    raise RuntimeError(
        f"{SCRIPT.relative_to(ROOT)} start printed no DOCKER_HOST:\n{started.stdout}"
    )


def run_tool(
    command: list[str], *, cwd: Path | None = None, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command line tool (a compose tool, the podman CLI); ``check``: fail with its stderr."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return result


def gpu_override(
    placement: dict[str, tuple[str, ...]], budgets: dict[str, float] | None = None
) -> str:
    """A compose override in the shape gpuconfig writes (the user guide's example)."""
    services: dict[str, Any] = {}
    for service, device_ids in placement.items():
        entry: dict[str, Any] = {
            "deploy": {
                "resources": {
                    "reservations": {
                        "devices": [
                            {
                                "driver": "nvidia",
                                "device_ids": [str(i) for i in device_ids],
                                "capabilities": ["gpu"],
                            }
                        ]
                    }
                }
            }
        }
        if budgets and service in budgets:
            entry["environment"] = [f"VRAM_BUDGET_GB={budgets[service]}"]
        services[service] = entry
    return yaml.safe_dump({"services": services}, sort_keys=False)


class ComposeStack(NamedTuple):
    """A compose project of the five services; unpacks as ``(project, dir)``. The Podman
    plugin's ``PodmanStack`` answers the same calls."""

    project: str
    dir: Path

    engine = "docker"

    @property
    def files(self) -> list[Path]:
        return [self.dir / "base.yml", self.dir / "override.yml"]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker-compose on this project."""
        command = ["docker-compose", "-p", self.project]
        for path in self.files:
            command += ["-f", str(path)]
        return run_tool([*command, *args], cwd=self.dir, check=check)

    def containers(self, *, all_: bool = True) -> list[dict[str, Any]]:
        """The engine's listing of every container of the project (aside copies included)."""
        client = docker.from_env()
        try:
            return client.api.containers(
                all=all_, filters={"label": f"{PROJECT_LABEL}={self.project}"}
            )
        finally:
            client.close()

    def container(self, service: str) -> dict[str, Any]:
        """The inspect data of the service's container (the one named by compose)."""
        return self.inspect(f"{self.project}_{service}_1")

    def inspect(self, ref: str) -> dict[str, Any]:
        client = docker.from_env()
        try:
            return client.api.inspect_container(ref)
        finally:
            client.close()

    def remove(self, ref: str) -> None:
        client = docker.from_env()
        try:
            client.api.remove_container(ref, force=True)
        finally:
            client.close()

    def exec(self, ref: str, *command: str) -> str:
        client = docker.from_env()
        try:
            return client.api.exec_start(client.api.exec_create(ref, list(command))).decode()
        finally:
            client.close()

    def proc_environ(self, ref: str) -> dict[str, str]:
        return proc_environ(ref)

    def wait_healthy(self, services: tuple[str, ...] = SERVICES, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending: set[str] = set(services)
        while time.monotonic() < deadline:
            pending = set(services)
            for listed in self.containers(all_=False):
                if "(healthy)" in listed["Status"]:
                    pending.discard(listed["Labels"].get(SERVICE_LABEL))
            if not pending:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.project}: not healthy within {timeout}s: {sorted(pending)}")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The test engine's DOCKER_HOST, set in the environment for the whole session."""
    if shutil.which("docker-compose") is None:
        raise RuntimeError("docker-compose not found (install the Debian package docker-compose)")
    host = engine_host()
    patch = pytest.MonkeyPatch()
    patch.setenv("DOCKER_HOST", host)
    # CONTAINER_HOST comes first for `auto`: Docker tests must not find a Podman socket.
    patch.delenv("CONTAINER_HOST", raising=False)
    yield host
    patch.undo()


@pytest.fixture
def compose_stack(docker_engine, tmp_path, monkeypatch) -> ComposeStack:
    """The five services up and healthy on GPU 0 in a project of their own; removed afterwards."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    with running_stack(tmp_path / "stack") as stack:
        yield stack


@contextlib.contextmanager
def docker_env(host: str) -> Iterator[None]:
    """``DOCKER_HOST`` set to ``host`` and ``CONTAINER_HOST`` cleared while inside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", host)
        patch.delenv("CONTAINER_HOST", raising=False)
        yield


@pytest.fixture(scope="module")
def compose_stack_module(docker_engine, tmp_path_factory) -> Iterator[ComposeStack]:
    """``compose_stack`` brought up once for the module. The engine's socket is in the
    environment only while the stack comes up and goes, so that other tests of the module keep
    theirs; take ``compose_stack_shared``, which sets it for each test."""
    stacks = contextlib.ExitStack()
    with docker_env(docker_engine):
        stack = stacks.enter_context(running_stack(tmp_path_factory.mktemp("stack")))
    try:
        yield stack
    finally:
        with docker_env(docker_engine):
            stacks.close()


@pytest.fixture
def compose_stack_shared(
    compose_stack_module, docker_engine, monkeypatch
) -> Iterator[ComposeStack]:
    """The module's stack for a test that only reads it (never recreates, stops, removes or
    applies); fails the test that leaves its containers changed."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    before = untouched_state(compose_stack_module)
    yield compose_stack_module
    after = untouched_state(compose_stack_module)
    if after != before:
        raise AssertionError(
            f"the shared stack {compose_stack_module.project} was changed by the test: "
            f"{before} -> {after}"
        )


def untouched_state(stack) -> list[tuple[str, str, str]]:
    """What a reading test must leave as it found it: each container of the project, its name
    and its state (either engine's listing)."""
    return sorted(
        (listed["Id"], ",".join(sorted(listed.get("Names") or [])), listed["State"])
        for listed in stack.containers()
    )


@contextlib.contextmanager
def running_stack(directory: Path, project: str | None = None) -> Iterator[ComposeStack]:
    """Bring the five services up on GPU 0 from files written to ``directory``, wait until all
    are healthy, and remove the containers, copies left aside and volumes on exit."""
    stack = ComposeStack(project=project or f"gpuct{uuid.uuid4().hex[:10]}", dir=directory)
    (stack.dir / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BASE_COMPOSE, stack.dir / "base.yml")
    (stack.dir / "override.yml").write_text(gpu_override({s: ("0",) for s in SERVICES}))
    volumes: set[str] = set()
    try:
        stack.compose("up", "-d")
        # Anonymous volumes carry no project label: note them while their containers exist.
        volumes |= _volumes_of(stack)
        stack.wait_healthy()
        yield stack
    finally:
        _remove_stack(stack, volumes)


def _volumes_of(stack: ComposeStack) -> set[str]:
    client = docker.from_env()
    try:
        names = set()
        for listed in stack.containers():
            try:
                mounts = client.api.inspect_container(listed["Id"]).get("Mounts") or []
            except docker.errors.NotFound:
                continue
            names |= {m["Name"] for m in mounts if m.get("Type") == "volume" and m.get("Name")}
        return names
    finally:
        client.close()


def _remove_stack(stack: ComposeStack, volumes: set[str]) -> None:
    volumes = volumes | _volumes_of(stack)
    client = docker.from_env()
    try:
        api = client.api
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "1", check=False)
        # Copies renamed aside, or left by a failed test, carry the project label too.
        for listed in stack.containers():
            try:
                api.remove_container(listed["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
        project_volumes = api.volumes(filters={"label": f"{PROJECT_LABEL}={stack.project}"})
        volumes |= {v["Name"] for v in (project_volumes or {}).get("Volumes") or []}
        for name in volumes:
            try:
                api.remove_volume(name, force=True)
            except docker.errors.APIError:
                pass
    finally:
        client.close()


def proc_environ(container_id: str) -> dict[str, str]:
    """The environment of a container's PID 1, as the process sees it."""
    client = docker.from_env()
    try:
        exec_id = client.api.exec_create(container_id, ["cat", "/proc/1/environ"])
        raw = client.api.exec_start(exec_id).decode()
    finally:
        client.close()
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)
