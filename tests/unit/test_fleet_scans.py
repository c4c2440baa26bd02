"""A host's scans without a broker: what a scan report must hold, and what the centre does with
one (who may send it, for which host, and where it lands)."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime

import pytest
from django.core.cache import cache

from fleet.messages import MessageInvalid
from fleet.routing import HOSTS_EXCHANGE, SCAN_TASK
from fleet.scans import (
    MAX_GPUS,
    ScanReport,
    scan_report_make,
    scan_report_receive,
    scan_report_task,
)
from fleet.services import host_register
from gpuconfig_site.hosts import host_scope
from gpus.attribution import ProcessUse
from gpus.backends.base import GpuReading
from gpus.models import Gpu, GpuProcess, GpuSample
from gpus.selectors import last_scan_stored
from gpus.tasks import gpu_scan_request, remote_scan_sender_register

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RABBIT_CENTRAL = "amqp://central:pw@rabbit:5672/gpuconfig"


def reading(index: int, uuid: str, **fields) -> GpuReading:
    values = {
        "name": "NVIDIA L4",
        "vram_total_mb": 23034,
        "vram_used_mb": 512,
        "compute_capability": (8, 9),
        "utilization_percent": 7,
        "temperature_c": 41,
        "power_w": 30.5,
        "pci_bus_id": f"00000000:0{index + 1}:00.0",
        "processes": ((4242, 500),),
    }
    values.update(fields)
    return GpuReading(index=index, uuid=uuid, **values)


def report_for(host: str, *uuids: str) -> ScanReport:
    readings = tuple(reading(n, uuid) for n, uuid in enumerate(uuids))
    return ScanReport(
        host=host,
        backend="nvml",
        readings=readings,
        notes=("scanned on the host",),
        error=None,
        processes={
            r.uuid: (ProcessUse(gpu_uuid=r.uuid, pid=4242, used_mb=500, name="python3"),)
            for r in readings
        },
        sent_at=NOW,
    )


GOOD = report_for("gpu-b", "GPU-b-0", "GPU-b-1").as_payload()


def test_a_report_round_trips_through_its_payload():
    report = report_for("gpu-b", "GPU-b-0", "GPU-b-1")
    assert ScanReport.from_payload(report.as_payload()) == report


def test_a_failed_scan_travels_as_its_error():
    failed = ScanReport("gpu-b", None, (), (), "NVML: driver not loaded", None, NOW)
    assert ScanReport.from_payload(failed.as_payload()) == failed


def test_an_agent_s_report_is_its_own_scan_of_its_gpus(settings, simulated_gpus):
    settings.GPUCONFIG_HOST_NAME = "gpu-b"
    report = scan_report_make()
    assert (report.host, report.backend, report.error) == ("gpu-b", "simulated", None)
    assert [r.index for r in report.readings] == [0, 1]
    assert set(report.processes) == {r.uuid for r in report.readings}
    assert ScanReport.from_payload(report.as_payload()) == report


def test_an_agent_whose_backend_cannot_run_reports_the_error(settings):
    settings.GPUCONFIG_HOST_NAME = "gpu-b"
    settings.GPUCONFIG_SIMULATED_GPUS = None  # the simulated backend has nothing to read
    report = scan_report_make()
    assert report.readings == () and report.error
    assert ScanReport.from_payload(report.as_payload()).error == report.error


def _with(path: tuple, value) -> dict:
    """GOOD with the item at ``path`` replaced (``...`` as value: removed)."""
    payload = copy.deepcopy(GOOD)
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("a string", "is an object"),
        (_with(("spy",), 1), "holds no spy"),
        (_with(("host",), "Gpu_B"), "not a host name"),
        (_with(("host",), ...), "not a host name"),
        (_with(("backend",), "x" * 33), "backend must be a string"),
        (_with(("readings",), "all of them"), "readings must be a list"),
        (_with(("readings",), [GOOD["readings"][0]] * (MAX_GPUS + 1)), "at most 64"),
        (_with(("readings", 1, "uuid"), "GPU-b-0"), "same GPU UUID twice"),
        (_with(("readings", 0, "uuid"), ""), "uuid must not be empty"),
        (_with(("readings", 0, "uuid"), "u" * 97), "uuid must be a string"),
        (_with(("readings", 0, "index"), -1), "index must be an integer"),
        (_with(("readings", 0, "index"), True), "index must be an integer"),
        (_with(("readings", 0, "index"), "0"), "index must be an integer"),
        (_with(("readings", 0, "vram_total_mb"), 1.5), "vram_total_mb must be an integer"),
        (_with(("readings", 0, "utilization_percent"), 101), "utilization_percent"),
        (_with(("readings", 0, "power_w"), float("nan")), "power_w"),
        (_with(("readings", 0, "power_w"), "30 W"), "power_w"),
        (_with(("readings", 0, "compute_capability"), "8.9"), "compute_capability"),
        (_with(("readings", 0, "lost"), "no"), "lost must be true or false"),
        (_with(("readings", 0, "drop_table"), 1), "must be an object of"),
        (_with(("readings", 0, "processes"), [[1, 2, 3]]), r"\[pid, used_mb\] pair"),
        (_with(("readings", 0, "processes"), [[0, 2]]), "pid must be an integer"),
        (_with(("readings", 0, "processes"), [[1, 2]] * 1025), "at most 1024"),
        (_with(("notes",), ["n"] * 21), "notes must be a list of at most 20"),
        (_with(("notes",), [7]), "notes"),
        (_with(("error",), "e" * 2001), "error must be a string"),
        (_with(("error",), "NVML failed"), "carries no readings"),
        (_with(("processes",), []), "processes must be an object"),
        (_with(("processes", "GPU-elsewhere"), []), "not in readings"),
        (_with(("processes", "GPU-b-0", 0, "kind"), "video"), "kind must be"),
        (_with(("processes", "GPU-b-0", 0, "container_id"), "abc"), "64 hex digits"),
        (_with(("processes", "GPU-b-0", 0, "service"), "s" * 65), "service must be a string"),
        (_with(("processes", "GPU-b-0", 0, "resolved"), 1), "resolved must be true or false"),
        (_with(("sent_at",), "yesterday"), "sent_at must be an ISO"),
        (_with(("sent_at",), "2026-12-04T12:00:00"), "time zone"),
    ],
)
def test_a_malformed_report_is_refused_naming_what_is_wrong(payload, reason):
    with pytest.raises(MessageInvalid, match=reason):
        ScanReport.from_payload(payload)


# --- The centre ---------------------------------------------------------------------------------


def receive_as(payload: dict, user_id: str | None) -> None:
    """Run the central task function as a worker would, the broker's user_id on the message."""
    scan_report_task.push_request(properties={"user_id": user_id} if user_id else {})
    try:
        scan_report_task.run(payload)
    finally:
        scan_report_task.pop_request()


