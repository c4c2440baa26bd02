"""Balanced: every GPU filled to a similar fraction of its VRAM.

The objective, for the available GPUs, is the population variance of the utilisation
fractions ``(foreign use + planned) / total``. Assignments that respect every GPU's capacity
win when one exists; otherwise the least total overflow wins first. Among equally good
assignments the lexicographically smallest vector of GPU indices wins, with the services in
planning order (largest effective need first, ties in input order).

Small instances are solved exactly by branch and bound; larger ones by a greedy start
improved with a bounded local search, so planning time stays flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..placing import largest_first, usable_gpus
from ..registry import BUDGET_NOTE, Proposal, register
from ..types import GpuView, ServiceDemand

EXACT_SEARCH_LIMIT = 4**10
"""Solve exactly while ``gpus ** services`` stays within this (at least 10 services × 4 GPUs)."""

EXACT_MAX_SERVICES = 12
"""Above this many services the exact search is not used: with few GPUs the problem becomes a
number-partitioning one whose proof of optimality can take seconds."""

EXACT_MAX_GPUS = 12
"""Above this many GPUs the exact search is not used, whatever the number of services."""

LOCAL_SEARCH_BUDGET = 6_000
"""Most candidate moves and swaps the local search evaluates; keeps large plans fast."""

_IMPROVEMENT = 1e-12


@register(
    "balanced",
    label="Balanced",
    description=(
        "Over-commits as little memory as possible, then fills every GPU to a similar "
        "fraction of its memory. " + BUDGET_NOTE
    ),
)
def balanced(gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Proposal:
    """Minimise the variance of VRAM utilisation across available GPUs (see the module)."""
    usable = usable_gpus(gpus)
    chosen: list[int | None] = [None] * len(services)
    if not usable:
        return Proposal(tuple(chosen))
    order = largest_first(services, range(len(services)))
    slots = assign(
        [g.total_mb for g in usable],
        [g.foreign_used_mb for g in usable],
        [services[i].effective_mb for i in order],
    )
    for i, slot in zip(order, slots):
        chosen[i] = usable[slot].index
    return Proposal(tuple(chosen))


def assign(totals: Sequence[int], base: Sequence[int], needs: Sequence[int]) -> list[int]:
    """GPU slot (position in ``totals``) for each need; ``needs`` sorted largest first."""
    if len(totals) == 1:
        return [0] * len(needs)
    placed = [k for k, need in enumerate(needs) if need > 0]
    sized = [needs[k] for k in placed]
    starts = (_greedy(totals, base, sized), _most_free(totals, base, sized))
    start = min(starts, key=lambda slots: _exact_key(totals, base, sized, slots))
    slots = _local_search(totals, base, sized, start)
    if _exact_fits(len(totals), len(sized)):
        slots = _BranchAndBound(totals, base, sized, slots).solve()
    result = [0] * len(needs)  # a service that needs nothing goes to the first GPU
    for k, slot in zip(placed, slots):
        result[k] = slot
    return result


def _exact_fits(gpus: int, services: int) -> bool:
    return (
        services <= EXACT_MAX_SERVICES
        and gpus <= EXACT_MAX_GPUS
        and gpus**services <= EXACT_SEARCH_LIMIT
    )


def _greedy(totals: Sequence[int], base: Sequence[int], needs: Sequence[int]) -> list[int]:
    """Largest first, each to the GPU that least adds overflow, then ends least utilised."""
    loads = list(base)
    slots = []
    for need in needs:
        slot = min(
            range(len(totals)),
            key=lambda g: (
                max(0, loads[g] + need - totals[g]) - max(0, loads[g] - totals[g]),
                (loads[g] + need) / totals[g],
                g,
            ),
        )
        loads[slot] += need
        slots.append(slot)
    return slots


def _most_free(totals: Sequence[int], base: Sequence[int], needs: Sequence[int]) -> list[int]:
    """The VRAM-based placement: each to the GPU with the most free VRAM."""
    loads = list(base)
    slots = []
    for need in needs:
        slot = min(range(len(totals)), key=lambda g: (loads[g] - totals[g], g))
        loads[slot] += need
        slots.append(slot)
    return slots


def _exact_key(
    totals: Sequence[int], base: Sequence[int], needs: Sequence[int], slots: Sequence[int]
) -> tuple[int, int]:
    """(overflow, variance scaled to an exact integer) of a complete assignment."""
    loads = list(base)
    for need, slot in zip(needs, slots):
        loads[slot] += need
    scale = math.lcm(*totals)
    scaled = [load * (scale // total) for load, total in zip(loads, totals)]
    overflow = sum(max(0, load - total) for load, total in zip(loads, totals))
    return overflow, len(totals) * sum(x * x for x in scaled) - sum(scaled) ** 2


def _local_search(
    totals: Sequence[int], base: Sequence[int], needs: Sequence[int], slots: list[int]
) -> list[int]:
    """Improve ``slots`` by single moves and pairwise swaps, first improvement, until none
    helps or :data:`LOCAL_SEARCH_BUDGET` candidates were evaluated. Deterministic."""
    n, m = len(totals), len(needs)
    slots = list(slots)
    loads = list(base)
    for need, slot in zip(needs, slots):
        loads[slot] += need
    util = [load / total for load, total in zip(loads, totals)]
    s1 = sum(util)
    s2 = sum(u * u for u in util)
    overflow = sum(max(0, load - total) for load, total in zip(loads, totals))
    budget = LOCAL_SEARCH_BUDGET

    def improves(a: int, b: int, amount: int) -> bool:
        """Whether moving ``amount`` MB of need from GPU a to GPU b makes the plan better."""
        la, lb = loads[a] - amount, loads[b] + amount
        ta, tb = totals[a], totals[b]
        moved = (
            overflow
            + max(0, la - ta)
            - max(0, loads[a] - ta)
            + max(0, lb - tb)
            - max(0, loads[b] - tb)
        )
        if moved != overflow:
            return moved < overflow
        ua, ub = la / ta, lb / tb
        t1 = s1 - util[a] - util[b] + ua + ub
        t2 = s2 - util[a] ** 2 - util[b] ** 2 + ua * ua + ub * ub
        return t2 / n - (t1 / n) ** 2 < s2 / n - (s1 / n) ** 2 - _IMPROVEMENT

    def apply(a: int, b: int, amount: int) -> None:
        nonlocal s1, s2, overflow
        loads[a] -= amount
        loads[b] += amount
        util[a] = loads[a] / totals[a]
        util[b] = loads[b] / totals[b]
        s1 = sum(util)
        s2 = sum(u * u for u in util)
        overflow = sum(max(0, load - total) for load, total in zip(loads, totals))

    def candidates():
        """Moves (service, target GPU), then swaps (service, service), in a fixed order."""
        for k in range(m):
            for b in range(n):
                yield k, None, b
        for k in range(m):
            for j in range(k + 1, m):
                yield k, j, None

    improved = True
    while improved and budget > 0:
        improved = False
        for k, j, target in candidates():
            if budget <= 0:
                break
            a = slots[k]
            if j is None:
                b, amount = target, needs[k]
            else:
                b, amount = slots[j], needs[k] - needs[j]
            if a == b or amount == 0:
                continue
            budget -= 1
            if improves(a, b, amount):
                apply(a, b, amount)
                slots[k] = b
                if j is not None:
                    slots[j] = a
                improved = True
    return slots


class _BranchAndBound:
    """Exact search over slot vectors in lexicographic order.

    Services are taken largest first. Pruning: total overflow can only grow and is at least
    the remaining need beyond all free VRAM; the variance has the lower bound of
    :meth:`_variance_floor`. Symmetry: of identical GPUs (same total and foreign use) only the
    first empty one is tried, and services of equal need take non-decreasing slots; the
    lexicographically smallest optimum always satisfies both, so it is never cut away.
    Leaves are compared exactly in integers.
    """

    def __init__(
        self, totals: Sequence[int], base: Sequence[int], needs: Sequence[int], seed: list[int]
    ) -> None:
        self.totals = list(totals)
        self.needs = list(needs)
        self.n = len(totals)
        self.loads = list(base)
        self.count = [0] * self.n
        self.slots = [0] * len(needs)
        self.seen: set[tuple[int, ...]] = set()
        self.scale = math.lcm(*self.totals)
        self.weights = [self.scale // t for t in self.totals]
        self.denominator = self.n * self.n * self.scale * self.scale
        self.squares = [float(t * t) for t in self.totals]
        self.remaining = [sum(self.needs[k:]) for k in range(len(needs) + 1)]
        self.twin: list[int] = []
        for g in range(self.n):
            same = [h for h in range(g) if (self.totals[h], base[h]) == (self.totals[g], base[g])]
            self.twin.append(same[-1] if same else -1)
        loads = list(base)
        for need, slot in zip(needs, seed):
            loads[slot] += need
        self._keep(self._exact_key(loads), list(seed))

    def solve(self) -> list[int]:
        if not self.needs:
            return []
        overflow = sum(max(0, load - total) for load, total in zip(self.loads, self.totals))
        self._descend(0, overflow)
        return self.best_slots

    def _keep(self, key: tuple[int, int], slots: list[int]) -> None:
        self.best_key = key
        self.best_slots = slots
        self.best_variance = key[1] / self.denominator

    def _exact_key(self, loads: Sequence[int]) -> tuple[int, int]:
        """(overflow, variance × n² × scale²) as exact integers."""
        overflow = sum(max(0, load - total) for load, total in zip(loads, self.totals))
        scaled = [load * w for load, w in zip(loads, self.weights)]
        return overflow, self.n * sum(x * x for x in scaled) - sum(scaled) ** 2

    def _descend(self, k: int, overflow: int) -> None:
        need = self.needs[k]
        first = self.slots[k - 1] if k and self.needs[k - 1] == need else 0
        loads, totals, count = self.loads, self.totals, self.count
        if k == len(self.needs) - 1:
            self._finish(k, overflow, need, first)
            return
        for g in range(first, self.n):
            twin = self.twin[g]
            if count[g] == 0 and twin >= 0 and count[twin] == 0:
                continue
            before = loads[g]
            grown = overflow + max(0, before + need - totals[g]) - max(0, before - totals[g])
            loads[g] = before + need
            count[g] += 1
            self.slots[k] = g
            if not self._prune(k + 1, grown) and self._first_visit(k + 1):
                self._descend(k + 1, grown)
            loads[g] = before
            count[g] -= 1

    def _finish(self, k: int, overflow: int, need: int, first: int) -> None:
        """Place the last service on each GPU in turn; only close calls get the exact check."""
        loads, totals, count, n = self.loads, self.totals, self.count, self.n
        util = [load / total for load, total in zip(loads, totals)]
        s1 = sum(util)
        s2 = sum(u * u for u in util)
        for g in range(first, n):
            twin = self.twin[g]
            if count[g] == 0 and twin >= 0 and count[twin] == 0:
                continue
            before = loads[g]
            grown = overflow + max(0, before + need - totals[g]) - max(0, before - totals[g])
            best_overflow = self.best_key[0]
            if grown > best_overflow:
                continue
            if grown == best_overflow:
                moved = (before + need) / totals[g]
                t1 = s1 - util[g] + moved
                variance = (s2 - util[g] * util[g] + moved * moved) / n - (t1 / n) ** 2
                if variance > self.best_variance * (1 + 1e-9) + 1e-11:
                    continue
            loads[g] = before + need
            self.slots[k] = g
            key = self._exact_key(loads)
            if key < self.best_key or (key == self.best_key and self.slots < self.best_slots):
                self._keep(key, list(self.slots))
            loads[g] = before

    def _first_visit(self, k: int) -> bool:
        """False when this node's loads (and equal-need constraint) were reached before.

        Earlier visits have lexicographically smaller prefixes, and the same loads allow the
        same completions with the same objective, so nothing here could win.
        """
        bound = self.slots[k - 1] if self.needs[k] == self.needs[k - 1] else -1
        state = (k, bound, *self.loads)
        if state in self.seen:
            return False
        self.seen.add(state)
        return True

    def _prune(self, k: int, overflow: int) -> bool:
        remaining = self.remaining[k]
        room = sum(max(0, t - load) for t, load in zip(self.totals, self.loads))
        floor = overflow + max(0, remaining - room)
        best_overflow, best_scaled = self.best_key
        if floor != best_overflow:
            return floor > best_overflow
        bound = self._variance_floor(remaining)
        bound = bound * (1 - 1e-9) - 1e-11
        if bound > self.best_variance:
            return True
        if bound >= self.best_variance or best_scaled == 0:
            # Nothing below can be strictly better; a tie only wins if it sorts first.
            return self.slots[:k] > self.best_slots[:k]
        return False

    def _variance_floor(self, remaining: int) -> float:
        """A lower bound on the final variance, wherever the remaining need goes.

        Let ``a`` be the current fractions, sorted, and ``u >= a`` the final ones, with
        ``Σ total·u = S`` (all load, the remaining need included) and final mean ``m``. If ``m``
        lies between ``a_k`` and ``a_k+1``, the GPUs above it contribute at least
        ``Σ_{j>k} (a_j − m)²``; those below must together take ``m·T_low − S_low`` more than
        their share (``T_low`` their total VRAM, ``S_low`` what is left for them when the
        others stay as they are), which by Cauchy–Schwarz costs at least
        ``(m·T_low − S_low)₊² / Σ_{j≤k} total_j²``. The sum is convex in ``m`` on each piece
        and is minimised piece by piece; the smallest piece minimum bounds ``n·Var``.
        """
        rows = sorted(
            zip(
                [load / total for load, total in zip(self.loads, self.totals)],
                self.loads,
                self.totals,
                self.squares,
            )
        )
        n = self.n
        target = sum(self.loads) + remaining
        rest_sum = 0.0
        rest_sq = 0.0
        for x, *_ in rows:
            rest_sum += x
            rest_sq += x * x
        lowest = rows[0][0]
        best = rest_sq - 2 * lowest * rest_sum + n * lowest * lowest
        squares = 0.0
        low_total = 0
        high_load = sum(self.loads)
        rest_count = n
        for k in range(n):
            low, load, total, square = rows[k]
            squares += square
            low_total += total
            high_load -= load
            rest_sum -= low
            rest_sq -= low * low
            rest_count -= 1
            high = rows[k + 1][0] if rest_count else math.inf
            low_target = target - high_load
            m = (rest_sum + low_total * low_target / squares) / (
                rest_count + low_total * low_total / squares
            )
            m = max(m, low_target / low_total, low)
            m = min(m, high)
            value = rest_sq - 2 * m * rest_sum + rest_count * m * m
            short = m * low_total - low_target
            if short > 0:
                value += short * short / squares
            best = min(best, value)
        return max(best, 0.0) / n
