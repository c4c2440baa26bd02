"""Assignments room, writes, one module per concern (the apply's are in ``applies.services``).

- ``config``: validate a change, save it with a ConfigVersion, write the generated files;
- ``inventory``: follow the GPU inventory (initial plan, fallback, restore);

The names below are the public ones; import them from here.
"""

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
    config_strategy_recorded,
    config_validate,
    config_version_record,
)
from assignments.services.inventory import (
    assignments_follow_inventory,
    inventory_changed_receiver,
)
from gpuconfig_site.errors import ApplicationError

__all__ = [
    "MAX_BUDGET_GB",
    "ApplicationError",
    "ConfigInvalid",
    "FilesUnwritable",
    "SaveResult",
    "actor_name",
    "assignments_follow_inventory",
    "catalog_service_save",
    "config_files_sync",
    "config_files_write",
    "config_save",
    "config_strategy_recorded",
    "config_validate",
    "config_version_record",
    "inventory_changed_receiver",
]
