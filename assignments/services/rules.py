"""Assignments room. Writes of the user's rules: validate a whole new set, then replace the old one.

Rules do not move any service by themselves: the next plan (a preview, a strategy's save)
honours them, and the saved configuration is warned about where it breaks one.
"""

from __future__ import annotations

from django.db import transaction

from assignments.models import AiService, ServiceRule
from assignments.services.config import ConfigInvalid
from gpus.models import Gpu

RULE_KEYS = ("service", "pin_gpu_uuid", "exclusive", "never_with", "priority")
MAX_PRIORITY = 1000


def _refuse(message: str, *, service: str | None = None, field: str | None = None):
    return ConfigInvalid(message, code="rule_invalid", service=service, field=field)


def _clean_rule(position: int, item, catalog: dict[str, AiService], uuids: set[str]) -> dict:
    """One entry of ``rules``, checked; returns its cleaned values."""
    if not isinstance(item, dict):
        raise _refuse(f"rules[{position}] must be an object.", field="rules")
    unknown = set(item) - set(RULE_KEYS)
    if unknown:
        raise _refuse(f"rules[{position}]: unknown field(s) {', '.join(sorted(unknown))}.")
    name = item.get("service")
    if not isinstance(name, str) or not name:
        raise _refuse(f"rules[{position}]: service is required.", field="service")
    if name not in catalog:
        raise _refuse(f"Unknown service {name!r}; known: {', '.join(catalog)}.", field="service")
    pin = _clean_pin(name, item.get("pin_gpu_uuid") or "", uuids)
    exclusive = item.get("exclusive", False)
    if not isinstance(exclusive, bool):
        raise _refuse(f"{name}: exclusive must be true or false.", service=name)
    never_with = _clean_never_with(name, item.get("never_with") or [], catalog)
    priority = _clean_priority(name, item.get("priority", 0))
    return {
        "service": name,
        "pin_gpu_uuid": pin,
        "exclusive": exclusive,
        "never_with": sorted(set(never_with)),
        "priority": priority,
    }


def _clean_pin(name: str, pin, uuids: set[str]) -> str:
    if not isinstance(pin, str):
        raise _refuse(f"{name}: pin_gpu_uuid must be a GPU UUID or null.", service=name)
    if pin and pin not in uuids:
        known = ", ".join(sorted(uuids)) or "none"
        raise _refuse(
            f"{name}: there is no GPU with UUID {pin!r} to pin to (known: {known}).",
            service=name,
            field="pin_gpu_uuid",
        )
    return pin


def _clean_never_with(name: str, never_with, catalog) -> list[str]:
    if not isinstance(never_with, list) or not all(isinstance(n, str) for n in never_with):
        raise _refuse(f"{name}: never_with must be a list of service names.", service=name)
    for other in never_with:
        if other == name:
            raise _refuse(f"{name}: a service cannot be kept apart from itself.", service=name)
        if other not in catalog:
            raise _refuse(
                f"{name}: never_with names an unknown service {other!r}.",
                service=name,
                field="never_with",
            )
    return never_with


def _clean_priority(name: str, priority) -> int:
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _refuse(f"{name}: priority must be a whole number.", service=name)
    if not 0 <= priority <= MAX_PRIORITY:
        raise _refuse(
            f"{name}: priority must be between 0 and {MAX_PRIORITY}, got {priority}.",
            service=name,
            field="priority",
        )
    return priority


def rules_validate(rules) -> list[dict]:
    """Check a whole set of rules; raises ConfigInvalid (a 400) naming the first problem."""
    if not isinstance(rules, list):
        raise _refuse(
            "rules must be a list of {service, pin_gpu_uuid, exclusive, never_with, priority}.",
            field="rules",
        )
    catalog = {s.name: s for s in AiService.objects.all()}
    uuids = set(Gpu.objects.values_list("uuid", flat=True))
    cleaned: dict[str, dict] = {}
    for position, item in enumerate(rules):
        rule = _clean_rule(position, item, catalog, uuids)
        if rule["service"] in cleaned:
            raise _refuse(f"Service {rule['service']!r} has two rules.", service=rule["service"])
        cleaned[rule["service"]] = rule
    return list(cleaned.values())


def rules_replace(*, rules: list[dict]) -> list[dict]:
    """Replace every rule with ``rules`` (validated first, all or nothing). A service left out,
    or given a rule that asks nothing, has no rule afterwards."""
    cleaned = rules_validate(rules)
    catalog = {s.name: s for s in AiService.objects.all()}
    with transaction.atomic():
        ServiceRule.objects.all().delete()
        for rule in cleaned:
            if not (
                rule["pin_gpu_uuid"] or rule["exclusive"] or rule["never_with"] or rule["priority"]
            ):
                continue
            row = ServiceRule.objects.create(
                service=catalog[rule["service"]],
                pin_gpu_uuid=rule["pin_gpu_uuid"],
                exclusive=rule["exclusive"],
                priority=rule["priority"],
            )
            row.never_with.set([catalog[name] for name in rule["never_with"]])
    return cleaned


def rule_save(*, rule: dict) -> ServiceRule:
    """Set one service's rule (validated as in :func:`rules_validate`), leaving the others."""
    (cleaned,) = rules_validate([rule])
    service = AiService.objects.get(name=cleaned["service"])
    with transaction.atomic():
        row, _ = ServiceRule.objects.update_or_create(
            service=service,
            defaults={
                "pin_gpu_uuid": cleaned["pin_gpu_uuid"],
                "exclusive": cleaned["exclusive"],
                "priority": cleaned["priority"],
            },
        )
        row.never_with.set(AiService.objects.filter(name__in=cleaned["never_with"]))
    return row
