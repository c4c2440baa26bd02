"""Front room, the GPU Configuration page's view model: the history panel: saved versions and apply
runs.
Nothing here writes.
"""

from __future__ import annotations

from applies.models import ApplyRun
from applies.selectors import apply_run_list
from assignments.models import ConfigVersion
from assignments.selectors import (
    version_list,
)


def history(*, limit: int = 10) -> dict:
    versions: list[ConfigVersion] = list(version_list(limit=limit))
    runs: list[ApplyRun] = list(apply_run_list(limit=limit))
    return {"versions": versions, "runs": runs}
