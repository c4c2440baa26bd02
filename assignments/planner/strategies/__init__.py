"""One module per strategy. Importing this package registers them, in the order users see."""

from . import manual, vram_based, latency_optimized, isolation_first, balanced  # noqa: F401
