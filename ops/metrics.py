"""Ops room. ``/metrics``: gpuconfig's state in the Prometheus text format.

Built on ``prometheus_client`` with a custom collector that reads the database and the cache at
scrape time. gpuconfig's numbers are facts kept in the database (the inventory, the plan, the
apply history), not events counted in one process, so every gunicorn worker answers a scrape
with the same values and no multiprocess directory is needed. (``django-prometheus`` counts
requests and queries per process: useful elsewhere, but it needs that multiprocess setup under
gunicorn and none of these values would come from it.)
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from applies import progress
from applies.models import ApplyRun
from assignments.selectors import config_issues, planning_input
from gpus.selectors import gpu_list, last_scan

MB = 1024 * 1024
GPU_LABELS = ["uuid", "index", "name"]
APPLY_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)


def _gpu_metrics():

    families = {
        "memory_used": GaugeMetricFamily(
            "gpuconfig_gpu_memory_used_bytes", "VRAM in use on the GPU", labels=GPU_LABELS
        ),
        "memory_total": GaugeMetricFamily(
            "gpuconfig_gpu_memory_total_bytes", "VRAM of the GPU", labels=GPU_LABELS
        ),
        "utilization": GaugeMetricFamily(
            "gpuconfig_gpu_utilization_percent", "GPU utilisation (0-100)", labels=GPU_LABELS
        ),
        "temperature": GaugeMetricFamily(
            "gpuconfig_gpu_temperature_celsius", "GPU temperature", labels=GPU_LABELS
        ),
        "power": GaugeMetricFamily(
            "gpuconfig_gpu_power_watts", "GPU power draw", labels=GPU_LABELS
        ),
        "available": GaugeMetricFamily(
            "gpuconfig_gpu_available", "1 when the last scan saw the GPU", labels=GPU_LABELS
        ),
    }
    service_used = GaugeMetricFamily(
        "gpuconfig_service_vram_used_bytes",
        "VRAM the processes of a managed service held on a GPU at the last scan",
        labels=["service", "gpu_uuid"],
    )
    lost = 0
    for gpu in gpu_list():
        labels = [gpu.uuid, str(gpu.index), gpu.name]
        families["available"].add_metric(labels, 1.0 if gpu.available else 0.0)
        if not gpu.available:
            lost += 1
            continue
        per_service: Counter[str] = Counter()
        for process in gpu.processes.all():
            if process.service:
                per_service[process.service] += process.used_mb
        for service, used in sorted(per_service.items()):
            service_used.add_metric([service, gpu.uuid], float(used) * MB)
        for key, value, scale in (
            ("memory_used", gpu.vram_used_mb, MB),
            ("memory_total", gpu.vram_total_mb, MB),
            ("utilization", gpu.utilization_percent, 1),
            ("temperature", gpu.temperature_c, 1),
            ("power", gpu.power_w, 1),
        ):
            if value is not None:
                families[key].add_metric(labels, float(value) * scale)
    yield from families.values()
    yield service_used
    yield GaugeMetricFamily("gpuconfig_gpus_lost", "GPUs known but missing from scans", value=lost)


def _plan_metrics():

    data = planning_input()
    assigned = GaugeMetricFamily(
        "gpuconfig_service_assigned_gpu",
        "GPU index each AI service is assigned to (-1: none)",
        labels=["service"],
    )
    planned = GaugeMetricFamily(
        "gpuconfig_service_planned_memory_bytes",
        "VRAM planned for each AI service (its budget when one is set)",
        labels=["service"],
    )
    for demand in data.services:
        gpu = demand.current_gpu
        assigned.add_metric([demand.name], float(-1 if gpu is None else gpu))
        planned.add_metric([demand.name], float(demand.effective_mb * MB))
    yield assigned
    yield planned
    warnings = GaugeMetricFamily(
        "gpuconfig_plan_warnings", "Warnings of the saved plan, by code", labels=["code"]
    )
    for code, count in sorted(Counter(i.code for i in config_issues(data)).items()):
        warnings.add_metric([code], float(count))
    yield warnings


def _apply_metrics():

    runs = ApplyRun.objects.order_by("created_at", "pk")
    by_status = Counter(runs.values_list("status", flat=True))
    total = CounterMetricFamily(
        "gpuconfig_apply_runs", "Apply runs, by outcome", labels=["outcome"]
    )
    for status in ApplyRun.Status.values:
        total.add_metric([status], float(by_status.get(status, 0)))
    yield total

    durations = []
    rollbacks = 0
    for started, finished, results in runs.values_list("started_at", "finished_at", "results"):
        if started and finished:
            durations.append((finished - started).total_seconds())
        rollbacks += sum(1 for r in (results or {}).values() if r.get("outcome") == "rolled_back")
    buckets = [(str(b), float(sum(1 for d in durations if d <= b))) for b in APPLY_BUCKETS]
    buckets.append(("+Inf", float(len(durations))))
    yield HistogramMetricFamily(
        "gpuconfig_apply_duration_seconds",
        "Duration of finished apply runs",
        buckets=buckets,
        sum_value=sum(durations),
    )
    yield CounterMetricFamily(
        "gpuconfig_apply_rollbacks", "Services rolled back by an apply", value=rollbacks
    )

    last = runs.filter(status__in=ApplyRun.FINISHED).last()
    recreate = GaugeMetricFamily(
        "gpuconfig_last_apply_recreate_seconds",
        "How long each service's recreate took in the last finished apply",
        labels=["service", "outcome"],
    )
    if last is not None:
        for entry in progress.progress_get(str(last.operation_id)):
            if entry["status"] in progress.TERMINAL and entry["status"] != "unchanged":
                recreate.add_metric([entry["service"], entry["status"]], entry["elapsed_s"])
        yield GaugeMetricFamily(
            "gpuconfig_last_apply_timestamp_seconds",
            "When the last finished apply ended",
            value=last.finished_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "gpuconfig_last_apply_duration_seconds",
            "Duration of the last finished apply",
            value=(last.finished_at - (last.started_at or last.finished_at)).total_seconds(),
        )
    yield recreate


def _scan_metrics():

    summary = last_scan() or {}
    if summary.get("finished_at"):
        yield GaugeMetricFamily(
            "gpuconfig_last_scan_timestamp_seconds",
            "When the last GPU scan finished",
            value=datetime.fromisoformat(summary["finished_at"]).timestamp(),
        )
    if summary.get("duration_s") is not None:
        yield GaugeMetricFamily(
            "gpuconfig_scan_duration_seconds",
            "How long the last GPU scan took",
            value=float(summary["duration_s"]),
        )
    yield GaugeMetricFamily(
        "gpuconfig_last_scan_success",
        "1 when the last GPU scan ran without error",
        value=0.0 if summary.get("error") or not summary else 1.0,
    )


class GpuconfigCollector:
    """Collects every gpuconfig metric at scrape time, from the database and the cache."""

    def collect(self):
        yield from _gpu_metrics()
        yield from _plan_metrics()
        yield from _apply_metrics()
        yield from _scan_metrics()


def metrics_render() -> bytes:
    """The current metrics in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuconfigCollector())
    return generate_latest(registry)
