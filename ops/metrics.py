"""Ops room. ``/metrics``: gpuconfig's state in the Prometheus text format.

Built on ``prometheus_client`` with a custom collector that reads the database and the cache at
scrape time. gpuconfig's numbers are facts kept in the database (the inventory, the plan, the
apply history), not events counted in one process, so every gunicorn worker answers a scrape
with the same values and no multiprocess directory is needed. (``django-prometheus`` counts
requests and queries per process: useful elsewhere, but it needs that multiprocess setup under
gunicorn and none of these values would come from it.)

Every per-GPU, per-service, per-apply and per-scan metric carries a ``host`` label: one scrape
of the central site answers for the whole fleet (the GPUs and runs read over ``all_hosts``, the
plan and the last scan of each host under ``host_scope``).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from django.db.models import Max
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from applies import progress
from applies.models import ApplyRun
from assignments.selectors import config_issues, planning_input
from fleet.models import Host
from gpuconfig_site.hosts import default_host_name, host_scope
from gpus.models import Gpu
from gpus.selectors import last_scan

MB = 1024 * 1024
GPU_LABELS = ["host", "uuid", "index", "name"]
APPLY_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)


def host_names() -> list[str]:
    """Every host the metrics speak for: the registered ones, any that holds rows, and the
    default host (a single box that registered none)."""
    names = set(Host.objects.values_list("name", flat=True))
    names.update(Gpu.all_hosts.order_by().values_list("host", flat=True).distinct())
    names.update(ApplyRun.all_hosts.order_by().values_list("host", flat=True).distinct())
    names.add(default_host_name())
    return sorted(names)


def _gpu_metrics(hosts: list[str]):

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
        labels=["host", "service", "gpu_uuid"],
    )
    lost: Counter[str] = Counter()
    gpus = Gpu.all_hosts.prefetch_related("processes").order_by(
        "host", "-available", "index", "uuid"
    )
    for gpu in gpus:
        labels = [gpu.host, gpu.uuid, str(gpu.index), gpu.name]
        families["available"].add_metric(labels, 1.0 if gpu.available else 0.0)
        if not gpu.available:
            lost[gpu.host] += 1
            continue
        per_service: Counter[str] = Counter()
        for process in gpu.processes.all():
            if process.service:
                per_service[process.service] += process.used_mb
        for service, used in sorted(per_service.items()):
            service_used.add_metric([gpu.host, service, gpu.uuid], float(used) * MB)
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
    gpus_lost = GaugeMetricFamily(
        "gpuconfig_gpus_lost", "GPUs known but missing from scans", labels=["host"]
    )
    for host in hosts:
        gpus_lost.add_metric([host], float(lost[host]))
    yield gpus_lost


def _plan_metrics(hosts: list[str]):

    assigned = GaugeMetricFamily(
        "gpuconfig_service_assigned_gpu",
        "GPU index each AI service is assigned to (-1: none)",
        labels=["host", "service"],
    )
    planned = GaugeMetricFamily(
        "gpuconfig_service_planned_memory_bytes",
        "VRAM planned for each AI service (its budget when one is set)",
        labels=["host", "service"],
    )
    warnings = GaugeMetricFamily(
        "gpuconfig_plan_warnings", "Warnings of the saved plan, by code", labels=["host", "code"]
    )
    for host in hosts:
        with host_scope(host):
            data = planning_input()
            issues = config_issues(data)
        for demand in data.services:
            gpu = demand.current_gpu
            assigned.add_metric([host, demand.name], float(-1 if gpu is None else gpu))
            planned.add_metric([host, demand.name], float(demand.effective_mb * MB))
        for code, count in sorted(Counter(i.code for i in issues).items()):
            warnings.add_metric([host, code], float(count))
    yield assigned
    yield planned
    yield warnings


def _apply_metrics(hosts: list[str]):

    rows = ApplyRun.all_hosts.order_by("host", "created_at", "pk").values_list(
        "host", "status", "started_at", "finished_at", "results"
    )
    by_status: dict[str, Counter[str]] = {host: Counter() for host in hosts}
    durations: dict[str, list[float]] = {host: [] for host in hosts}
    rollbacks: Counter[str] = Counter()
    for host, status, started, finished, results in rows:
        by_status.setdefault(host, Counter())[status] += 1
        if started and finished:
            durations.setdefault(host, []).append((finished - started).total_seconds())
        rollbacks[host] += sum(
            1 for r in (results or {}).values() if r.get("outcome") == "rolled_back"
        )
    total = CounterMetricFamily(
        "gpuconfig_apply_runs", "Apply runs, by outcome", labels=["host", "outcome"]
    )
    duration = HistogramMetricFamily(
        "gpuconfig_apply_duration_seconds", "Duration of finished apply runs", labels=["host"]
    )
    rolled_back = CounterMetricFamily(
        "gpuconfig_apply_rollbacks", "Services rolled back by an apply", labels=["host"]
    )
    for host in sorted(by_status):
        for status in ApplyRun.Status.values:
            total.add_metric([host, status], float(by_status[host].get(status, 0)))
        spent = durations.get(host, [])
        buckets = [(str(b), float(sum(1 for d in spent if d <= b))) for b in APPLY_BUCKETS]
        buckets.append(("+Inf", float(len(spent))))
        duration.add_metric([host], buckets, sum_value=sum(spent))
        rolled_back.add_metric([host], float(rollbacks[host]))
    yield total
    yield duration
    yield rolled_back
    yield from _last_apply_metrics()


def _last_apply_metrics():
    """Each host's last finished apply: when it ended, how long it took, each recreate."""
    ended = GaugeMetricFamily(
        "gpuconfig_last_apply_timestamp_seconds",
        "When the last finished apply ended",
        labels=["host"],
    )
    took = GaugeMetricFamily(
        "gpuconfig_last_apply_duration_seconds",
        "Duration of the last finished apply",
        labels=["host"],
    )
    recreate = GaugeMetricFamily(
        "gpuconfig_last_apply_recreate_seconds",
        "How long each service's recreate took in the last finished apply",
        labels=["host", "service", "outcome"],
    )
    finished = ApplyRun.all_hosts.filter(status__in=ApplyRun.FINISHED)
    last_ids = finished.values("host").annotate(last=Max("pk")).order_by().values("last")
    for last in finished.filter(pk__in=last_ids).order_by("host"):
        for entry in progress.progress_get(str(last.operation_id)):
            if entry["status"] in progress.TERMINAL and entry["status"] != "unchanged":
                recreate.add_metric(
                    [last.host, entry["service"], entry["status"]], entry["elapsed_s"]
                )
        ended.add_metric([last.host], last.finished_at.timestamp())
        took.add_metric(
            [last.host],
            (last.finished_at - (last.started_at or last.finished_at)).total_seconds(),
        )
    yield ended
    yield took
    yield recreate