def gpus_of(host: str) -> set[str]:
    return set(Gpu.all_hosts.filter(host=host).values_list("uuid", flat=True))


@pytest.fixture
def fleet(settings, db):
    settings.CELERY_BROKER_URL = RABBIT_CENTRAL
    host_register(name="gpu-a")
    host_register(name="gpu-b")


@pytest.mark.django_db
def test_a_good_report_lands_under_its_host_only(fleet, settings):
    receive_as(GOOD, "gpuconfig-agent-gpu-b")
    assert gpus_of("gpu-b") == {"GPU-b-0", "GPU-b-1"}
    assert gpus_of("gpu-a") == set() and gpus_of(settings.GPUCONFIG_HOST_NAME) == set()
    gpu = Gpu.all_hosts.get(host="gpu-b", uuid="GPU-b-1")
    assert (gpu.index, gpu.name, gpu.backend, gpu.available) == (1, "NVIDIA L4", "nvml", True)
    assert (gpu.compute_capability_major, gpu.compute_capability_minor) == (8, 9)
    assert GpuSample.all_hosts.filter(gpu__host="gpu-b").count() == 2
    assert sorted(
        GpuProcess.all_hosts.filter(gpu__host="gpu-b").values_list("gpu__uuid", "pid", "name")
    ) == [("GPU-b-0", 4242, "python3"), ("GPU-b-1", 4242, "python3")]
    with host_scope("gpu-b"):
        summary = last_scan_stored()
        assert summary["seq"] == 1 and summary["backend"] == "nvml"
        assert summary["notes"] == ["scanned on the host"]
        assert sorted(summary["changes"]["added"]) == ["GPU-b-0", "GPU-b-1"]
    with host_scope("gpu-a"):
        assert last_scan_stored() is None
    assert last_scan_stored() is None  # this machine's own last scan is untouched


