"""The user's rules, in one place every strategy goes through.

A rule is split into constraints: ``pin`` (a service on the GPU with a given UUID),
``exclusive`` (no other service on its GPU) and ``never_with`` (two services on different
GPUs). A set of constraints *holds* for a placement that puts every service on an available GPU
and breaks none of them; it is *satisfiable* on some GPUs when such a placement exists.

Rules come before capacity. :func:`prepare` checks once per plan whether the rules can all
hold; when they cannot, it finds a smallest set of constraints that conflict (no constraint of
it can be left out and still conflict), reports it as a ``rule_conflict`` issue naming the
rules and the changes that would let them hold, and lets the constraint of the lowest priority
give way, until the rest hold. :func:`enforce` then turns each strategy's proposal into the
nearest placement that honours the remaining constraints: every service keeps the GPU the
strategy chose unless a rule forbids it, and one that must move goes where most VRAM is free.
A proposal that already honours them is returned unchanged, so rules cost nothing to plans
they do not touch. The manual strategy is not moved: its placements that break a rule are
reported (``rule_broken``) by :func:`broken`. Nothing here raises for a conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from .checks import gpu_label
from .placing import capacity_mb, usable_gpus
from .types import GpuView, Issue, Placement, ServiceDemand, ServiceRule

NODE_BUDGET = 4_000
"""Most assignments one search tries; past it the rules are treated as not holding (only a
set of rules far larger than any box has can need more)."""

PIN, EXCLUSIVE, NEVER_WITH = "pin", "exclusive", "never_with"


@dataclass(frozen=True, slots=True)
class Constraint:
    """One thing a rule asks: ``other`` is the UUID of a pin, the second service of a
    ``never_with`` pair (the pair in name order), empty for ``exclusive``."""

    kind: str
    service: str
    other: str = ""


def constraints_of(rules: Sequence[ServiceRule], services: Sequence[ServiceDemand]):
    """The constraints of ``rules`` that concern the services being planned, each once."""
    names = {s.name for s in services}
    out: list[Constraint] = []
    seen: set[Constraint] = set()

    def add(constraint: Constraint) -> None:
        if constraint not in seen:
            seen.add(constraint)
            out.append(constraint)

    for rule in rules:
        if rule.service not in names:
            continue
        if rule.pin_gpu_uuid:
            add(Constraint(PIN, rule.service, rule.pin_gpu_uuid))
        if rule.exclusive:
            add(Constraint(EXCLUSIVE, rule.service))
        for other in rule.never_with:
            if other in names and other != rule.service:
                first, second = sorted((rule.service, other))
                add(Constraint(NEVER_WITH, first, second))
    return out


def describe(constraint: Constraint, gpus: Sequence[GpuView]) -> str:
    """The constraint in words: ``ai-llm pinned to GPU 0 (RTX A5500)``."""
    if constraint.kind == PIN:
        gpu = next((g for g in gpus if g.uuid == constraint.other), None)
        where = gpu_label(gpu) if gpu is not None else f"GPU {constraint.other} (not present)"
        return f"{constraint.service} pinned to {where}"
    if constraint.kind == EXCLUSIVE:
        return f"{constraint.service} exclusive"
    return f"{constraint.service} never with {constraint.other}"


class _Problem:
    """The constraints as a search: a GPU domain and the services kept apart, per service."""

    def __init__(
        self,
        gpus: Sequence[GpuView],
        services: Sequence[ServiceDemand],
        constraints: Sequence[Constraint],
    ) -> None:
        usable = usable_gpus(gpus)
        self.usable = [g.index for g in usable]
        by_uuid = {g.uuid: g.index for g in usable}
        position = {s.name: i for i, s in enumerate(services)}
        n = len(services)
        self.n = n
        self.domains = [list(self.usable) for _ in range(n)]
        self.apart: list[set[int]] = [set() for _ in range(n)]
        self.exclusive = 0
        self.exclusive_set: set[int] = set()
        for c in constraints:
            i = position[c.service]
            if c.kind == PIN:
                index = by_uuid.get(c.other)
                self.domains[i] = [g for g in self.domains[i] if g == index]
            elif c.kind == EXCLUSIVE:
                self.exclusive += 1
                self.exclusive_set.add(i)
                others = set(range(n))
                others.discard(i)
                self.apart[i] |= others
                for j in others:
                    self.apart[j].add(i)
            else:
                j = position[c.other]
                self.apart[i].add(j)
                self.apart[j].add(i)

    @cached_property
    def others_min(self) -> int:
        """A lower bound on the GPUs the services that are not exclusive need together: none
        without such services, two when two of them are kept apart, else one."""
        others = [i for i in range(self.n) if i not in self.exclusive_set]
        if not others:
            return 0
        kept_apart = any(j not in self.exclusive_set for i in others for j in self.apart[i])
        return 2 if kept_apart else 1

    def holds(self, indices: Sequence[int | None]) -> bool:
        """Whether ``indices`` (one GPU per service) honours every constraint."""
        for i, index in enumerate(indices):
            if index is None or index not in self.domains[i]:
                return False
            if any(indices[j] == index for j in self.apart[i]):
                return False
        return True

    def solve(
        self,
        preferred: Sequence[int | None] | None = None,
        needs: Sequence[int] | None = None,
        capacity: dict[int, int] | None = None,
    ) -> list[int] | None:
        """A placement that honours every constraint, or None when there is none (or the
        search ran past :data:`NODE_BUDGET`).

        Depth first, the service with the fewest GPUs left first; each tries its
        ``preferred`` GPU first, then the others by most free VRAM (``capacity`` less
        ``needs`` of what is placed), then index. So a ``preferred`` placement that honours
        every constraint is found first, unchanged.
        """
        if self.n == 0:
            return []
        # Each exclusive service takes a GPU of its own, and the others need more.
        gpus_needed = self.exclusive + self.others_min
        if any(not d for d in self.domains) or gpus_needed > len(self.usable):
            return None
        return _Search(self, preferred, needs, capacity).run()


class _Search:
    """One depth-first search over a :class:`_Problem` (see :meth:`_Problem.solve`)."""

    def __init__(self, problem: _Problem, preferred, needs, capacity) -> None:
        n = problem.n
        self.problem = problem
        self.preferred = preferred
        self.needs = needs or [0] * n
        self.free = dict(capacity) if capacity else {g: 0 for g in problem.usable}
        self.assigned: list[int | None] = [None] * n
        self.blocked = [dict.fromkeys(problem.usable, 0) for _ in range(n)]
        self.left = [len(d) for d in problem.domains]
        self.domain_sets = [set(d) for d in problem.domains]
        self.degree = [len(a) for a in problem.apart]
        self.budget = NODE_BUDGET
        self.is_exclusive = [i in problem.exclusive_set for i in range(n)]
        self.others_min = problem.others_min
        self.count = dict.fromkeys(problem.usable, 0)
        self.empty = len(problem.usable)
        self.shared = 0
        self.waiting = [sum(self.is_exclusive), n - sum(self.is_exclusive)]
        # The order _pick chooses in, as one integer per service so that the choice is one
        # min() over a list: fewest GPUs left, then most kept apart, then input order. A
        # placed service's key is past every other.
        order = sorted(range(n), key=lambda i: (-self.degree[i], i))
        self.rank = [0] * n
        for position, i in enumerate(order):
            self.rank[i] = position
        self.key = [left * n + rank for left, rank in zip(self.left, self.rank)]
        self.placed_key = (len(problem.usable) + 1) * n

    def _hopeless(self) -> bool:
        """Whether too few GPUs are left: each unplaced exclusive service needs an empty one,
        and the other services :attr:`_Problem.others_min` GPUs in all, of which those already
        holding some count. (This bound cuts hopeless permutations of exclusive services short.)"""
        exclusive, others = self.waiting
        more = max(0, self.others_min - self.shared) if others else 0
        return exclusive + more > self.empty

    def run(self) -> list[int] | None:
        if not self._descend(0):
            return None
        return [g for g in self.assigned if g is not None]

    def _pick(self) -> int:
        """The unplaced service with the fewest GPUs left, then the most kept apart."""
        key = self.key
        return key.index(min(key))

    def _place(self, i: int, g: int, step: int) -> None:
        """Put service ``i`` on ``g`` (``step`` 1) or take it off (-1)."""
        n = self.problem.n
        key = self.key
        assigned = self.assigned
        for j in self.problem.apart[i]:
            blocked = self.blocked[j]
            before = blocked[g]
            blocked[g] = before + step
            if g in self.domain_sets[j] and (before == 0) != (before + step == 0):
                self.left[j] -= step
                if assigned[j] is None:
                    key[j] -= step * n
        self.free[g] -= step * self.needs[i]
        exclusive = self.is_exclusive[i]
        self.waiting[0 if exclusive else 1] -= step
        if step < 0:
            self.count[g] -= 1
        if self.count[g] == 0:
            self.empty -= step
            if not exclusive:
                self.shared += step
        if step > 0:
            self.count[g] += 1

    def _descend(self, depth: int) -> bool:
        if depth == self.problem.n:
            return True
        i = self._pick()
        if self.left[i] == 0 or self._hopeless():
            return False
        options = [g for g in self.problem.domains[i] if self.blocked[i][g] == 0]
        first = self.preferred[i] if self.preferred is not None else None
        options.sort(key=lambda g: (g != first, -self.free[g], g))
        for g in options:
            if self.budget <= 0:
                return False
            self.budget -= 1
            self.assigned[i] = g
            self.key[i] = self.placed_key
            self._place(i, g, 1)
            if self._descend(depth + 1):
                return True
            self._place(i, g, -1)
            self.assigned[i] = None
            self.key[i] = self.left[i] * self.problem.n + self.rank[i]
        return False


@dataclass(frozen=True)
class RuleSet:
    """The rules of one plan, checked: the constraints honoured, the conflicts found (as
    issues), each service's priority, and one placement that honours them all."""

    gpus: tuple[GpuView, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    issues: tuple[Issue, ...] = ()
    priority: dict[str, int] = field(default_factory=dict)
    solution: tuple[int, ...] | None = None
    problem: _Problem | None = None


def prepare(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], rules: Sequence[ServiceRule]
) -> RuleSet:
    """Check ``rules`` once for a plan: report every conflict and keep what can hold."""
    priority = {r.service: r.priority for r in rules}
    keep = constraints_of(rules, services)
    if not keep or not usable_gpus(gpus):
        # Without a GPU nothing is placed at all, which the checks report (``unplaced``).
        return RuleSet(gpus=tuple(gpus), priority=priority)
    issues: list[Issue] = []
    solution = _Problem(gpus, services, keep).solve()
    while solution is None:
        core = _core(gpus, services, keep, priority)
        order = {c: position for position, c in enumerate(keep)}
        dropped = min(core, key=lambda c: (_priority(c, priority), -order[c]))
        issues.append(_conflict(gpus, services, core, dropped))
        keep.remove(dropped)
        solution = _Problem(gpus, services, keep).solve()
    return RuleSet(
        gpus=tuple(gpus),
        constraints=tuple(keep),
        issues=tuple(issues),
        priority=priority,
        solution=tuple(solution),
        problem=_Problem(gpus, services, keep),
    )


