"""Reference hardware and services for the planner tests, as plain dataclasses."""

from __future__ import annotations

from dataclasses import replace

from assignments.planner import GpuView, Placement, ServiceDemand

A5500 = GpuView(index=0, uuid="GPU-a5500", name="NVIDIA RTX A5500", total_mb=24564,
                foreign_used_mb=0, compute_capability=(8, 6))
A400 = GpuView(index=1, uuid="GPU-a400", name="NVIDIA RTX A400", total_mb=4094,
               foreign_used_mb=0, compute_capability=(8, 6))

LLM = ServiceDemand("ai-llm", 22221, latency_critical=True, isolated=True)
YOLO = ServiceDemand("ai-yolo26", 666, latency_critical=True)
FLORENCE = ServiceDemand("ai-florence", 1536)
CLIP = ServiceDemand("ai-clip", 1229)
ENRICHMENT = ServiceDemand("ai-enrichment", 6963, budget_adjustable=True, default_budget_gb=6.8)


def reference_gpus() -> list[GpuView]:
    return [A5500, A400]


def reference_services() -> list[ServiceDemand]:
    return [LLM, YOLO, FLORENCE, CLIP, ENRICHMENT]


def gpu(index: int, total_mb: int, *, foreign: int = 0, cc: tuple[int, int] = (8, 6),
        available: bool = True, name: str | None = None) -> GpuView:
    return GpuView(index=index, uuid=f"GPU-{index}", name=name or f"NVIDIA Test {index}",
                   total_mb=total_mb, foreign_used_mb=foreign, compute_capability=cc,
                   available=available)


def svc(name: str, need_mb: int, **flags) -> ServiceDemand:
    return ServiceDemand(name, need_mb, **flags)


def on(services: list[ServiceDemand], *gpu_indices: int | None) -> list[Placement]:
    """Placements putting ``services[i]`` on ``gpu_indices[i]``."""
    return [Placement(s.name, index, s.budget_gb if s.budget_adjustable else None)
            for s, index in zip(services, gpu_indices, strict=True)]


def where(plan) -> dict[str, int | None]:
    return {p.service: p.gpu_index for p in plan.placements}


def codes(issues) -> list[str]:
    return [issue.code for issue in issues]


__all__ = ["replace"]
