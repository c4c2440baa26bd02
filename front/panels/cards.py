"""Front room, the GPU Configuration page's view model: GPU cards: each GPU's memory, utilisation
and temperature with sparklines (cached).
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gpus.models import Gpu, GpuProcess, GpuSample
from gpus.selectors import (
    INVENTORY_READ_TTL,
    NO_GPUS_DETAIL,
    TROUBLESHOOTING,
    gpu_list,
    gpu_samples,
    inventory_read_cached,
    last_scan,
)

SPARK_WIDTH = 120
SPARK_HEIGHT = 28

# --- GPU cards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sparkline:
    """Two polylines (utilisation and VRAM, in %) in a ``SPARK_WIDTH`` × ``SPARK_HEIGHT`` box."""

    util_points: str
    vram_points: str
    count: int
    width: int = SPARK_WIDTH
    height: int = SPARK_HEIGHT

    @property
    def mid(self) -> float:
        """The y of the 50 % grid line."""
        return _y(50)

    @property
    def bottom(self) -> float:
        return _y(0)


@dataclass(frozen=True)
class GpuCard:
    """One GPU as its card shows it."""

    gpu: Gpu
    total_gb: float | None
    used_percent: int
    sparkline: Sparkline | None
    # Processes of the last scan that belong to no managed service, largest first.
    others: tuple[GpuProcess, ...] = ()


def _points(values: Sequence[float | None]) -> str:
    """SVG polyline points for percentages (0–100) spread over the sparkline's width."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if not known:
        return ""
    if len(values) == 1:
        # One reading: a flat line, so a fresh inventory still shows its level.
        value = known[0][1]
        y = _y(value)
        return f"0,{y} {SPARK_WIDTH},{y}"
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(f"{round(i * step, 1)},{_y(v)}" for i, v in known)


def _y(percent: float) -> float:
    percent = min(max(percent, 0.0), 100.0)
    # 1 px margin top and bottom so the stroke is never clipped.
    return round(1 + (100 - percent) / 100 * (SPARK_HEIGHT - 2), 1)


def sparkline(gpu: Gpu, samples: Sequence[GpuSample]) -> Sparkline | None:
    if not samples:
        return None
    total = gpu.vram_total_mb or 0
    util = [s.utilization_percent for s in samples]
    vram = [
        (s.vram_used_mb / total * 100) if total and s.vram_used_mb is not None else None
        for s in samples
    ]
    return Sparkline(util_points=_points(util), vram_points=_points(vram), count=len(samples))


def gpu_cards() -> dict:
    """The GPU cards: present GPUs first, then lost ones greyed, each with its sparkline. Kept
    in the cache until the inventory changes or the oldest sample shown leaves the window."""
    return inventory_read_cached("cards", _gpu_cards, ttl=_cards_ttl)


def _cards_ttl(cards: dict) -> float:
    oldest = cards["oldest_sample_at"]
    if oldest is None:
        return INVENTORY_READ_TTL
    window_end = oldest + timedelta(seconds=settings.GPUCONFIG_SAMPLE_RETENTION)
    return (window_end - timezone.now()).total_seconds()


def _gpu_cards() -> dict:
    gpus = list(gpu_list())
    samples = gpu_samples(gpu_ids=[g.pk for g in gpus])
    cards = [
        GpuCard(
            gpu=g,
            total_gb=g.vram_total_gb,
            used_percent=round(g.vram_used_fraction * 100),
            sparkline=sparkline(g, samples.get(g.pk, [])),
            others=tuple(
                sorted(
                    (p for p in g.processes.all() if not p.service),
                    key=lambda p: (-p.used_mb, p.pid),
                )
            ),
        )
        for g in gpus
    ]
    scan = last_scan() or {}
    return {
        "cards": cards,
        "no_gpus": not any(g.available for g in gpus),
        "no_gpus_detail": NO_GPUS_DETAIL,
        "troubleshooting": TROUBLESHOOTING,
        "last_scan_at": parse_datetime(scan["finished_at"]) if scan.get("finished_at") else None,
        "last_scan_backend": scan.get("backend"),
        "last_scan_error": scan.get("error"),
        "oldest_sample_at": min(
            (shown[0].taken_at for shown in samples.values() if shown), default=None
        ),
    }