def _priority(constraint: Constraint, priority: dict[str, int]) -> int:
    own = priority.get(constraint.service, 0)
    if constraint.kind == NEVER_WITH:
        return max(own, priority.get(constraint.other, 0))
    return own


def _can_hold(gpus, services, constraints: Sequence[Constraint]) -> bool:
    """Whether some placement honours ``constraints``: the question :func:`_core` asks many
    times, so asked of fewer services. A service no constraint names can share the GPU of any
    other such service (nothing keeps them apart but exclusive services, which they all are
    kept from alike), so one of them stands for all: the answer is the same."""
    named = set()
    for c in constraints:
        named.add(c.service)
        if c.kind == NEVER_WITH:
            named.add(c.other)
    free = [s for s in services if s.name not in named]
    kept = [s for s in services if s.name in named] + free[:1]
    return _Problem(gpus, kept, constraints).solve() is not None


def _core(gpus, services, constraints: list[Constraint], priority) -> list[Constraint]:
    """A smallest conflicting subset: each constraint is left out in turn (highest priority
    first, so that the conflict found is the one lower priorities take part in) and stays out
    while the rest still conflict."""
    core = list(constraints)
    for c in sorted(constraints, key=lambda c: -_priority(c, priority)):
        trial = [x for x in core if x != c]
        if not _can_hold(gpus, services, trial):
            core = trial
    return core


