"""Assignments room. History the user can undo: the difference between two versions, going back to
one, and a configuration carried to another box as YAML (export, import with a preview).

A rollback or an import is a save like any other: validated first, recorded as a new version,
the generated files rewritten, all or nothing. Applying it stays a separate step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from django.db import transaction
from django.utils import timezone

from assignments.models import ConfigVersion, GpuConfig
from assignments.selectors import planning_input, rule_entries
from assignments.services.config import ConfigInvalid, SaveResult, config_save, config_validate
from assignments.services.rules import rules_replace, rules_validate
from gpus.models import Gpu

EXPORT_FORMAT = 1
"""The ``gpuconfig`` version key of an exported file; an import refuses any other."""


class VersionNotFound(ConfigInvalid):
    """No version has that id (a 404)."""

    code = "version_not_found"


def _state(entry: dict | None) -> dict | None:
    if entry is None:
        return None
    return {
        "gpu_index": entry.get("gpu_index"),
        "vram_budget_override": entry.get("vram_budget_override"),
    }


def assignments_diff(before: list[dict], after: list[dict]) -> list[dict]:
    """Per service whose GPU or budget differs: ``{service, before, after}``, each side
    ``{gpu_index, vram_budget_override}`` (None where the service is not in that side). In the
    order of ``before``, then services only ``after`` has."""
    old = {e["service"]: e for e in before}
    new = {e["service"]: e for e in after}
    names = list(old) + [name for name in new if name not in old]
    changes = []
    for name in names:
        a, b = _state(old.get(name)), _state(new.get(name))
        if a != b:
            changes.append({"service": name, "before": a, "after": b})
    return changes


def version_get(*, version_id: int) -> ConfigVersion:
    try:
        return ConfigVersion.objects.get(pk=version_id)
    except ConfigVersion.DoesNotExist:
        raise VersionNotFound(f"There is no configuration version {version_id}.") from None


def version_diff(*, a: int, b: int) -> dict:
    """What changed from version ``a`` to version ``b``."""
    first, second = version_get(version_id=a), version_get(version_id=b)
    return {
        "from_version": first.pk,
        "to_version": second.pk,
        "changes": assignments_diff(first.assignments, second.assignments),
    }


def _current_entries() -> list[dict]:
    data = planning_input()
    return [
        {"service": d.name, "gpu_index": d.current_gpu, "vram_budget_override": d.budget_gb}
        for d in data.services
    ]


@dataclass
class Prepared:
    """A configuration to save (a version's, an imported file's), checked against this box:
    the assignments with GPU indices of this box, what it would change, and what was matched
    or left out."""

    strategy: str
    assignments: list[dict]
    changes: list[dict]
    gpu_matches: list[dict] = field(default_factory=list)
    rules: list[dict] | None = None
    skipped: list[str] = field(default_factory=list)


def version_restore_prepare(version: ConfigVersion) -> Prepared:
    """What a rollback to ``version`` would save and change (nothing is saved)."""
    catalog = set(planning_input().catalog)
    present = {g.uuid: g for g in Gpu.objects.filter(available=True)}
    assignments, skipped = [], []
    for entry in version.assignments:
        name = entry.get("service")
        if name not in catalog:
            skipped.append(name)
            continue
        uuid = entry.get("gpu_uuid") or ""
        index = entry.get("gpu_index")
        if uuid:
            gpu = present.get(uuid)
            if gpu is None:
                raise ConfigInvalid(
                    f"{name}: the GPU it had in version {version.pk} ({uuid}) is not present "
                    "now; nothing was restored.",
                    code="gpu_unavailable",
                    service=name,
                )
            index = gpu.index
        assignments.append(
            {
                "service": name,
                "gpu_index": index,
                "vram_budget_override": entry.get("vram_budget_override"),
            }
        )
    config_validate(strategy=version.strategy, assignments=assignments)
    return Prepared(
        strategy=version.strategy,
        assignments=assignments,
        changes=assignments_diff(_current_entries(), assignments),
        skipped=skipped,
    )


def version_restore(*, version_id: int, user=None) -> tuple[SaveResult, Prepared]:
    """Make version ``version_id``'s assignments (GPUs found by UUID) and strategy the saved
    configuration again, as a new version. Services no longer in the catalog are skipped (and
    named); a GPU that is gone refuses the rollback, and nothing changes."""
    prepared = version_restore_prepare(version_get(version_id=version_id))
    result = config_save(
        strategy=prepared.strategy,
        assignments=prepared.assignments,
        user=user,
        source=ConfigVersion.Source.ROLLBACK,
    )
    return result, prepared


# --- export and import -----------------------------------------------------------------------


def config_export() -> str:
    """The saved configuration as YAML: strategy, the GPUs it refers to (so another box can
    match them), each service's GPU and budget, and the rules."""
    data = planning_input()
    gpus = Gpu.objects.order_by("index")
    document = {
        "gpuconfig": EXPORT_FORMAT,
        "exported_at": timezone.now().isoformat(timespec="seconds"),
        "strategy": GpuConfig.load().strategy,
        "gpus": [
            {"index": g.index, "uuid": g.uuid, "name": g.name, "vram_total_mb": g.vram_total_mb}
            for g in gpus
            if g.available
        ],
        "assignments": [
            {
                "service": d.name,
                "gpu_index": d.current_gpu,
                "gpu_uuid": data.assignments[d.name].effective_gpu_uuid or None
                if d.name in data.assignments
                else None,
                "vram_budget_override": d.budget_gb,
            }
            for d in data.services
        ],
        "rules": rule_entries(),
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _not_a_configuration(why: str) -> ConfigInvalid:
    return ConfigInvalid(
        f"This is not a gpuconfig configuration: {why}. Export one with GET "
        "/api/system/gpu-config/export.",
        code="import_invalid",
    )


def _parse(text: str) -> dict:
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _not_a_configuration(f"the YAML does not parse ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise _not_a_configuration("the file must be a mapping with gpuconfig, assignments")
    if document.get("gpuconfig") != EXPORT_FORMAT:
        raise _not_a_configuration(f"the key gpuconfig must be {EXPORT_FORMAT}")
    for key, kind in (("assignments", list), ("gpus", list), ("rules", list)):
        if key in document and not isinstance(document[key], kind):
            raise _not_a_configuration(f"{key} must be a list")
    if "assignments" not in document:
        raise _not_a_configuration("it has no assignments")
    return document


class _GpuMatcher:
    """The file's GPUs matched to this box's: by UUID, then by name and size (each GPU of
    this box matched once, lowest index first)."""

    def __init__(self, described: list) -> None:
        self.local = list(Gpu.objects.filter(available=True).order_by("index"))
        self.by_uuid: dict[str, Gpu] = {}
        self.matches: list[dict] = []
        self.unknown: list[str] = []
        taken: set[str] = set()
        entries = [g for g in described if isinstance(g, dict)]
        for entry in sorted(entries, key=lambda g: not self._same_uuid(g)):
            uuid = str(entry.get("uuid") or "")
            match, how = None, ""
            if self._same_uuid(entry) and uuid not in taken:
                match, how = next(g for g in self.local if g.uuid == uuid), "uuid"
            else:
                match = next(
                    (
                        g
                        for g in self.local
                        if g.uuid not in taken
                        and g.name == entry.get("name")
                        and g.vram_total_mb == entry.get("vram_total_mb")
                    ),
                    None,
                )
                how = "name_and_size"
            label = f"{entry.get('name') or '?'} ({uuid or 'no UUID'})"
            if match is None:
                self.unknown.append(label)
                continue
            taken.add(match.uuid)
            self.by_uuid[uuid] = match
            if entry.get("index") is not None:
                self.by_uuid.setdefault(f"index:{entry.get('index')}", match)
            self.matches.append(
                {"from_uuid": uuid, "to_uuid": match.uuid, "to_index": match.index, "by": how}
            )

    def _same_uuid(self, entry: dict) -> bool:
        return any(g.uuid == entry.get("uuid") for g in self.local)

    def find(self, uuid, index) -> Gpu | None:
        if uuid and uuid in self.by_uuid:
            return self.by_uuid[uuid]
        if uuid:
            return next((g for g in self.local if g.uuid == uuid), None)
        return self.by_uuid.get(f"index:{index}")


def _import_assignments(document: dict, matcher: _GpuMatcher, catalog) -> list[dict]:
    out, problems = [], []
    for position, entry in enumerate(document["assignments"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("service"), str):
            raise _not_a_configuration(f"assignments[{position}] has no service")
        name = entry["service"]
        if name not in catalog:
            problems.append(f"unknown service {name!r}")
            continue
        index = entry.get("gpu_index")
        uuid = str(entry["gpu_uuid"]) if entry.get("gpu_uuid") else None
        gpu = None
        if uuid or index is not None:
            gpu = matcher.find(uuid, index)
            if gpu is None:
                problems.append(f"{name}: no GPU here matches {uuid or f'GPU {index}'}")
                continue
        out.append(
            {
                "service": name,
                "gpu_index": gpu.index if gpu else None,
                "vram_budget_override": entry.get("vram_budget_override"),
            }
        )
    if matcher.unknown:
        problems.insert(0, f"unknown GPU(s): {', '.join(matcher.unknown)}")
    if problems:
        raise ConfigInvalid(
            f"The configuration does not fit this box: {'; '.join(problems)}. Nothing was changed.",
            code="import_mismatch",
        )
    return out


def _import_rules(document: dict, matcher: _GpuMatcher) -> list[dict] | None:
    if "rules" not in document:
        return None
    rules = []
    for entry in document["rules"] or []:
        pin = entry.get("pin_gpu_uuid") if isinstance(entry, dict) else None
        if pin and isinstance(pin, str):
            gpu = matcher.find(entry["pin_gpu_uuid"], None)
            if gpu is None:
                raise ConfigInvalid(
                    f"{entry.get('service')}: it is pinned to GPU {entry['pin_gpu_uuid']}, which "
                    "this box does not have. Nothing was changed.",
                    code="import_mismatch",
                )
            entry = {**entry, "pin_gpu_uuid": gpu.uuid}
        rules.append(entry)
    rules_validate(rules)
    return rules


def config_import_prepare(text: str) -> Prepared:
    """Check a YAML configuration against this box without changing anything; raises
    ConfigInvalid (a 400) naming every unknown service and GPU, or why it is not a
    configuration."""
    document = _parse(text)
    matcher = _GpuMatcher(document.get("gpus") or [])
    catalog = planning_input().catalog
    assignments = _import_assignments(document, matcher, catalog)
    strategy = document.get("strategy") or GpuConfig.load().strategy
    config_validate(strategy=strategy, assignments=assignments)
    rules = _import_rules(document, matcher)
    return Prepared(
        strategy=strategy,
        assignments=assignments,
        changes=assignments_diff(_current_entries(), assignments),
        gpu_matches=matcher.matches,
        rules=rules,
    )


def config_import(*, text: str, user=None) -> tuple[SaveResult, Prepared]:
    """Import a YAML configuration: checked first (see :func:`config_import_prepare`), then
    its rules and assignments saved together as a new version, all or nothing."""
    prepared = config_import_prepare(text)
    with transaction.atomic():
        if prepared.rules is not None:
            rules_replace(rules=prepared.rules)
        result = config_save(
            strategy=prepared.strategy,
            assignments=prepared.assignments,
            user=user,
            source=ConfigVersion.Source.IMPORT,
        )
    return result, prepared