@pytest.mark.django_db
def test_a_later_report_without_a_gpu_marks_it_lost_on_that_host_only(fleet):
    receive_as(GOOD, "gpuconfig-agent-gpu-b")
    receive_as(report_for("gpu-a", "GPU-a-0").as_payload(), "gpuconfig-agent-gpu-a")
    receive_as(report_for("gpu-b", "GPU-b-0").as_payload(), "gpuconfig-agent-gpu-b")
    available = dict(Gpu.all_hosts.values_list("uuid", "available"))
    assert available == {"GPU-b-0": True, "GPU-b-1": False, "GPU-a-0": True}


@pytest.mark.django_db
def test_a_failed_scan_keeps_the_host_s_inventory_and_reports_why(fleet):
    receive_as(GOOD, "gpuconfig-agent-gpu-b")
    failed = ScanReport("gpu-b", None, (), (), "NVML: driver not loaded", None, NOW)
    receive_as(failed.as_payload(), "gpuconfig-agent-gpu-b")
    assert set(Gpu.all_hosts.filter(available=True).values_list("uuid", flat=True)) == {
        "GPU-b-0",
        "GPU-b-1",
    }
    with host_scope("gpu-b"):
        assert last_scan_stored()["error"] == "NVML: driver not loaded"


@pytest.mark.django_db
def test_a_report_from_another_host_s_broker_user_is_refused_and_logged(fleet, caplog):
    with caplog.at_level(logging.WARNING, logger="gpuconfig.fleet"):
        receive_as(GOOD, "gpuconfig-agent-gpu-a")
        receive_as(GOOD, None)
    assert gpus_of("gpu-b") == set() and not Gpu.all_hosts.exists()
    refusals = [r.getMessage() for r in caplog.records if "Scan report refused" in r.getMessage()]
    assert len(refusals) == 2
    assert "broker user 'gpuconfig-agent-gpu-a' may not speak for host 'gpu-b'" in refusals[0]
    assert "carries no broker user" in refusals[1]
    with host_scope("gpu-b"):
        assert last_scan_stored() is None


@pytest.mark.django_db
def test_a_report_for_an_unregistered_host_is_refused_and_logged(fleet, caplog):
    payload = report_for("gpu-z", "GPU-z-0").as_payload()
    with caplog.at_level(logging.WARNING, logger="gpuconfig.fleet"):
        assert scan_report_receive(payload, sender="gpuconfig-agent-gpu-z") is None
    assert "no host named 'gpu-z' is registered" in caplog.text
    assert not Gpu.all_hosts.exists()


@pytest.mark.django_db
def test_a_malformed_report_writes_nothing(fleet, caplog):
    with caplog.at_level(logging.WARNING, logger="gpuconfig.fleet"):
        receive_as(_with(("readings", 1, "index"), "one"), "gpuconfig-agent-gpu-b")
    assert "Scan report refused: readings[1].index" in caplog.text
    assert not Gpu.all_hosts.exists()


