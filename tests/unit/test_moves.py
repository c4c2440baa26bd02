"""How each service moves: the make-before-break rule (``applies.moves``), the facts a
container gives it (``runtime.handover``), the gate of an apply that mixes both modes, and the
preview's fields. No engine: inspect data in the shape Docker gives it, and an engine stand-in
written to the ``Engine`` contract."""

from __future__ import annotations

import threading

import pytest

from applies.applying import Change, Target, execute
from applies.moves import RESTART, ZERO_DOWNTIME, Move, move_modes_decide
from applies.runtime.base import ContainerRuntime, ContainerState, Outcome, RecreateResult
from applies.runtime.handover import MoveFacts, facts_of, new_name, replaced_name
from applies.runtime.recreate import Engine, seen_from_inspect

ALIASED = MoveFacts(service="ai-clip", aliased=("stack_ai-net",))


def decide(moves, facts=None, free=None, downtime=None):
    facts = facts or {m.service: MoveFacts(service=m.service, aliased=("net",)) for m in moves}
    return move_modes_decide(
        moves=moves, facts=facts, free_mb=free or {0: 4000, 1: 4000}, last_downtime=downtime
    )


def test_an_aliased_service_with_room_on_its_target_moves_without_downtime():
    decided = decide([Move("ai-clip", 0, 1, 1229)], facts={"ai-clip": ALIASED})
    assert decided["ai-clip"].mode == ZERO_DOWNTIME
    assert "alias on stack_ai-net" in decided["ai-clip"].reason
    assert "4000 MB free, 1229 MB needed" in decided["ai-clip"].reason


def test_a_published_port_restarts_and_quotes_the_last_measured_gap():
    facts = {"ai-llm": MoveFacts(service="ai-llm", ports=("8098/tcp",), aliased=("net",))}
    decided = decide([Move("ai-llm", 0, 1, 1000)], facts=facts, downtime={"ai-llm": 40.2})
    assert decided["ai-llm"].mode == RESTART
    assert decided["ai-llm"].reason == (
        "publishes host port 8098: restarts, about 40 s without answers (last apply)"
    )


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        (MoveFacts(service="s", fixed_name="frigate", aliased=("n",)), "fixed container_name"),
        (MoveFacts(service="s", network_mode="none"), "network_mode none"),
        (MoveFacts(service="s", network_mode="stack_default"), "not reached by a network alias"),
        (
            MoveFacts(service="s", unsupported="its Podman network n has no DNS"),
            "has no DNS",
        ),
        (None, "no container"),
    ],
)
def test_what_forbids_a_second_copy_makes_the_service_restart(facts, why):
    decided = decide([Move("s", 0, 1, 100)], facts={"s": facts})
    assert decided["s"].mode == RESTART
    assert why in decided["s"].reason
    assert "no answers until the new copy is healthy" in decided["s"].reason


def test_no_room_for_a_second_copy_restarts_with_the_figures():
    decided = decide([Move("big", 0, 1, 3000)], free={0: 4000, 1: 2500})
    assert decided["big"].mode == RESTART
    assert decided["big"].reason.startswith("GPU 1 has 2500 MB free for a second copy, 3000 MB")


def test_what_restarts_off_the_target_first_counts_as_room():
    # "ported" restarts off GPU 1 before anything starts there: its 2000 MB are free for "big".
    facts = {
        "big": MoveFacts(service="big", aliased=("net",)),
        "ported": MoveFacts(service="ported", ports=("8000/tcp",), aliased=("net",)),
    }
    moves = [Move("big", 0, 1, 3000), Move("ported", 1, 0, 2000)]
    decided = decide(moves, facts=facts, free={0: 4000, 1: 1500})
    assert decided["ported"].mode == RESTART
    assert decided["big"].mode == ZERO_DOWNTIME


