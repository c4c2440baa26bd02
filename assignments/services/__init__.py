"""Writes of the assignments app, one module per concern.

- ``config``: validate a change, save it with a ConfigVersion, write the generated files;
- ``inventory``: follow the GPU inventory (initial plan, fallback, restore);
- ``apply``: starting an apply (one at a time), recovery waits, carrying it out, recovery.

The names below are the public ones; import them from here.
"""

from assignments.selectors import apply_status, apply_targets, config_entries, services_live
from assignments.services.apply import (
    APPLY_QUEUE_TTL,
    RECOVERY_LOCK_KEY,
    ApplyBusy,
    apply_recover,
    apply_repair_pending,
    apply_start,
    config_apply,
    worker_identity,
)
from assignments.services.config import (
    MAX_BUDGET_GB,
    ConfigInvalid,
    FilesUnwritable,
    SaveResult,
    actor_name,
    catalog_service_save,
    config_files_sync,
    config_files_write,
    config_save,
    config_validate,
    config_version_record,
)
from assignments.services.inventory import (
    assignments_follow_inventory,
    inventory_changed_receiver,
)
from gpuconfig_site.errors import ApplicationError

__all__ = [
    "RECOVERY_LOCK_KEY",
    "APPLY_QUEUE_TTL",
    "MAX_BUDGET_GB",
    "ApplicationError",
    "ApplyBusy",
    "ConfigInvalid",
    "FilesUnwritable",
    "SaveResult",
    "actor_name",
    "apply_recover",
    "apply_repair_pending",
    "apply_start",
    "apply_status",
    "apply_targets",
    "assignments_follow_inventory",
    "catalog_service_save",
    "config_apply",
    "config_entries",
    "config_files_sync",
    "config_files_write",
    "config_save",
    "config_validate",
    "config_version_record",
    "inventory_changed_receiver",
    "services_live",
    "worker_identity",
]
