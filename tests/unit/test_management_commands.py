"""The operating commands behind ``gpuconfig`` (plan, apply, status, check_setup, deploy,
detect_gpus), each run in-process with ``call_command``, and ``gpuconfig <name>`` dispatching
to them with the same output and exit status."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, get_commands

from applies.live import demo_runtime_enable
from applies.models import ApplyRun
from assignments.models import GpuConfig
from assignments.selectors import config_preview, service_list
from assignments.services import config_save
from gpuconfig_site import cli
from gpuconfig_site.deploy import UnitOptions, systemd_units
from gpus.services import gpu_scan_run
from tests.conftest import guide_layout

NO_ENGINE = "unix:///nonexistent/gpuconfig-test.sock"
CHECKED_PARTS = ["config", "database", "redis", "engine", "nvml", "pids", "compose", "lint"]


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def no_engine(monkeypatch, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "auto"
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)


# plan -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_plan_prints_the_strategy_s_preview_as_json(reference_inventory):
    printed = json.loads(run("plan", strategy="balanced", json=True))
    plan, _ = config_preview(strategy="balanced")
    assert printed == {
        "strategy": "balanced",
        "placements": [
            {"service": p.service, "gpu_index": p.gpu_index, "budget_gb": p.budget_gb}
            for p in plan.placements
        ],
        "warnings": [{"code": i.code, "message": i.message} for i in plan.issues],
    }


@pytest.mark.django_db
def test_plan_in_words_uses_the_saved_strategy_by_default(reference_inventory):
    saved = GpuConfig.load().strategy
    lines = run("plan").splitlines()
    plan, _ = config_preview(strategy=saved)
    assert lines[0] == f"Strategy {saved} (preview, nothing saved)"
    assert lines[1 : 1 + len(plan.placements)] == [
        f"  {p.service}: GPU {p.gpu_index}"
        + (f" (budget {p.budget_gb} GB)" if p.budget_gb is not None else "")
        for p in plan.placements
    ]


@pytest.mark.django_db
def test_plan_refuses_an_unknown_strategy_with_status_2(reference_inventory):
    with pytest.raises(CommandError, match="Unknown strategy 'nope'") as refused:
        run("plan", strategy="nope")
    assert refused.value.returncode == 2


# status -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_status_before_any_apply_names_each_service_s_saved_gpu(reference_inventory, no_engine):
    lines = run("status").splitlines()
    assert lines[0] == "No apply has run yet."
    saved = {"ai-enrichment": 1}
    assert lines[1:] == [
        f"{s.name}: unknown (health unknown), GPU - (saved: GPU {saved.get(s.name, 0)})"
        for s in service_list()
    ]


@pytest.mark.django_db
def test_status_as_json_names_the_last_run(reference_inventory, no_engine):
    done = ApplyRun.objects.create(status=ApplyRun.Status.FAILED, error="ai-clip rolled back")
    printed = json.loads(run("status", json=True))
    assert printed["run"] == {
        "operation_id": str(done.operation_id),
        "status": "failed",
        "error": "ai-clip rolled back",
    }
    assert printed["in_progress"] is False
    assert [s["name"] for s in printed["services"]] == [s.name for s in service_list()]


# apply ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_apply_without_an_engine_refuses_with_the_reason_and_status_1(
    reference_inventory, no_engine
):
    with pytest.raises(CommandError) as refused:
        run("apply")
    assert refused.value.returncode == 1
    assert str(refused.value).startswith("Cannot reach the container engine")
    assert "gpuconfig-test.sock" in str(refused.value)


@pytest.mark.django_db
def test_apply_while_another_runs_refuses_with_status_2(reference_inventory, no_engine):
    ApplyRun.objects.create(status=ApplyRun.Status.RUNNING, services=["ai-clip"])
    with pytest.raises(CommandError) as refused:
        run("apply")
    assert refused.value.returncode == 2
    assert "apply" in str(refused.value).lower()


@pytest.fixture
def demo_box(live_db, simulated_gpus, settings, no_engine):
    """The reference GPUs in a committed database (the eager task runs at commit), with the
    demo runtime standing in for the engine."""
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    gpu_scan_run()
    guide_layout()
    demo_runtime_enable()


def test_apply_wait_prints_each_outcome_and_exits_0_when_it_succeeded(demo_box):
    # A lower budget on the same GPU: the demo recreates it, and it fits.
    config_save(
        assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 2.0}]
    )
    lines = run("apply", wait=True, timeout=30).splitlines()
    op = ApplyRun.objects.get().operation_id
    assert lines == [
        f"Apply {op}: restarting ai-enrichment",
        "  ai-enrichment: healthy ai-enrichment healthy on GPU 1",
        f"Apply {op}: succeeded",
    ]


def test_apply_wait_exits_1_when_the_run_failed(demo_box):
    # The 4 GB GPU is full (ai-enrichment): ai-clip runs out of memory and is rolled back.
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("apply", wait=True, timeout=30, stdout=out)
    assert exited.value.code == 1
    run_row = ApplyRun.objects.get()
    assert run_row.status == ApplyRun.Status.FAILED
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "  ai-clip: rolled_back rolled back to the previous container: did not become healthy: "
        "CUDA out of memory on GPU 1: needs 1.2 GB, 0.0 GB free"
    )
    assert lines[-1].startswith(f"Apply {run_row.operation_id}: failed")


@pytest.mark.django_db
def test_apply_wait_gives_up_after_its_timeout_when_no_worker_runs(reference_inventory, settings):
    """Within the test's transaction the run is never handed to a worker: it stays queued."""
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    demo_runtime_enable()
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("apply", wait=True, timeout=0.2, stdout=out)
    assert exited.value.code == 1
    assert out.getvalue().splitlines()[-1] == ("Still queued after 0.2 s (is the worker running?)")