def test_in_a_tight_swap_one_restarts_and_its_freed_vram_lets_the_other_move_without_downtime():
    moves = [Move("a", 0, 1, 3000), Move("b", 1, 0, 3000)]
    decided = decide(moves, free={0: 500, 1: 500})
    assert (decided["a"].mode, decided["b"].mode) == (RESTART, ZERO_DOWNTIME)
    assert "3500 MB free" in decided["b"].reason


def test_what_other_services_bring_to_the_target_is_not_room():
    moves = [Move("a", 0, 1, 2000), Move("b", 0, 1, 2000)]
    decided = decide(moves, free={0: 4000, 1: 3000})
    assert {d.mode for d in decided.values()} == {RESTART}


def test_unknown_free_vram_restarts():
    decided = decide([Move("a", 0, 1, 100)], free={0: 4000, 1: None})
    assert decided["a"].mode == RESTART
    assert "free VRAM of GPU 1 is not known" in decided["a"].reason


# facts from a container -------------------------------------------------------------------


class Networks(Engine):
    """Answers ``network_problem`` as Docker does: the default bridge has no aliases."""

    def network_problem(self, network):
        return "on the default bridge" if network == "bridge" else ""


def inspected(*, name="/proj-ai-clip-1", ports=None, networks=None, mode="proj_ai-net"):
    return seen_from_inspect(
        {
            "Id": "f" * 64,
            "Name": name,
            "State": {"Status": "running"},
            "Config": {
                "Labels": {
                    "com.docker.compose.project": "proj",
                    "com.docker.compose.service": "ai-clip",
                    "com.docker.compose.container-number": "1",
                }
            },
            "HostConfig": {"NetworkMode": mode, "PortBindings": ports or {}},
            "NetworkSettings": {
                "Networks": networks
                if networks is not None
                else {"proj_ai-net": {"Aliases": ["ai-clip", "f" * 12]}}
            },
        },
        device_ids=("0",),
    )


def test_a_compose_container_on_its_user_network_can_move_without_downtime():
    facts = facts_of(Networks(), inspected(), service="ai-clip")
    assert facts.aliased == ("proj_ai-net",) and facts.blocker() == ""


def test_compose_v1_names_are_compose_s_own_too():
    facts = facts_of(Networks(), inspected(name="/proj_ai-clip_1"), service="ai-clip")
    assert facts.fixed_name is None


def test_published_ports_and_fixed_names_are_read_from_the_container():
    ported = inspected(ports={"8098/tcp": [{"HostIp": "", "HostPort": "8098"}]})
    assert facts_of(Networks(), ported, service="ai-clip").blocker() == "publishes host port 8098"
    named = inspected(name="/clip")
    assert "fixed container_name (clip)" in facts_of(Networks(), named, service="ai-clip").blocker()
    bridged = inspected(networks={"bridge": {"Aliases": ["ai-clip"]}}, mode="default")
    assert facts_of(Networks(), bridged, service="ai-clip").blocker() == "on the default bridge"


def test_the_temporary_name_leads_back_to_the_service_name():
    name = new_name("proj_ai-clip_1", "0123456789abcdef")
    assert name == "proj_ai-clip_1-gpuconfig-new-0123456789ab"
    assert replaced_name(name) == "proj_ai-clip_1"
    assert replaced_name("proj_ai-clip_1") is None


# the gate of an apply mixing both modes ---------------------------------------------------


