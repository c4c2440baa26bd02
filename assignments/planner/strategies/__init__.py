"""One module per strategy. Importing this package registers them.

The import order is the registration order, which is the order users see the strategies in.
"""

from . import manual, vram_based, latency_optimized, isolation_first, balanced  # noqa: F401, I001
