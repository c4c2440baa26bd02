"""The one registry of planning strategies.

Each strategy lives in its own module under ``strategies/`` and registers itself with
:func:`register`; the order of registration is the order users see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .types import GpuView, Issue, ServiceDemand

BUDGET_NOTE = "Lowers an adjustable VRAM budget when that makes the plan fit."
"""What every automatic strategy's description ends with (see :mod:`.budgets`)."""


class UnknownStrategy(ValueError):
    """Raised for a strategy name that is not registered."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a strategy function returns.

    ``gpu_indices`` holds one GPU index (or None) per service, in the order the services were
    given. ``issues`` are warnings only the strategy itself can know about (for example that
    isolation was impossible); capacity warnings are added by :func:`~.checks.check`.
    """

    gpu_indices: tuple[int | None, ...]
    issues: tuple[Issue, ...] = ()


StrategyFunc = Callable[[Sequence[GpuView], Sequence[ServiceDemand]], Proposal]


@dataclass(frozen=True, slots=True)
class Strategy:
    """A registered strategy: its stable ``name``, what users see, and the function.

    An ``automatic`` strategy decides placements itself; the planner then also lowers adjustable
    VRAM budgets where that makes its plan fit (see :mod:`.budgets`).
    """

    name: str
    label: str
    description: str
    func: StrategyFunc
    automatic: bool = True


STRATEGIES: dict[str, Strategy] = {}


def register(
    name: str, *, label: str, description: str, automatic: bool = True
) -> Callable[[StrategyFunc], StrategyFunc]:
    """Register the decorated function as the strategy ``name``."""

    def decorator(func: StrategyFunc) -> StrategyFunc:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = Strategy(
            name=name, label=label, description=description, func=func, automatic=automatic
        )
        return func

    return decorator


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; :class:`UnknownStrategy` if there is none."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        known = ", ".join(STRATEGIES)
        shown = repr(name)
        if len(shown) > 60:  # name the input, never echo all of it
            shown = f"{shown[:60]}… ({len(shown)} characters)"
        raise UnknownStrategy(f"Unknown strategy {shown}; choose one of: {known}.") from None


def strategy_names() -> list[str]:
    """Registered strategy names, in the order users see them."""
    return list(STRATEGIES)