class Recorder(ContainerRuntime):
    """Records the order of recreates: a restart "stops" at once, a make-before-break move
    holds its old copy until its new one is healthy (a short pause here)."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.modes: dict[str, str | None] = {}

    def recreate(self, service, *, before_start=None, move_mode=None, **kwargs):
        self.modes[service] = move_mode
        before_start()
        with self.lock:
            self.events.append(f"{service} started")
        return RecreateResult(Outcome.HEALTHY, "ok", downtime_s=0.0 if move_mode else 1.0)


def change(service, current, target):
    state = ContainerState(f"id-{service}", service, "running", "healthy", (current,), None)
    return Change(service, state, Target(service, (target,), None), True)


def test_in_a_swap_the_restart_waits_for_the_zero_downtime_move_to_free_its_gpu():
    runtime = Recorder()
    changes = [change("a", "0", "1"), change("b", "1", "0")]
    outcome = execute(
        runtime,
        changes,
        progress=lambda *args: None,
        health_timeout=5,
        modes={"a": ZERO_DOWNTIME},
    )
    assert runtime.modes == {"a": ZERO_DOWNTIME, "b": None}
    # b (restart) arrives on GPU 0, which a (zero downtime) leaves only at its end.
    assert runtime.events.index("a started") < runtime.events.index("b started")
    assert {s: r.outcome for s, r in outcome.items()} == {"a": "healthy", "b": "healthy"}


# the preview ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_preview_says_how_each_moving_service_would_move(
    reference_inventory, settings, staff_client
):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "simulated"
    saved = {
        a["service"]: a["gpu_index"]
        for a in staff_client.get("/api/system/gpu-config").json()["assignments"]
    }
    body = staff_client.get("/api/system/gpu-config/preview?strategy=balanced").json()
    entries = body["proposed_assignments"]
    moving = [e for e in entries if e["gpu_index"] != saved[e["service"]]]
    assert moving, "the balanced plan moves something off the starting layout"
    for entry in entries:
        if entry in moving:
            assert entry["move_mode"] == RESTART
            assert "cannot run two copies" in entry["move_reason"]
        else:
            assert (entry["move_mode"], entry["move_reason"]) == (None, "")


# the page ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_apply_progress_says_how_each_service_moves_and_its_downtime(
    reference_inventory, client, staff_user, staff_client
):
    from applies import progress
    from applies.models import ApplyRun

    run = ApplyRun.objects.create(
        status=ApplyRun.Status.RUNNING, services=["ai-clip", "ai-llm"], actor="staff"
    )
    op = str(run.operation_id)
    progress.progress_init(op, ["ai-clip", "ai-llm"])
    progress.progress_note(
        op, "ai-clip", move_mode=ZERO_DOWNTIME, move_reason="reached by its alias on net"
    )
    progress.progress_note(
        op,
        "ai-llm",
        move_mode=RESTART,
        move_reason="publishes host port 8098: restarts, about 40 s without answers (last apply)",
        downtime_s=41.5,
    )
    progress.progress_update(op, "ai-clip", "waiting_health", "waiting")
    client.force_login(staff_user)
    body = client.get("/settings/gpu/apply/progress/", HTTP_HX_REQUEST="true").content
    page = body.decode()
    assert "Without downtime" in page and "reached by its alias on net" in page
    assert "publishes host port 8098: restarts, about 40 s without answers (last apply)" in page
    assert "41.5 s without answers" in page
    status = staff_client.get("/api/system/gpu-config/status").json()["service_statuses"]
    by_service = {e["service"]: e for e in status}
    assert by_service["ai-clip"]["move_mode"] == ZERO_DOWNTIME
    assert by_service["ai-clip"]["status"] == "waiting_health"  # the note kept the step
    assert by_service["ai-llm"]["downtime_s"] == 41.5


@pytest.mark.django_db
def test_the_apply_confirmation_says_how_each_service_would_move(
    reference_inventory, client, staff_user, settings
):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "tests.unit.test_views.StubRuntime"
    client.force_login(staff_user)
    raw = client.get("/settings/gpu/apply/", HTTP_HX_REQUEST="true").content.decode()
    body = " ".join(raw.split())
    assert "<strong>ai-enrichment</strong>: GPU 0 → GPU 1" in body
    # The stub is no engine: it cannot run two copies, so the move is a restart, and says why.
    assert "Restart</span>" in body
    assert "cannot run two copies: restarts, no answers until the new copy is healthy" in body
