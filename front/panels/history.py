"""Front room, the GPU Configuration page's view model: the history panel: saved versions and apply
runs.
Nothing here writes.
"""

from __future__ import annotations

from applies.models import ApplyRun
from applies.run_reads import runs_read_cached
from applies.selectors import apply_run_list
from assignments.models import ConfigVersion
from assignments.selectors import (
    config_state_cached,
    version_list,
)


def history(*, limit: int = 10) -> dict:
    """The latest saved versions and apply runs, kept in the cache while neither changed
    (versions under the configuration's state, runs under the runs state)."""
    versions: list[ConfigVersion] = config_state_cached(
        f"history-versions:{limit}", lambda: list(version_list(limit=limit))
    )
    runs: list[ApplyRun] = runs_read_cached(
        f"history-runs:{limit}",
        lambda: list(apply_run_list(limit=limit).defer("log", "journal")),
    )
    return {"versions": versions, "runs": runs}