def _remedy(constraint: Constraint) -> str:
    if constraint.kind == PIN:
        return f"pin {constraint.service} to another GPU or remove its pin"
    if constraint.kind == EXCLUSIVE:
        return f"let {constraint.service} share its GPU"
    return f"allow {constraint.service} with {constraint.other}"


def _conflict(gpus, services, core: list[Constraint], dropped: Constraint) -> Issue:
    names = [describe(c, gpus) for c in core]
    remedies = [_remedy(c) for c in core]
    spare = max((g.index for g in gpus), default=-1) + 1
    extra = GpuView(index=spare, uuid="", name="", total_mb=1)
    if any(c.kind != PIN for c in core) and _can_hold([*gpus, extra], services, core):
        remedies.append("add a GPU")
    if len(core) == 1:
        lead = f"The rule {names[0]} cannot hold on these GPUs"
    else:
        lead = f"These rules cannot all hold on these GPUs: {', '.join(names)}"
    why = " (lowest priority)" if len(core) > 1 else ""
    text = (
        f"{lead}. {describe(dropped, gpus)} is not honoured{why}. "
        f"{'Any one of these would let them hold' if len(remedies) > 1 else 'To fix it'}: "
        f"{'; '.join(remedies)}."
    )
    pinned = next((g.index for g in gpus if dropped.kind == PIN and g.uuid == dropped.other), None)
    return Issue(
        "rule_conflict",
        text,
        service=dropped.service,
        gpu_index=pinned,
        rules=tuple(names),
        remedies=tuple(remedies),
    )