# check_setup ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_check_setup_prints_one_line_per_part_and_exits_1_on_a_failure(no_engine):
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("check_setup", stdout=out)
    assert exited.value.code == 1
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0].split()[1] for line in lines] == CHECKED_PARTS
    assert lines[3].startswith("FAIL engine: ")


# deploy -----------------------------------------------------------------------------------


def test_deploy_systemd_writes_the_units_for_the_chosen_account(tmp_path, settings):
    out_dir = tmp_path / "units"
    err = StringIO()
    printed = run(
        "deploy",
        "systemd",
        user="gpuconfig",
        gpuconfig="/opt/gpuconfig/bin/gpuconfig",
        env_file="/etc/gpuconfig/gpuconfig.env",
        workdir="/var/lib/gpuconfig",
        output=str(out_dir),
        stderr=err,
    )
    expected = systemd_units(
        UnitOptions(
            gpuconfig=Path("/opt/gpuconfig/bin/gpuconfig"),
            env_file=Path("/etc/gpuconfig/gpuconfig.env"),
            workdir=Path("/var/lib/gpuconfig"),
        )
    )
    assert {p.name: p.read_text() for p in out_dir.iterdir()} == expected
    assert printed.splitlines() == [str(out_dir / name) for name in expected]
    assert "the units run as user 'gpuconfig', group 'gpuconfig'" in err.getvalue()


def test_deploy_systemd_prints_the_units_under_sudo_for_the_invoking_user(monkeypatch):
    monkeypatch.setenv("SUDO_USER", "operator")
    printed = run("deploy", "systemd", stderr=StringIO())
    assert printed.count("User=operator\nGroup=operator\n") == 3
    assert printed.startswith("# gpuconfig-web.service\n[Unit]\n")


def test_deploy_systemd_for_a_gpu_host_renders_its_agent_alone(tmp_path):
    out_dir = tmp_path / "units"
    run(
        "deploy",
        "systemd",
        role="agent",
        user="gpuconfig",
        gpuconfig="/opt/gpuconfig/bin/gpuconfig",
        output=str(out_dir),
        stderr=StringIO(),
    )
    assert [p.name for p in out_dir.iterdir()] == ["gpuconfig-agent.service"]
    unit = (out_dir / "gpuconfig-agent.service").read_text()
    assert "\nExecStart=/opt/gpuconfig/bin/gpuconfig agent\n" in unit
    # An agent waits for its engine and the network, never for a database or a local Redis.
    after = unit.split("After=", 1)[1].split("\n", 1)[0]
    assert after == "network-online.target docker.service podman.socket"
    assert "TimeoutStopSec=600" in unit  # a running apply finishes before the agent stops


# detect_gpus ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_detect_gpus_prints_the_scanned_inventory(simulated_gpus):
    printed = json.loads(run("detect_gpus", json=True))
    assert printed["backend"] == "simulated"
    assert [(g["index"], g["name"]) for g in printed["gpus"]] == [
        (0, "NVIDIA RTX A5500"),
        (1, "NVIDIA RTX A400"),
    ]


# gpuconfig <name> -------------------------------------------------------------------------


@pytest.mark.django_db
def test_gpuconfig_runs_the_management_command_and_says_a_refusal_in_one_line(
    reference_inventory, capsys
):
    assert cli.main(["plan", "--strategy", "balanced", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == "balanced"
    assert cli.main(["plan", "--strategy", "nope"]) == 2
    assert capsys.readouterr().err == (
        "gpuconfig plan: Unknown strategy 'nope'; choose one of: manual, vram_based, "
        "latency_optimized, isolation_first, balanced.\n"
    )


def test_gpuconfig_refuses_an_unknown_option_with_the_command_s_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gpuconfig status ")
    assert err.endswith("gpuconfig status: error: unrecognized arguments: --bogus\n")


def test_every_gpuconfig_command_is_a_management_command():
    commands = get_commands()
    assert {name: commands.get(command) for name, (command, _) in cli.COMMANDS.items()} == {
        "detect": "gpus",
        "plan": "assignments",
        "apply": "applies",
        "status": "applies",
        "check": "gpuconfig_site",
        "deploy": "gpuconfig_site",
        "agent": "fleet",
        "host": "fleet",
    }


# --host ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_gpuconfig_host_option_works_on_that_host_and_refuses_an_unknown_or_offline_one(
    reference_inventory, capsys
):
    from fleet.services import host_register
    from gpuconfig_site.hosts import host_scope
    from gpus.backends.base import GpuReading
    from gpus.services import scan_report_ingest

    host_register(name="gpu-b")
    with host_scope("gpu-b"):
        scan_report_ingest(
            readings=[GpuReading(index=0, uuid="GPU-b0", name="NVIDIA L4", vram_total_mb=23034)],
            backend="nvml",
        )
    assert cli.main(["plan", "--host", "gpu-b", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert {p["gpu_index"] for p in planned["placements"]} <= {0, None}  # B has one GPU
    assert cli.main(["plan", "--json"]) == 0  # the default host has two
    assert {p["gpu_index"] for p in json.loads(capsys.readouterr().out)["placements"]} == {0, 1}
    assert cli.main(["status", "--host", "nowhere"]) == 1
    assert capsys.readouterr().err == (
        "gpuconfig status: unknown host 'nowhere' (gpuconfig host list shows them)\n"
    )
    assert cli.main(["apply", "--host", "gpu-b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpuconfig apply: Host 'gpu-b' is offline (its agent has never been")
    assert not ApplyRun.all_hosts.exists()
