"""Applies room. How each service moves to its new GPU: make-before-break (``zero_downtime``: the
new copy goes healthy before the old one stops) or stop-start (``restart``), and why.

Make-before-break when all of these hold, else stop-start:

- the target GPU has room for a second copy while the first still runs: its free VRAM at the
  last scan, plus what services that restart leave on it first (they stop before anything
  starts there), minus what other services bring onto it, is at least the service's need;
- the service is reached by its network alias on a user-defined network, not through a
  published host port or a fixed ``container_name`` (``runtime.handover.MoveFacts``);
- the runtime can do it (Docker user networks; Podman networks with DNS).

``move_modes_decide`` is the pure rule over plain data; ``move_plan`` gathers that data (GPU rows,
the containers, the last measured downtime) for the preview and the apply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from applies.models import ApplyRun
from applies.runtime import get_runtime
from applies.runtime.base import ALL_DEVICES, EngineError, RuntimeUnavailable
from applies.runtime.handover import RESTART, ZERO_DOWNTIME, MoveFacts, move_facts
from assignments.planner.placing import need_mb
from assignments.selectors import planning_input
from gpus.models import Gpu

logger = logging.getLogger(__name__)

__all__ = [
    "RESTART",
    "ZERO_DOWNTIME",
    "Move",
    "MoveDecision",
    "last_downtimes",
    "move_modes_decide",
    "move_plan",
]


@dataclass(frozen=True, slots=True)
class Move:
    """One service leaving ``from_gpu`` for ``to_gpu`` (indices; None: no GPU, or not known)
    with ``need_mb`` of VRAM."""

    service: str
    from_gpu: int | None
    to_gpu: int | None
    need_mb: int


@dataclass(frozen=True, slots=True)
class MoveDecision:
    """How one service moves (``zero_downtime`` or ``restart``) and why, in words."""

    mode: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"move_mode": self.mode, "move_reason": self.reason}


def _restart_reason(why: str, downtime_s: float | None) -> str:
    if downtime_s is None:
        return f"{why}: restarts, no answers until the new copy is healthy"
    return f"{why}: restarts, about {downtime_s:.0f} s without answers (last apply)"


def _room_mb(
    move: Move, moves: Sequence[Move], modes: Mapping[str, str], free: Mapping[int, int | None]
) -> int | None:
    """VRAM left on ``move``'s target GPU for its second copy (None: the free VRAM is unknown)."""
    gpu = move.to_gpu
    base = free.get(gpu) if gpu is not None else None
    if base is None:
        return None
    leaving_first = sum(
        m.need_mb
        for m in moves
        if m.service != move.service
        and m.from_gpu == gpu
        and m.to_gpu != gpu
        and modes[m.service] == RESTART
    )
    arriving = sum(
        m.need_mb
        for m in moves
        if m.service != move.service and m.to_gpu == gpu and m.from_gpu != gpu
    )
    return base + leaving_first - arriving


def _container_blockers(
    moves: Sequence[Move], facts: Mapping[str, MoveFacts | None]
) -> dict[str, str]:
    """Why each service whose container forbids a make-before-break move must restart."""
    blocked: dict[str, str] = {}
    for move in moves:
        fact = facts.get(move.service)
        if fact is None:
            blocked[move.service] = "has no container to copy"
        elif why := fact.blocker():
            blocked[move.service] = why
        elif move.to_gpu is None and move.from_gpu is None:
            blocked[move.service] = "runs on every GPU or none known"
    return blocked


def move_modes_decide(
    *,
    moves: Sequence[Move],
    facts: Mapping[str, MoveFacts | None],
    free_mb: Mapping[int, int | None],
    last_downtime: Mapping[str, float] | None = None,
) -> dict[str, MoveDecision]:
    """The mode of each move, by service (see the module for the rule).

    ``facts``: each service's container facts (None or missing: no container, so it restarts);
    ``free_mb``: free VRAM per GPU index at the last scan (None: unknown); ``last_downtime``:
    seconds without answers at the service's last stop-start, shown in the reason. A service
    that restarts frees its VRAM first, which can give another room: the rule is applied until
    nothing changes (a service only ever goes from make-before-break to restart).
    """
    downtime = last_downtime or {}
    blocked = _container_blockers(moves, facts)
    modes = {m.service: RESTART if m.service in blocked else ZERO_DOWNTIME for m in moves}
    rooms: dict[str, int | None] = {}
    changed = True
    while changed:
        changed = False
        for move in moves:
            if modes[move.service] != ZERO_DOWNTIME or move.to_gpu is None:
                continue
            room = _room_mb(move, moves, modes, free_mb)
            rooms[move.service] = room
            if room is None:
                blocked[move.service] = f"the free VRAM of GPU {move.to_gpu} is not known"
            elif room < move.need_mb:
                blocked[move.service] = (
                    f"GPU {move.to_gpu} has {max(room, 0)} MB free for a second copy, "
                    f"{move.need_mb} MB needed"
                )
            else:
                continue
            modes[move.service] = RESTART
            changed = True
    out: dict[str, MoveDecision] = {}
    for move in moves:
        service = move.service
        if modes[service] == RESTART:
            out[service] = MoveDecision(
                RESTART, _restart_reason(blocked[service], downtime.get(service))
            )
            continue
        fact = facts[service]
        assert fact is not None
        nets = ", ".join(fact.aliased)
        room = rooms.get(service)
        where = (
            f"GPU {move.to_gpu} has room for a second copy ({room} MB free, "
            f"{move.need_mb} MB needed)"
            if room is not None
            else "it leaves its GPU"
        )
        out[service] = MoveDecision(
            ZERO_DOWNTIME,
            f"reached by its alias on {nets}; {where}: the new copy goes healthy before "
            "the old one stops",
        )
    return out