def _scan_metrics(hosts: list[str]):

    finished = GaugeMetricFamily(
        "gpuconfig_last_scan_timestamp_seconds",
        "When the last GPU scan finished",
        labels=["host"],
    )
    duration = GaugeMetricFamily(
        "gpuconfig_scan_duration_seconds", "How long the last GPU scan took", labels=["host"]
    )
    success = GaugeMetricFamily(
        "gpuconfig_last_scan_success",
        "1 when the last GPU scan ran without error",
        labels=["host"],
    )
    for host in hosts:
        with host_scope(host):
            summary = last_scan() or {}
        if summary.get("finished_at"):
            finished.add_metric([host], datetime.fromisoformat(summary["finished_at"]).timestamp())
        if summary.get("duration_s") is not None:
            duration.add_metric([host], float(summary["duration_s"]))
        success.add_metric([host], 0.0 if summary.get("error") or not summary else 1.0)
    yield finished
    yield duration
    yield success


class GpuconfigCollector:
    """Collects every gpuconfig metric at scrape time, from the database and the cache."""

    def collect(self):
        hosts = host_names()
        yield from _gpu_metrics(hosts)
        yield from _plan_metrics(hosts)
        yield from _apply_metrics(hosts)
        yield from _scan_metrics(hosts)


def metrics_render() -> bytes:
    """The current metrics in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuconfigCollector())
    return generate_latest(registry)
