"""The user's rules in the planner: every automatic strategy honours every rule whenever some
placement can satisfy them all (checked against an exhaustive search at small sizes); rules
that cannot all hold are reported as ``rule_conflict``, never raised; a manual placement that
breaks a rule is reported as ``rule_broken``."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assignments.planner import GpuView, ServiceDemand, ServiceRule, plan
from assignments.planner.rules import _can_hold, constraints_of

AUTOMATIC = ("vram_based", "latency_optimized", "isolation_first", "balanced")
SEARCH = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def honours(gpus, services, rules, indices, off=frozenset()) -> bool:
    """Whether one GPU per service (None: unplaced) honours every rule, by definition. The
    services ``off`` were left unplaced for priority (memory is short): their rules are moot."""
    usable = {g.index for g in gpus if g.available and g.total_mb > 0}
    by_uuid = {g.uuid: g.index for g in gpus if g.index in usable}
    where = {s.name: index for s, index in zip(services, indices) if s.name not in off}
    if any(index not in usable for index in where.values()):
        return False
    for rule in rules:
        if rule.service not in where:
            continue
        index = where[rule.service]
        if rule.pin_gpu_uuid and by_uuid.get(rule.pin_gpu_uuid) != index:
            return False
        if rule.exclusive and any(
            other != rule.service and gpu == index for other, gpu in where.items()
        ):
            return False
        for other in rule.never_with:
            if other != rule.service and where.get(other) == index:
                return False
    return True


def satisfiable(gpus, services, rules) -> bool:
    """Exhaustive: does any placement of every service on a GPU honour every rule?"""
    indices = [g.index for g in gpus]
    if not any(g.available for g in gpus):
        return True  # nothing can be placed at all: reported as unplaced, not a conflict
    return any(
        honours(gpus, services, rules, combo)
        for combo in itertools.product(indices, repeat=len(services))
    )


@st.composite
def instances(draw):
    count = draw(st.integers(1, 3))
    gpus = [
        GpuView(
            index=i,
            uuid=f"GPU-{i}",
            name=f"NVIDIA Test {i}",
            total_mb=draw(st.sampled_from([4094, 8192, 12288, 24564])),
            foreign_used_mb=draw(st.sampled_from([0, 0, 512])),
            compute_capability=draw(st.sampled_from([(7, 5), (8, 6), (9, 0)])),
            available=draw(st.booleans() | st.just(True)),
        )
        for i in range(count)
    ]
    names = [f"svc-{i}" for i in range(draw(st.integers(1, 5)))]
    services = [
        ServiceDemand(
            name=name,
            need_mb=draw(st.integers(256, 9000)),
            latency_critical=draw(st.booleans()),
            isolated=draw(st.booleans()),
            budget_adjustable=(adjustable := draw(st.booleans())),
            default_budget_gb=draw(st.sampled_from([2.0, 4.0, 6.0])) if adjustable else None,
            current_gpu=draw(st.sampled_from([None, *range(count)])),
        )
        for name in names
    ]
    rules = []
    for name in names:
        if not draw(st.integers(0, 2)):
            continue
        rules.append(
            ServiceRule(
                service=name,
                pin_gpu_uuid=draw(st.sampled_from([None, None, "GPU-0", "GPU-1", "GPU-9"])),
                exclusive=draw(st.booleans()),
                never_with=tuple(draw(st.lists(st.sampled_from(names), max_size=2))),
                priority=draw(st.integers(0, 3)),
            )
        )
    return gpus, services, rules


@SEARCH
@given(instances())
def test_every_strategy_honours_every_rule_when_some_placement_satisfies_them_all(instance):
    gpus, services, rules = instance
    if not satisfiable(gpus, services, rules) or not any(g.available for g in gpus):
        return
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, services, rules)
        indices = [p.gpu_index for p in result.placements]
        off = {i.service for i in result.issues if i.code == "unplaced_for_priority"}
        assert honours(gpus, services, rules, indices, off), (strategy, result.placements)
        codes = {issue.code for issue in result.issues}
        assert not codes & {"rule_conflict", "rule_broken"}, (strategy, result.warnings)


@SEARCH
@given(instances())
def test_rules_that_cannot_all_hold_are_reported_as_a_conflict_not_raised(instance):
    gpus, services, rules = instance
    if satisfiable(gpus, services, rules):
        return
    assert satisfiable(gpus, services, [])  # only the rules make it impossible
    for strategy in (*AUTOMATIC, "manual"):
        result = plan(strategy, gpus, services, rules)
        conflicts = [i for i in result.issues if i.code == "rule_conflict"]
        assert conflicts, (strategy, result.warnings)
        for issue in conflicts:
            assert issue.rules and issue.remedies
            assert all(name in issue.message for name in issue.rules)


@SEARCH
@given(instances())
def test_the_rules_kept_after_a_conflict_are_honoured(instance):
    """Once the conflicting rules of lowest priority give way, the rest hold."""
    gpus, services, rules = instance
    if not any(g.available for g in gpus):
        return
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, services, rules)
        assert not [i for i in result.issues if i.code == "rule_broken"], result.warnings


@SEARCH
@given(instances())
def test_a_manual_placement_that_breaks_a_rule_is_reported(instance):
    gpus, services, rules = instance
    result = plan("manual", gpus, services, rules)
    indices = [p.gpu_index for p in result.placements]
    assert indices == [s.current_gpu for s in services]  # a manual edit is never moved
    if not any(g.available for g in gpus):
        return  # every placement is already reported as on a GPU that is not available
    if satisfiable(gpus, services, rules) and any(
        placed_breaks(gpus, services, rule, indices) for rule in rules
    ):
        assert any(i.code == "rule_broken" for i in result.issues), result.warnings


def placed_breaks(gpus, services, rule, indices) -> bool:
    """Whether the placed services break ``rule`` (an unplaced one is reported otherwise)."""
    where = {s.name: index for s, index in zip(services, indices) if index is not None}
    if rule.service not in where:
        return False
    index = where[rule.service]
    by_uuid = {g.uuid: g.index for g in gpus if g.available}
    if rule.pin_gpu_uuid and rule.pin_gpu_uuid in by_uuid and by_uuid[rule.pin_gpu_uuid] != index:
        return True
    others = [name for name, gpu in where.items() if gpu == index and name != rule.service]
    return bool(rule.exclusive and others) or bool(set(rule.never_with) & set(others))


@SEARCH
@given(instances())
def test_rules_do_not_move_a_plan_they_already_allow(instance):
    gpus, services, _ = instance
    for strategy in AUTOMATIC:
        free = plan(strategy, gpus, services)
        indices = [p.gpu_index for p in free.placements]
        if None in indices:
            continue
        # rules the free plan already honours: pin each service where it was planned
        by_index = {g.index: g.uuid for g in gpus}
        pins = [ServiceRule(s.name, pin_gpu_uuid=by_index[i]) for s, i in zip(services, indices)]
        assert plan(strategy, gpus, services, pins).placements == free.placements


def test_a_pin_to_a_missing_gpu_names_the_pin_and_the_fix():
    gpus = [GpuView(0, "GPU-0", "NVIDIA A", 8192), GpuView(1, "GPU-1", "NVIDIA B", 8192)]
    services = [ServiceDemand("llm", 4000), ServiceDemand("clip", 1000)]
    result = plan("vram_based", gpus, services, [ServiceRule("llm", pin_gpu_uuid="GPU-gone")])
    (issue,) = [i for i in result.issues if i.code == "rule_conflict"]
    assert issue.service == "llm"
    assert issue.rules == ("llm pinned to GPU GPU-gone (not present)",)
    assert issue.remedies == ("pin llm to another GPU or remove its pin",)


def test_three_exclusive_services_on_two_gpus_give_way_by_priority():
    gpus = [GpuView(0, "GPU-0", "NVIDIA A", 8192), GpuView(1, "GPU-1", "NVIDIA B", 8192)]
    services = [ServiceDemand(n, 1000) for n in ("llm", "det", "clip")]
    rules = [
        ServiceRule("llm", exclusive=True, priority=9),
        ServiceRule("det", exclusive=True, priority=1),
        ServiceRule("clip", exclusive=True, priority=5),
    ]
    result = plan("balanced", gpus, services, rules)
    conflicts = [i for i in result.issues if i.code == "rule_conflict"]
    # Two exclusive services already leave the third none: the two lowest give way, in order.
    assert [i.service for i in conflicts] == ["det", "clip"]
    assert all("add a GPU" in i.remedies for i in conflicts)
    llm = result.gpu_of("llm")
    assert [p.service for p in result.placements if p.gpu_index == llm] == ["llm"]


def test_never_with_keeps_the_pair_apart_in_every_strategy():
    gpus = [GpuView(0, "GPU-0", "NVIDIA A", 24564), GpuView(1, "GPU-1", "NVIDIA B", 4094)]
    services = [ServiceDemand("clip", 1500), ServiceDemand("detector", 1200)]
    rules = [ServiceRule("clip", never_with=("detector",))]
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, services, rules)
        assert result.gpu_of("clip") != result.gpu_of("detector"), strategy


def test_priority_orders_which_budget_is_lowered_first():
    gpus = [GpuView(0, "GPU-0", "NVIDIA A", 8192)]
    adjustable = dict(budget_adjustable=True, min_budget_gb=1.0, need_mb=4096)
    services = [
        ServiceDemand("a", default_budget_gb=4.0, **adjustable),
        ServiceDemand("b", default_budget_gb=4.0, **adjustable),
        ServiceDemand("c", need_mb=2048),
    ]
    first = plan("vram_based", gpus, services, [ServiceRule("b", priority=5)])
    second = plan("vram_based", gpus, services, [ServiceRule("a", priority=5)])
    # None: the service keeps its own budget (4 GB); the lower priority is the one lowered.
    assert first.budget_of("a") < 4.0 and first.budget_of("b") is None
    assert second.budget_of("b") < 4.0 and second.budget_of("a") is None


def test_constraints_ignore_rules_of_services_not_planned():
    services = [ServiceDemand("a", 100)]
    rules = [ServiceRule("gone", exclusive=True), ServiceRule("a", never_with=("gone", "a"))]
    assert constraints_of(rules, services) == []


@SEARCH
@given(instances())
def test_the_conflict_search_answers_as_an_exhaustive_search_does(instance):
    """The question the conflict search asks many times (can these rules hold?) is asked of
    fewer services; the answer must be the exhaustive one."""
    gpus, services, rules = instance
    if not any(g.available and g.total_mb > 0 for g in gpus):
        return
    constraints = constraints_of(rules, services)
    assert _can_hold(gpus, services, constraints) == satisfiable(gpus, services, rules)