# -- gathering the data ------------------------------------------------------------------------


def gpu_index_of(device_ids: Sequence[str], gpus: Iterable) -> int | None:
    """The GPU index one device request names (an index or a UUID); None for no GPU, every GPU
    or several."""
    if len(device_ids) != 1 or device_ids[0] == ALL_DEVICES:
        return None
    ref = device_ids[0]
    for gpu in gpus:
        if ref in (str(gpu.index), gpu.uuid):
            return gpu.index
    return None


def free_mb_at_last_scan() -> dict[int, int | None]:
    """Free VRAM per available GPU at the last scan (None where the scan had no figure)."""

    out: dict[int, int | None] = {}
    for gpu in Gpu.objects.filter(available=True):
        if gpu.vram_total_mb is None or gpu.vram_used_mb is None:
            out[gpu.index] = None
        else:
            out[gpu.index] = gpu.vram_total_mb - gpu.vram_used_mb
    return out


def last_downtimes(services: Iterable[str]) -> dict[str, float]:
    """Each service's downtime at its last stop-start move, from the recent apply runs."""

    wanted = set(services)
    out: dict[str, float] = {}
    for results in ApplyRun.objects.order_by("-created_at", "-pk").values_list(
        "results", flat=True
    )[:20]:
        for service, result in (results or {}).items():
            if (
                service in wanted
                and service not in out
                and isinstance(result, dict)
                and result.get("move_mode") == RESTART
                and isinstance(result.get("downtime_s"), int | float)
            ):
                out[service] = float(result["downtime_s"])
    return out


def move_plan(*, moves: Sequence[Move], runtime=None) -> dict[str, MoveDecision]:
    """The mode of each move with the data it depends on read now: the containers (``runtime``,
    default the configured one), the GPUs' free VRAM at the last scan and the last measured
    downtimes. An engine that cannot be asked makes every move a restart, saying so."""
    if not moves:
        return {}
    services = [m.service for m in moves]
    try:
        if runtime is None:
            runtime = get_runtime()
        facts: dict[str, MoveFacts | None] = dict(move_facts(runtime, services))
    except (RuntimeUnavailable, EngineError) as exc:
        logger.info("cannot read the containers to choose move modes: %s", exc)
        reason = "the container engine cannot be asked"
        facts = {s: MoveFacts(service=s, unsupported=reason) for s in services}
    return move_modes_decide(
        moves=moves,
        facts=facts,
        free_mb=free_mb_at_last_scan(),
        last_downtime=last_downtimes(services),
    )


def apply_move_modes(runtime, changes: Sequence, *, note=None) -> dict[str, MoveDecision]:
    """The mode of each change an apply recreates (``applying.Change``), each noted on the
    apply's progress (``note(service, move_mode=..., move_reason=...)``) as it is decided."""

    work = [c for c in changes if c.needs_recreate and c.current is not None]
    if not work:
        return {}
    gpus = list(Gpu.objects.filter(available=True))
    demands = {d.name: d for d in planning_input().services}
    moves = []
    for change in work:
        demand = demands.get(change.service)
        budget = change.target.budget_gb
        need = (
            round(budget * 1024)
            if budget is not None and not change.target.keep_budget
            else (need_mb(demand) if demand is not None else 0)
        )
        moves.append(
            Move(
                service=change.service,
                from_gpu=gpu_index_of(change.current.device_ids, gpus),
                to_gpu=gpu_index_of(change.target.device_ids, gpus),
                need_mb=need,
            )
        )
    decisions = move_plan(moves=moves, runtime=runtime)
    for service, decision in decisions.items():
        if note is not None:
            note(service, **decision.as_dict())
    return decisions


def preview_move_modes(plan, data) -> dict[str, dict[str, str]]:
    """For a preview: how each service the plan moves off its saved GPU would move, as
    ``{"move_mode", "move_reason"}`` by service (services that stay are left out)."""

    demands = {d.name: d for d in data.services}
    moves = [
        Move(
            service=p.service,
            from_gpu=demands[p.service].current_gpu,
            to_gpu=p.gpu_index,
            need_mb=need_mb(demands[p.service], p),
        )
        for p in plan.placements
        if p.service in demands and demands[p.service].current_gpu != p.gpu_index
    ]
    return {s: d.as_dict() for s, d in move_plan(moves=moves).items()}
