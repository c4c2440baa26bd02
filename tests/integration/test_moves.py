"""Moves without downtime on the real engines, with a downtime probe: a busybox client on the
stack's user network asks a service's alias for a page every 100 ms while an apply moves it.

The stand-in services answer over HTTP (busybox httpd, its page is the container's hostname, so
the probe sees which copy answered). ``ai-clip`` is reached only by its alias: it moves
make-before-break and the probe loses at most one answer. ``ai-florence`` publishes a host
port: it restarts, and its gap is measured and reported. Kill points inside a make-before-break
move (both copies up; old one stopping; renaming) all recover to one copy answering.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import subprocess
import time
import uuid
from pathlib import Path

import docker
import pytest
import yaml

from assignments.models import ApplyRun
from assignments.moves import RESTART, ZERO_DOWNTIME
from assignments.runtime.docker import DockerRuntime
from assignments.runtime.handover import NEW_MARK
from assignments.services import apply_start, config_save
from tests.conftest import REFERENCE_GPUS
from tests.plugins.chaos import KillPoint
from tests.plugins.dockerd import IMAGE, PROJECT_LABEL, SERVICE_LABEL, gpu_override

pytestmark = [pytest.mark.integration]

ALIASED = "ai-clip"  # reached by its alias only: make-before-break
PORTED = "ai-florence"  # publishes a host port: stop-start
# On "GPU 99" (the test engine's broken card) the copy never serves, so never gets healthy.
SERVING = (
    "trap 'exit 0' TERM; "
    "if tr '\\0' '\\n' </proc/1/environ | grep -qx NVIDIA_VISIBLE_DEVICES=99; "
    "then sleep 3600 & wait; fi; "
    "mkdir -p /www; hostname > /www/index.html; httpd -f -p 8080 -h /www & wait"
)
# One line per probe: "<monotonic ms> ok <hostname>" or "<ms> fail".
PROBE = (
    "while true; do t=$(cut -d' ' -f1 /proc/uptime); "
    'if r=$(wget -q -T 1 -O- http://{alias}:8080/ 2>/dev/null); then echo "$t ok $r"; '
    'else echo "$t fail"; fi; usleep 100000; done'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_file(network: str, port: int) -> dict:
    web = {
        "image": IMAGE,
        "command": ["sh", "-c", SERVING.replace("$", "$$")],
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
            "interval": "1s",
            "timeout": "2s",
            "retries": 1,
        },
        "networks": ["movenet"],
        "restart": "unless-stopped",
    }
    return {
        "version": "2.4",
        "services": {ALIASED: dict(web), PORTED: {**web, "ports": [f"127.0.0.1:{port}:8080"]}},
        "networks": {"movenet": {"name": network}},
    }


class WebStack:
    """The two stand-in services under Debian's docker-compose, on a network of their own."""

    def __init__(self, directory: Path) -> None:
        self.project = f"gpumv{uuid.uuid4().hex[:8]}"
        self.network = f"gpumv-{uuid.uuid4().hex[:8]}"
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "base.yml").write_text(
            yaml.safe_dump(stack_file(self.network, _free_port()), sort_keys=False)
        )
        (self.dir / "override.yml").write_text(gpu_override({ALIASED: ("0",), PORTED: ("0",)}))
        self.api = docker.from_env().api
        self.probes: list[str] = []

    def compose(self, *args: str) -> None:
        command = ["docker-compose", "-p", self.project, "-f", "base.yml", "-f", "override.yml"]
        done = subprocess.run(
            [*command, *args], cwd=self.dir, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr

    def containers(self) -> list[dict]:
        return self.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})

    def of(self, service: str) -> list[dict]:
        return [c for c in self.containers() if c["Labels"].get(SERVICE_LABEL) == service]

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.containers()
            if len(listed) == 2 and all("(healthy)" in c["Status"] for c in listed):
                return
            time.sleep(0.2)
        raise AssertionError(f"not healthy: {[c['Status'] for c in self.containers()]}")

    def probe(self, alias: str) -> str:
        """Start a client on the network asking ``alias`` every 100 ms; returns its id."""
        name = f"{self.project}-probe-{alias}"
        created = self.api.create_container(
            IMAGE,
            ["sh", "-c", PROBE.format(alias=alias)],
            name=name,
            host_config=self.api.create_host_config(network_mode=self.network),
        )
        self.api.start(created["Id"])
        self.probes.append(created["Id"])
        return created["Id"]

    def answers(self, probe_id: str) -> list[tuple[float, str]]:
        """(seconds, "ok <hostname>" or "fail") per probe so far."""
        out = []
        for line in self.api.logs(probe_id).decode().splitlines():
            t, _, rest = line.partition(" ")
            out.append((float(t), rest))
        return out

    def ask(self, alias: str) -> str:
        """One answer from ``alias`` through a probe container (empty: none)."""
        probe = self.probes[0]
        exec_id = self.api.exec_create(
            probe, ["wget", "-q", "-T", "2", "-O-", f"http://{alias}:8080/"]
        )
        return self.api.exec_start(exec_id).decode().strip()

    def remove(self) -> None:
        for probe in self.probes:
            self.api.remove_container(probe, force=True)
        subprocess.run(
            ["docker-compose", "-p", self.project, "-f", "base.yml", "-f", "override.yml"]
            + ["down", "-v", "--timeout", "1"],
            cwd=self.dir,
            capture_output=True,
            timeout=180,
        )
        for listed in self.containers():  # copies left by a failed test
            self.api.remove_container(listed["Id"], force=True)
        try:
            self.api.remove_network(self.network)
        except docker.errors.APIError:
            pass
        self.api.close()


