"""Generated files room, leaf module: ``FileEntry`` (one service's line in the generated files)
and ``device_id``. It imports nothing of the project, so the readers, renderers and writers of
the generated files can all import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileEntry:
    """One service's line in the generated files."""

    service: str
    gpu_index: int | None
    gpu_uuid: str
    gpu_name: str
    budget_gb: float | None
    budget_adjustable: bool
    fallback_reason: str = ""
    budget_saved: bool = False  # a budget override is saved (else budget_gb is the default)


def device_id(entry: FileEntry, id_format: str) -> str:
    if id_format == "uuid" and entry.gpu_uuid:
        return entry.gpu_uuid
    return str(entry.gpu_index)
