"""The planner: which GPU each service should use. Plain Python over dataclasses; no Django,
no settings, no I/O."""

from . import strategies  # noqa: F401  (registers the strategies, in order)
from .budgets import budgets_lowered
from .checks import (
    check,
    fallback_gpu,
    free_mb,
    min_budget_gb,
    overflow_mb,
    overflow_move,
    suggest_budget_gb,
)
from .planning import plan
from .registry import STRATEGIES, Strategy, UnknownStrategy, register, strategy_names
from .rules import rules_check
from .types import GpuView, Issue, Placement, Plan, ServiceDemand, ServiceRule

__all__ = [
    "STRATEGIES",
    "GpuView",
    "Issue",
    "Placement",
    "Plan",
    "ServiceDemand",
    "ServiceRule",
    "Strategy",
    "UnknownStrategy",
    "budgets_lowered",
    "check",
    "fallback_gpu",
    "free_mb",
    "min_budget_gb",
    "overflow_mb",
    "overflow_move",
    "plan",
    "register",
    "rules_check",
    "strategy_names",
    "suggest_budget_gb",
]