def enforce(
    ruleset: RuleSet,
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    indices: Sequence[int | None],
) -> tuple[int | None, ...]:
    """The placement nearest ``indices`` that honours the rule set (see the module)."""
    problem = ruleset.problem
    if problem is None or not problem.usable or problem.holds(indices):
        return tuple(indices)
    found = problem.solve(
        preferred=indices,
        needs=[s.effective_mb for s in services],
        capacity=capacity_mb(usable_gpus(gpus)),
    )
    if found is None:
        found = list(ruleset.solution or indices)
    return tuple(found)


def broken(
    ruleset: RuleSet, services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> tuple[Issue, ...]:
    """A ``rule_broken`` warning for each honoured constraint ``placements`` break (a manual
    edit is allowed to; it is never silent)."""
    gpus = ruleset.gpus
    where = {p.service: p.gpu_index for p in placements}
    by_index = {g.index: g for g in gpus}
    usable = {g.uuid: g.index for g in usable_gpus(gpus)}
    issues = []
    for c in ruleset.constraints:
        index = where.get(c.service)
        label = gpu_label(by_index.get(index), index) if index is not None else "no GPU"
        if c.kind == PIN:
            if index is None or usable.get(c.other) != index:
                text = f"{c.service} is on {label}, but it is pinned to another GPU."
            else:
                continue
        elif c.kind == EXCLUSIVE:
            sharing = [
                p.service for p in placements if p.gpu_index == index and p.service != c.service
            ]
            if index is None or not sharing:
                continue
            text = (
                f"{c.service} should have {label} to itself (exclusive), but shares it with "
                f"{', '.join(sharing)}."
            )
        else:
            if index is None or where.get(c.other) != index:
                continue
            text = f"{c.service} and {c.other} share {label}, but are never to be together."
        issues.append(
            Issue(
                "rule_broken",
                text,
                service=c.service,
                gpu_index=index,
                rules=(describe(c, gpus),),
                remedies=(_remedy(c),),
            )
        )
    return tuple(issues)


def rules_check(
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    rules: Sequence[ServiceRule],
) -> tuple[Issue, ...]:
    """The rule warnings of a saved configuration: conflicts, then broken rules."""
    ruleset = prepare(gpus, services, rules)
    return ruleset.issues + broken(ruleset, services, placements)
