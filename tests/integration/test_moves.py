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
import json
import time
import uuid

import pytest

from applies.models import ApplyRun
from applies.moves import RESTART, ZERO_DOWNTIME
from applies.runtime.docker import DockerRuntime
from applies.runtime.handover import NEW_MARK
from applies.services import apply_start
from applies.tasks import apply_config_enqueue
from assignments.services import config_save
from tests.conftest import REFERENCE_GPUS
from tests.plugins.chaos import KillPoint
from tests.plugins.dockerd import IMAGE
from tests.plugins.dockerd import PROJECT_LABEL as PROJECT
from tests.plugins.webstack import ALIASED, ASK, PORTED, SERVING, gaps, running_web_stack

pytestmark = [pytest.mark.integration]


@pytest.fixture
def web_stack(docker_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_engine)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    with running_web_stack(tmp_path / "web") as stack:
        yield stack


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
        apply_config_enqueue(run_id=run.pk)
    return ApplyRun.objects.get(pk=run.pk)


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
    from applies.moves import Move, move_plan

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


# -- Podman ---------------------------------------------------------------------------------


@pytest.fixture
def podman_web(podman_service, monkeypatch):
    """An HTTP stand-in of ai-clip on a Podman network of its own, labelled as compose labels
    it, with its service alias; removed afterwards. It requests no CDI GPU (the move below
    changes its VRAM budget), so it runs whatever CDI specs other test services left in
    /etc/cdi."""
    monkeypatch.setenv("CONTAINER_HOST", podman_service.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    project = f"gpumvp{uuid.uuid4().hex[:8]}"
    network = f"{project}_net"
    name = f"{project}_{ALIASED}_1"
    podman = podman_service.podman
    podman("network", "create", network)
    try:
        podman(
            "run", "-d", "--name", name, "--network", network, "--network-alias", ALIASED,
            "--label", f"com.docker.compose.project={project}",
            "--label", f"com.docker.compose.service={ALIASED}",
            "--label", "com.docker.compose.container-number=1",
            "--env", "VRAM_BUDGET_GB=1.5",
            "--health-cmd", ASK.format(host="127.0.0.1") + " | grep -q .",
            "--health-interval", "1s", "--health-retries", "1",
            IMAGE, "sh", "-c", SERVING,
        )  # fmt: skip
        yield project, network, podman
    finally:
        for listed in podman("ps", "-aq", "--filter", f"label={PROJECT}={project}").stdout.split():
            podman("rm", "-f", listed, check=False)
        podman("network", "rm", "-f", network, check=False)


@pytest.mark.podman
def test_on_podman_a_network_without_dns_falls_back_to_a_restart(podman_web):
    from applies.moves import Move, move_modes_decide
    from applies.runtime.handover import move_facts
    from applies.runtime.podman import PodmanRuntime

    project, network, podman = podman_web
    runtime = PodmanRuntime(project=project, health_timeout=30, health_grace=1)
    dns = json.loads(podman("network", "inspect", network).stdout)[0].get("dns_enabled")
    facts = move_facts(runtime, [ALIASED])
    decided = move_modes_decide(
        moves=[Move(ALIASED, 0, 1, 1229)], facts=facts, free_mb={0: 4000, 1: 4000}
    )[ALIASED]
    if dns:  # a Podman whose network resolves names moves it make-before-break
        assert decided.mode == ZERO_DOWNTIME, decided
    else:  # this test machine's Podman (CNI without dnsname): the fallback
        assert decided.mode == RESTART
        assert decided.reason.startswith(f"its Podman network {network} has no DNS")
    result = runtime.recreate(
        ALIASED,
        device_ids=(),
        budget_gb=2.0,
        progress=lambda *_: None,
        **({"move_mode": ZERO_DOWNTIME} if decided.mode == ZERO_DOWNTIME else {}),
    )
    assert str(result.outcome) == "healthy", result.message
    assert result.downtime_s is not None and (result.downtime_s > 0) == (not dns)
    listed = podman(
        "ps", "-a", "--format", "{{.Names}}", "--filter", f"label={PROJECT}={project}"
    ).stdout.split()
    assert listed == [f"{project}_{ALIASED}_1"]
    state = runtime.inspect(ALIASED)
    assert (state.status, state.budget_gb) == ("running", 2.0)


# -- the worker SIGKILLed inside a make-before-break move ---------------------------------------


def _one_copy_answering(stack) -> list[str]:
    """Why ai-clip is not settled yet: not exactly one copy, running, under its name and
    answering on its alias, or a run still recorded as running. Empty when settled."""
    problems = []
    listed = stack.of(ALIASED)
    names = [c["Names"][0].lstrip("/") for c in listed]
    if names != [f"{stack.project}_{ALIASED}_1"]:
        problems.append(f"copies: {names}")
    elif listed[0]["State"] != "running":
        problems.append(f"{names[0]} is {listed[0]['State']}")
    elif not stack.ask(ALIASED):
        problems.append("nothing answers on the alias")
    if ApplyRun.objects.filter(status__in=["running", "queued"]).exists():
        problems.append("a run is still recorded as running")
    return problems


@pytest.mark.docker
@pytest.mark.timeout(400)
def test_the_worker_killed_inside_a_make_before_break_move_recovers(web_box, celery_worker_factory):
    """Kill points of tests/plugins/chaos.py inside the move: both copies up, the old one
    stopping, renaming. A fresh worker (its start runs recovery) leaves one copy answering."""
    from tests.integration.recovery_checks import wait_dead, worker_env

    stack, client = web_box
    stack.probe(ALIASED)
    points = [
        KillPoint(ALIASED, "connect", 1, "after"),  # both copies up
        KillPoint(ALIASED, "stop", 1, "before"),  # old one stopping (off the alias)
        KillPoint(ALIASED, "rename", 1, "before"),  # renaming
    ]
    env = {"GPUCONFIG_DRAIN_S": "1"}
    worker = celery_worker_factory(env=worker_env(points[0], **env))
    report = []
    for position, point in enumerate(points):
        (before,) = stack.of(ALIASED)
        current = stack.api.inspect_container(before["Id"])["HostConfig"]["DeviceRequests"]
        target = 1 if current[0]["DeviceIDs"] == ["0"] else 0
        config_save(
            strategy="manual",
            assignments=[
                {"service": ALIASED, "gpu_index": target},
                {"service": PORTED, "gpu_index": 0},
            ],
        )
        res = client.post("/api/system/gpu-config/apply")
        assert res.status_code == 202 and res.json()["restarted_services"] == [ALIASED], res.json()
        killed = wait_dead(worker)
        following = points[position + 1] if position + 1 < len(points) else None
        worker = celery_worker_factory(env=worker_env(following, **env))
        problems = _one_copy_answering(stack)
        while problems and time.monotonic() < killed + 60:
            time.sleep(0.25)
            problems = _one_copy_answering(stack)
        assert not problems, (point, problems, worker.log()[-3000:])
        (after,) = stack.of(ALIASED)
        kept = "new" if after["Id"] != before["Id"] else "old"
        report.append(f"{point}: {kept} copy kept, {time.monotonic() - killed:.1f} s")
    print("\n" + "\n".join(report))
