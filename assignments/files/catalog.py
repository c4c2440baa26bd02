"""Generated files room. GPU services of the user's stack that the catalog does not know yet:
offered to the user, with a VRAM estimate they confirm, never added on their own (the stack may
hold GPU services gpuconfig must leave alone)."""

from __future__ import annotations

from dataclasses import dataclass

from assignments.models import AiService
from assignments.planner.types import MB_PER_GB
from assignments.services.config import catalog_service_save
from gpuconfig_site.errors import ApplicationError

from . import model
from .project import stack_current


@dataclass(frozen=True)
class Offer:
    """A GPU service of the stack missing from the catalog; ``vram_gb`` is the estimate to
    confirm (the base file's ``VRAM_BUDGET_GB`` when it sets one, else None: the user says)."""

    name: str
    vram_gb: float | None
    budget_gb: float | None


def catalog_offers() -> list[Offer]:
    """The stack's GPU services the catalog lacks (empty without a readable base file)."""
    try:
        stack = stack_current()
    except model.ComposeInvalid:
        return []
    if stack is None:
        return []
    known = set(AiService.objects.values_list("name", flat=True))
    return [
        Offer(name=s.name, vram_gb=s.budget_gb, budget_gb=s.budget_gb)
        for s in stack.gpu_services.values()
        if s.name not in known
    ]


class OfferInvalid(ApplicationError):
    """The offer cannot be accepted as given; the message says why."""

    code = "offer_invalid"


def catalog_service_add(*, name: str, vram_gb, user=None) -> AiService:
    """Add a GPU service of the stack to the catalog with the VRAM estimate the user confirmed.
    Its budget is adjustable when the base gives it a ``VRAM_BUDGET_GB``. Saved as every
    catalog change is (``catalog_service_save``): re-planned, with a ConfigVersion and the
    generated files, all or nothing."""
    offer = next((o for o in catalog_offers() if o.name == name), None)
    if offer is None:
        raise OfferInvalid(
            f"{name!r} is not a GPU service of the compose stack missing from the catalog."
        )
    try:
        gb = float(vram_gb)
    except (TypeError, ValueError):
        raise OfferInvalid(f"{name}: the VRAM estimate must be a number of GB.") from None
    if not 0 < gb <= 1024:
        raise OfferInvalid(f"{name}: the VRAM estimate must be between 0 and 1024 GB.")
    service = AiService(
        name=name,
        display_name=name,
        description="Added from the compose stack.",
        vram_required_mb=round(gb * MB_PER_GB),
        budget_adjustable=offer.budget_gb is not None,
        default_budget_gb=offer.budget_gb,
        sort_order=AiService.objects.count(),
    )
    catalog_service_save(service=service, user=user)
    return service
