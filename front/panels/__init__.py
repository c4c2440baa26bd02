"""Front room: the GPU Configuration page's view models, one module per panel (``cards``,
``table``, ``problems``, ``strip``, ``services``, ``preview``, ``applying``, ``history``),
shaped for the templates from the selectors and the planner. Nothing here writes.

The views read them as ``panels.<name>``; the names below are the page's.
"""

from front.panels.applying import apply_plan, apply_progress
from front.panels.cards import gpu_cards
from front.panels.history import history
from front.panels.preview import current_strategy, preview, strategy_list
from front.panels.problems import problems
from front.panels.services import services_panel
from front.panels.strip import status_strip
from front.panels.table import (
    Choice,
    Row,
    gpu_options,
    plan_choices,
    saved_choices,
    table_state,
)

__all__ = [
    "Choice",
    "Row",
    "apply_plan",
    "apply_progress",
    "current_strategy",
    "gpu_cards",
    "gpu_options",
    "history",
    "plan_choices",
    "preview",
    "problems",
    "saved_choices",
    "services_panel",
    "status_strip",
    "strategy_list",
    "table_state",
]
