"""Detection on a machine with a real NVIDIA GPU: NVML against nvidia-smi, with and without load.

Run from the repository root on a box with the NVIDIA driver:

    GPUCONFIG_EMBEDDED=1 GPUCONFIG_VAR_DIR=/tmp/gpuconfig-check python3 scripts/real_gpu_check.py

It migrates a throw-away SQLite database under ``GPUCONFIG_VAR_DIR``, then prints:

1. what ``nvidia-smi`` itself says (CSV), and what each backend read (NVML and nvidia-smi);
2. whether the two agree on index, UUID, name, total VRAM and compute capability, and how far
   apart their "used" figures are;
3. with PyTorch present, the same read while this process holds 4 GiB on GPU 0: the rise in
   "used" and whether NVML lists this process among the GPU's compute processes; then Measured
   VRAM's attribution of that scan: this process must be an "other" process (no service, no
   container) with its pid, its name from /proc, and 4 GiB more than its CUDA context alone
   held (within 64 MiB);
4. a scan saved to the inventory (``gpu_scan_run``) and the plan each strategy makes for the
   catalog's services on the GPUs found.

It exits non-zero when a backend fails or the two disagree on what they should agree on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
os.environ.setdefault("GPUCONFIG_ENV_FILE", "/dev/null")
os.environ.setdefault("DATABASE_URL", "")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from assignments import planner  # noqa: E402
from assignments.selectors import planning_input  # noqa: E402
from gpus.backends import get_backend  # noqa: E402
from gpus.services import gpu_scan_run, processes_attribute  # noqa: E402

HOLD_MB = 4096
ATTRIBUTION_PROBLEMS: list[str] = []
# Live use moves between two reads; more than this between the backends is a disagreement.
USED_TOLERANCE_MB = 64
FIELDS = ("index", "uuid", "name", "vram_total_mb", "compute_capability")


def _show(label: str, readings) -> None:
    print(f"== {label}: {len(readings)} GPU(s)")
    for r in readings:
        print(
            f"  [{r.index}] {r.name} {r.uuid} total={r.vram_total_mb} MiB used={r.vram_used_mb}"
            f" MiB cc={r.compute_capability} util={r.utilization_percent}%"
            f" temp={r.temperature_c}C power={r.power_w}W bus={r.pci_bus_id}"
            f" processes={list(r.processes)} lost={r.lost}"
        )


def _compare(nvml, smi) -> list[str]:
    problems = []
    if len(nvml) != len(smi):
        problems.append(f"NVML found {len(nvml)} GPU(s), nvidia-smi {len(smi)}")
    for a, b in zip(sorted(nvml, key=lambda r: r.index), sorted(smi, key=lambda r: r.index)):
        for name in FIELDS:
            if getattr(a, name) != getattr(b, name):
                problems.append(
                    f"GPU {a.index}: {name}: NVML {getattr(a, name)!r}"
                    f" != nvidia-smi {getattr(b, name)!r}"
                )
        if a.vram_used_mb is not None and b.vram_used_mb is not None:
            gap = abs(a.vram_used_mb - b.vram_used_mb)
            print(
                f"  GPU {a.index}: used NVML {a.vram_used_mb} MiB, nvidia-smi"
                f" {b.vram_used_mb} MiB (difference {gap} MiB)"
            )
            if gap > USED_TOLERANCE_MB:
                problems.append(f"GPU {a.index}: used differs by {gap} MiB between backends")
    return problems


def _mine(readings) -> tuple[object | None, list]:
    """This process as the attribution sees it on GPU 0, and GPU 0's processes."""
    gpu0 = next(r for r in readings if r.index == 0)
    uses = processes_attribute(readings).get(gpu0.uuid, [])
    return next((u for u in uses if u.pid == os.getpid()), None), uses


