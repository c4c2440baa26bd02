"""Front room. The GPU Configuration page's form: the strategy, and a GPU (plus a VRAM budget where
the service takes one) for every enabled service.

The form only parses what the page sends; the rules of a valid configuration live in
``services.config_save``, whose refusals are attached back to the field their ``extra`` names.
"""

from __future__ import annotations

from collections.abc import Mapping

from django import forms

from assignments import planner
from assignments.planner.checks import gpu_label
from assignments.selectors import PlanningInput
from front.panels import Choice, gpu_options, saved_choices
from gpuconfig_site.errors import ApplicationError
from gpus.units import MB_PER_GB

GPU_PREFIX = "gpu-"
BUDGET_PREFIX = "budget-"


def gpu_field_name(service: str) -> str:
    return f"{GPU_PREFIX}{service}"


def budget_field_name(service: str) -> str:
    return f"{BUDGET_PREFIX}{service}"


class ConfigForm(forms.Form):
    """Strategy plus one GPU choice (and budget) per service; bound to a POST of the page, or
    unbound showing ``choices`` (the saved configuration unless given)."""

    strategy = forms.ChoiceField(
        label="Strategy",
        # Not the default message, which repeats the whole value sent.
        error_messages={"invalid_choice": "Choose one of the strategies listed."},
    )

    def __init__(
        self,
        data=None,
        *,
        planning: PlanningInput,
        strategy: str,
        choices: Mapping[str, Choice] | None = None,
        can_change: bool = True,
    ):
        self.planning = planning
        self.saved = saved_choices(planning)
        shown = {**self.saved, **(choices or {})}
        initial: dict[str, object] = {"strategy": strategy}
        for name, choice in shown.items():
            initial[gpu_field_name(name)] = (
                "" if choice.gpu_index is None else str(choice.gpu_index)
            )
            initial[budget_field_name(name)] = choice.budget_gb
        super().__init__(data, initial=initial)

        self.fields["strategy"].choices = [(s.name, s.label) for s in planner.STRATEGIES.values()]
        options = [
            (str(g.index), f"{gpu_label(g)} · {g.total_mb / MB_PER_GB:.0f} GB")
            for g in gpu_options(planning)
        ]
        for demand in planning.services:
            name = demand.name
            self.fields[gpu_field_name(name)] = self._gpu_field(name, options, shown[name])
            if demand.budget_adjustable:
                self.fields[budget_field_name(name)] = _budget_field(name, demand.default_budget_gb)
            if not can_change:
                self.fields[gpu_field_name(name)].disabled = True
                if demand.budget_adjustable:
                    self.fields[budget_field_name(name)].disabled = True

    def _gpu_field(self, name: str, options: list, shown: Choice) -> forms.Field:
        choices = [("", "Unassigned"), *options]
        present = {g.index for g in gpu_options(self.planning)}
        current = shown.gpu_index
        if current is not None and current not in present:
            # Keep a saved choice visible even when its GPU is gone, so nothing changes
            # silently; saving it is refused with the reason.
            known = {g.index: g for g in self.planning.gpus}
            choices.append(
                (str(current), f"{gpu_label(known.get(current), current)} · not available")
            )
        return forms.TypedChoiceField(
            label=f"GPU for {name}", choices=choices, coerce=int, empty_value=None, required=False
        )

    # -- reading the choices ------------------------------------------------------------------

    def choices(self) -> dict[str, Choice]:
        """The choices as the user left them; a value that does not parse keeps the saved one."""
        if not self.is_bound:
            return {
                d.name: Choice(
                    _as_int(self.initial.get(gpu_field_name(d.name))),
                    self.initial.get(budget_field_name(d.name)),
                )
                for d in self.planning.services
            }
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        out = {}
        for d in self.planning.services:
            saved = self.saved[d.name]
            gpu_key, budget_key = gpu_field_name(d.name), budget_field_name(d.name)
            gpu = cleaned.get(gpu_key, saved.gpu_index)
            budget = (
                cleaned.get(budget_key, saved.budget_gb) if d.budget_adjustable else saved.budget_gb
            )
            out[d.name] = Choice(gpu, budget)
        return out

    def selected_strategy(self, default: str) -> str:
        value = self.data.get("strategy") if self.is_bound else self.initial.get("strategy")
        return value if value in planner.STRATEGIES else default

    def assignments(self) -> list[dict]:
        """The choices in ``config_save``'s shape (call after ``is_valid()``); a service whose
        fields the POST lacks has no ``gpu_index`` (or budget) key."""
        out = []
        for d in self.planning.services:
            gpu_key, budget_key = gpu_field_name(d.name), budget_field_name(d.name)
            item: dict[str, object] = {"service": d.name}
            # A field the POST lacks is left out, not read as "unassigned": the save then
            # refuses it as the API refuses an assignment without gpu_index.
            if gpu_key in self.data:
                item["gpu_index"] = self.cleaned_data.get(gpu_key)
            if d.budget_adjustable and budget_key in self.data:
                item["vram_budget_override"] = self.cleaned_data.get(budget_key)
            out.append(item)
        return out

    def add_application_error(self, error: ApplicationError) -> None:
        """Attach a refusal of ``config_save`` to the field its ``extra`` names, else to the
        form."""
        field = "strategy" if error.field == "strategy" else None
        if error.service is not None:
            budget_key = budget_field_name(error.service)
            gpu_key = gpu_field_name(error.service)
            if error.field == "vram_budget_override" and budget_key in self.fields:
                field = budget_key
            elif gpu_key in self.fields:
                field = gpu_key
        self.add_error(field, error.message)


def _budget_field(name: str, default: float | None) -> forms.FloatField:
    return forms.FloatField(
        label=f"VRAM budget for {name} (GB)",
        required=False,
        localize=False,
        widget=forms.NumberInput(
            attrs={
                "step": "0.1",
                "min": "0.1",
                "inputmode": "decimal",
                "placeholder": f"{default:g}" if default is not None else "",
                "class": "budget-input",
            }
        ),
        help_text=f"Empty: the default of {default:g} GB." if default is not None else "",
    )


def _as_int(value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