@pytest.fixture
def web_stack(docker_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    stack = WebStack(tmp_path / "web")
    try:
        stack.compose("up", "-d")
        stack.wait_healthy()
        yield stack
    finally:
        stack.remove()


@pytest.fixture
def web_box(web_stack, simulated_gpus, settings, staff_user, live_db):
    """The web stack managed by gpuconfig: the reference GPUs scanned, both services saved on
    GPU 0, a short drain."""
    from rest_framework.test import APIClient

    from gpus.services import gpu_scan_run

    simulated_gpus.write_text(REFERENCE_GPUS.read_text())
    settings.GPUCONFIG_COMPOSE_PROJECT = web_stack.project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 30
    settings.GPUCONFIG_DRAIN_S = 1.0
    settings.GPUCONFIG_CONTAINER_RUNTIME = "docker"
    gpu_scan_run()
    config_save(
        strategy="manual",
        assignments=[{"service": s, "gpu_index": 0} for s in (ALIASED, PORTED)],
    )
    client = APIClient()
    client.force_authenticate(staff_user)
    return web_stack, client


def _apply(django_capture_on_commit_callbacks) -> ApplyRun:
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = apply_start(actor="test")
    return ApplyRun.objects.get(pk=run.pk)


def gaps(answers: list[tuple[float, str]]) -> tuple[int, float]:
    """Failed probes, and the longest run of them in seconds (first failure to next answer)."""
    failed = sum(1 for _, r in answers if r == "fail")
    longest, since = 0.0, None
    for t, r in answers:
        if r == "fail":
            since = t if since is None else since
        elif since is not None:
            longest, since = max(longest, t - since), None
    return failed, longest


@pytest.mark.docker
def test_an_aliased_service_moves_without_downtime_and_a_ported_one_restarts(
    web_box, django_capture_on_commit_callbacks
):
    stack, client = web_box
    clip_probe, florence_probe = stack.probe(ALIASED), stack.probe(PORTED)
    time.sleep(1)
    before = {s: stack.of(s)[0]["Id"] for s in (ALIASED, PORTED)}

    moved = [{"service": s, "gpu_index": 1} for s in (ALIASED, PORTED)]
    config_save(strategy="manual", assignments=moved)
    run = _apply(django_capture_on_commit_callbacks)
    time.sleep(1)
    assert run.status == "succeeded", (run.error, run.log)

    clip_failed, clip_gap = gaps(stack.answers(clip_probe))
    florence_failed, florence_gap = gaps(stack.answers(florence_probe))
    print(
        f"\nmove downtime: {ALIASED} (zero_downtime) {clip_failed} failed probes, "
        f"longest gap {clip_gap:.2f} s; {PORTED} (restart) {florence_failed} failed probes, "
        f"longest gap {florence_gap:.2f} s; measured downtime_s "
        f"{run.results[ALIASED]['downtime_s']} / {run.results[PORTED]['downtime_s']}"
    )
    assert clip_failed <= 1, stack.answers(clip_probe)
    assert florence_failed >= 1  # the stop-start gap the probe sees

    # The alias moved from the old copy to the new one, which took the container's name.
    hosts = [r for _, r in stack.answers(clip_probe) if r != "fail"]
    assert hosts[0] != hosts[-1]
    (clip,) = stack.of(ALIASED)
    assert clip["Id"] != before[ALIASED] and clip["State"] == "running"
    assert clip["Names"] == [f"/{stack.project}_{ALIASED}_1"]
    assert not [c for c in stack.containers() if NEW_MARK in c["Names"][0]]
    inspected = stack.api.inspect_container(clip["Id"])
    assert ALIASED in inspected["NetworkSettings"]["Networks"][stack.network]["Aliases"]
    assert inspected["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1"]

    statuses = {
        e["service"]: e
        for e in client.get("/api/system/gpu-config/status").json()["service_statuses"]
    }
    assert statuses[ALIASED]["move_mode"] == ZERO_DOWNTIME
    assert statuses[ALIASED]["downtime_s"] == 0
    assert f"alias on {stack.network}" in statuses[ALIASED]["move_reason"]
    assert statuses[PORTED]["move_mode"] == RESTART
    assert statuses[PORTED]["move_reason"].startswith("publishes host port")
    assert statuses[PORTED]["downtime_s"] > 0

    # The next preview quotes the measured gap of the service that restarted.
    config_save(
        strategy="manual",
        assignments=[{"service": s, "gpu_index": 0} for s in (ALIASED, PORTED)],
    )
    from assignments.moves import Move, move_plan

    decided = move_plan(moves=[Move(PORTED, 1, 0, 1536), Move(ALIASED, 1, 0, 1229)])
    assert decided[PORTED].mode == RESTART
    assert "without answers (last apply)" in decided[PORTED].reason
    assert decided[ALIASED].mode == ZERO_DOWNTIME


@pytest.mark.docker
def test_a_new_copy_that_never_gets_healthy_is_removed_and_the_old_one_never_stopped(
    web_stack,
):
    stack = web_stack
    probe = stack.probe(ALIASED)
    time.sleep(0.5)
    (old,) = stack.of(ALIASED)
    started = stack.api.inspect_container(old["Id"])["State"]["StartedAt"]
    journal: list[dict] = []
    result = DockerRuntime(project=stack.project, health_timeout=5).recreate(
        ALIASED,
        device_ids=("99",),
        budget_gb=None,
        progress=lambda step, message: None,
        journal=journal.append,
        move_mode=ZERO_DOWNTIME,
    )
    time.sleep(0.5)
    assert str(result.outcome) == "rolled_back", result.message
    assert "kept running" in result.message
    (left,) = stack.of(ALIASED)
    assert left["Id"] == old["Id"] and left["State"] == "running"
    assert stack.api.inspect_container(old["Id"])["State"]["StartedAt"] == started
    assert [e["step"] for e in journal][-1] == "rolled_back"
    failed, _ = gaps(stack.answers(probe))
    assert failed == 0, stack.answers(probe)


# -- kill points inside a make-before-break move ------------------------------------------------


class Killed(BaseException):
    """The worker dying at a kill point: nothing after it runs, no rollback (a BaseException
    passes every ``except Exception``), the engine keeps what it was told so far."""


class _KillingEngine:
    """An engine connection that dies right before or after the chosen call (``KillPoint``
    vocabulary of tests/plugins/chaos.py)."""

    def __init__(self, engine, point: KillPoint) -> None:
        self._engine, self._point, self._seen = engine, point, 0

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if name != self._point.call or not callable(attr):
            return attr

        def call(*args, **kwargs):
            self._seen += 1
            hit = self._seen == self._point.occurrence
            if hit and self._point.when == "before":
                raise Killed(str(self._point))
            result = attr(*args, **kwargs)
            if hit:
                raise Killed(str(self._point))
            return result

        return call


class KillingDockerRuntime(DockerRuntime):
    point: KillPoint

    @contextlib.contextmanager
    def connect(self):
        with super().connect() as engine:
            yield _KillingEngine(engine, self.point)


@pytest.mark.docker
def test_kill_points_inside_a_make_before_break_move_recover_to_one_copy_answering(web_stack):
    stack = web_stack
    stack.probe(ALIASED)
    points = [
        *kill_points_of_handover(ALIASED),
    ]
    report = []
    for point in points:
        (before,) = stack.of(ALIASED)
        current = stack.api.inspect_container(before["Id"])["HostConfig"]["DeviceRequests"]
        target = "1" if current[0]["DeviceIDs"] == ["0"] else "0"
        journal: dict[str, dict] = {}
        runtime = KillingDockerRuntime(project=stack.project, health_timeout=20)
        runtime.point = point
        with pytest.raises(Killed):
            runtime.recreate(
                ALIASED,
                device_ids=(target,),
                budget_gb=None,
                progress=lambda step, message: None,
                journal=functools.partial(journal.__setitem__, ALIASED),
                move_mode=ZERO_DOWNTIME,
            )
        step = journal[ALIASED]["step"]
        DockerRuntime(project=stack.project).recover(journal)
        listed = stack.of(ALIASED)
        names = [c["Names"][0] for c in listed]
        assert names == [f"/{stack.project}_{ALIASED}_1"], (point, step, names)
        assert listed[0]["State"] == "running", (point, listed)
        answer = ""
        deadline = time.monotonic() + 10
        while not answer and time.monotonic() < deadline:
            answer = stack.ask(ALIASED)
        assert answer, f"{point}: nothing answers on the alias after recovery"
        kept = "new" if listed[0]["Id"] != before["Id"] else "old"
        report.append(f"{point} (journal: {step}) -> {kept} copy kept, answering")
    print("\n" + "\n".join(report))


def kill_points_of_handover(service: str) -> list[KillPoint]:
    """The kill points inside a make-before-break move: the new copy started but not healthy;
    both copies up (the new one joined the alias); the old one stopping (left the alias, before
    and after its stop); renaming (before and after)."""
    return [
        KillPoint(service, "start", 1, "after"),
        KillPoint(service, "connect", 1, "after"),
        KillPoint(service, "disconnect", 2, "after"),
        KillPoint(service, "stop", 1, "before"),
        KillPoint(service, "stop", 1, "after"),
        KillPoint(service, "rename", 1, "before"),
        KillPoint(service, "rename", 1, "after"),
    ]