def _attribution_problems(context, held) -> list[str]:
    print(f"== Measured VRAM: this process (pid {os.getpid()}) as the attribution saw it")
    print(f"  CUDA context only: {context}")
    print(f"  holding {HOLD_MB} MiB:  {held}")
    if held is None or context is None:
        return ["this process was not among GPU 0's attributed processes"]
    problems = []
    if held.service is not None or held.container_id:
        problems.append(
            f"this process should be 'other', got service={held.service!r} "
            f"container={held.container_id!r}"
        )
    if held.name != Path(f"/proc/{os.getpid()}/comm").read_text().strip():
        problems.append(f"process name {held.name!r} is not this process's comm")
    rise = held.used_mb - context.used_mb
    print(f"  its used_mb rose by {rise} MiB for {HOLD_MB} MiB held")
    if abs(rise - HOLD_MB) > USED_TOLERANCE_MB:
        problems.append(f"attributed use rose by {rise} MiB, not {HOLD_MB} +/- 64 MiB")
    return problems


def _held_scan():
    try:
        import torch
    except ImportError:
        print("== PyTorch not installed: the under-load read is skipped")
        return None
    if not torch.cuda.is_available():
        print("== PyTorch sees no CUDA device: the under-load read is skipped")
        return None
    before = get_backend("nvml").scan()
    # The CUDA context first: its own few hundred MiB are this process's before the block.
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize()
    context, _ = _mine(get_backend("nvml").scan())
    block = torch.empty(HOLD_MB * 2**20, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    try:
        during = get_backend("nvml").scan()
        during_smi = get_backend("nvidia-smi").scan()
        held, uses = _mine(during)
    finally:
        del block
        torch.cuda.empty_cache()
    print(f"  attributed on GPU 0: {uses}")
    ATTRIBUTION_PROBLEMS.extend(_attribution_problems(context, held))
    b0 = next(r for r in before if r.index == 0)
    d0 = next(r for r in during if r.index == 0)
    s0 = next(r for r in during_smi if r.index == 0)
    print(f"== holding {HOLD_MB} MiB on GPU 0 (pid {os.getpid()})")
    print(
        f"  NVML used {b0.vram_used_mb} -> {d0.vram_used_mb} MiB"
        f" (+{d0.vram_used_mb - b0.vram_used_mb}); the nvidia-smi backend says"
        f" {s0.vram_used_mb} MiB"
    )
    print(f"  NVML processes: {list(d0.processes)}; processes_used_mb={d0.processes_used_mb}")
    mine = [mb for pid, mb in d0.processes if pid == os.getpid()]
    print(f"  this process listed by NVML: {bool(mine)} {mine}")
    return d0.vram_used_mb - b0.vram_used_mb


def main() -> int:
    raw = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,"
            "memory.reserved,compute_cap,driver_version",
            "--format=csv",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    print(raw.stdout or raw.stderr)
    nvml = get_backend("nvml").scan()
    smi = get_backend("nvidia-smi").scan()
    _show("NVML", nvml)
    _show("nvidia-smi", smi)
    problems = _compare(nvml, smi)
    rise = _held_scan()
    if rise is not None and rise < HOLD_MB * 0.9:
        problems.append(f"holding {HOLD_MB} MiB raised NVML's used figure by only {rise} MiB")
    problems.extend(ATTRIBUTION_PROBLEMS)

    call_command("migrate", verbosity=0)
    summary = gpu_scan_run(manual=True)
    print(
        f"== saved scan: backend={summary.get('backend')} error={summary.get('error')}"
        f" notes={summary.get('notes')}"
    )
    if summary.get("error"):
        problems.append(f"gpu_scan_run: {summary['error']}")
    data = planning_input()
    print(
        f"  planner sees: {[(g.index, g.name, g.total_mb, g.foreign_used_mb) for g in data.gpus]}"
    )
    for strategy in planner.STRATEGIES:
        plan = planner.plan(strategy, data.gpus, data.services)
        placed = {p.service: p.gpu_index for p in plan.placements}
        print(f"  plan {strategy}: {placed} warnings={plan.warnings}")

    print("== RESULT:", "ok" if not problems else "PROBLEMS")
    for p in problems:
        print("  -", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
