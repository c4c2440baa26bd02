"""A service's VRAM need: the catalog's estimate, or what it was measured to use.

Plain Python like the rest of the planner: the figures come in, the need and its source go out.
"""

from __future__ import annotations

import math

CATALOG = "catalog"
MEASURED = "measured"
NEEDS = (MEASURED, CATALOG)


def measured_need_mb(
    *,
    catalog_mb: int,
    minimum_mb: int,
    p95_mb: int | None,
    samples: int,
    min_samples: int,
    margin: float,
) -> tuple[int, str]:
    """(need in MB, ``measured`` or ``catalog``).

    Once ``samples`` reaches ``min_samples``, the need is the measured 95th percentile plus
    ``margin`` (0.10 is 10 %), never below ``minimum_mb``; before that it is the catalog's.
    """
    if p95_mb is None or samples < max(min_samples, 1):
        return catalog_mb, CATALOG
    return max(minimum_mb, math.ceil(p95_mb * (1 + max(margin, 0.0)))), MEASURED