@pytest.mark.django_db
def test_over_redis_only_this_machine_s_report_is_taken_in(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    host_register(name="gpu-b")
    receive_as(GOOD, None)
    assert not Gpu.all_hosts.exists()
    receive_as(report_for(settings.GPUCONFIG_HOST_NAME, "GPU-mine").as_payload(), None)
    assert gpus_of(settings.GPUCONFIG_HOST_NAME) == {"GPU-mine"}


# --- Asking a host for a scan -------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch):
    """What the centre publishes, caught at ``send_task`` (the broker is not needed here)."""
    from celery import current_app

    sent: list[dict] = []

    def send_task(name, args=None, kwargs=None, **options):
        sent.append({"name": name, "args": args, **options})

    monkeypatch.setattr(current_app, "send_task", send_task)
    return sent


@pytest.mark.django_db
def test_detect_for_another_host_asks_its_agent_and_waits_for_its_report(fleet, published):
    from fleet.scans import scan_request_send

    remote_scan_sender_register(scan_request_send)  # as fleet's ready() does

    def send_and_answer(**kwargs):
        scan_request_send(**kwargs)
        # The agent's report arriving (as the central worker takes it in).
        receive_as(GOOD, "gpuconfig-agent-gpu-b")

    remote_scan_sender_register(send_and_answer)
    try:
        with host_scope("gpu-b"):
            summary, fresh = gpu_scan_request(wait=2)
    finally:
        remote_scan_sender_register(scan_request_send)
    assert fresh and summary["seq"] == 1
    assert sorted(summary["changes"]["added"]) == ["GPU-b-0", "GPU-b-1"]
    assert [(p["name"], p["exchange"], p["routing_key"]) for p in published] == [
        (SCAN_TASK, HOSTS_EXCHANGE, "gpu-b")
    ]
    assert published[0]["declare"] == []
    assert gpus_of("gpu-b") == {"GPU-b-0", "GPU-b-1"}


@pytest.mark.django_db
def test_detect_for_another_host_whose_report_does_not_come_is_not_fresh(fleet, published):
    with host_scope("gpu-b"):
        summary, fresh = gpu_scan_request(wait=0.3)
    assert not fresh and summary == {}
    assert [p["routing_key"] for p in published] == ["gpu-b"]
    assert not Gpu.all_hosts.exists()  # nothing was scanned here for gpu-b


@pytest.mark.django_db
def test_detect_api_for_a_remote_host_answers_with_its_fresh_scan(
    fleet, published, staff_client, monkeypatch
):
    from fleet.models import Host
    from fleet.scans import scan_request_send

    Host.objects.filter(name="gpu-b").update(last_heartbeat=datetime.now(UTC))

    def send_and_answer(**kwargs):
        scan_request_send(**kwargs)
        receive_as(GOOD, "gpuconfig-agent-gpu-b")

    remote_scan_sender_register(send_and_answer)
    try:
        response = staff_client.post("/api/system/gpu-config/detect?host=gpu-b")
    finally:
        remote_scan_sender_register(scan_request_send)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["fresh"] is True and body["backend"] == "nvml"
    assert sorted(g["uuid"] for g in body["gpus"]) == ["GPU-b-0", "GPU-b-1"]
    assert published[0]["routing_key"] == "gpu-b"
    cache.clear()


@pytest.mark.django_db
def test_detect_for_another_host_without_a_broker_says_why_and_scans_nothing_here(fleet):
    from kombu.exceptions import OperationalError

    from fleet.scans import scan_request_send

    def broker_away(**_kwargs):
        raise OperationalError("connection refused")

    remote_scan_sender_register(broker_away)
    try:
        with host_scope("gpu-b"):
            summary, fresh = gpu_scan_request(wait=5)
    finally:
        remote_scan_sender_register(scan_request_send)
    assert not fresh
    assert summary["error"] == (
        "Host 'gpu-b''s agent could not be asked for a scan: connection refused"
    )
    assert not Gpu.all_hosts.exists()
