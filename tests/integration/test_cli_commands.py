"""Every ``gpuconfig`` command, run as a user runs it: the installed command in a shell whose
only configuration is a ``gpuconfig.env`` (a private SQLite database, the simulated reference
GPUs, this helper's Redis database, no container engine unless the demo runtime is on).

The processes (serve, worker, beat) are started, seen working, and stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_GPUS, wait_for
from tests.integration.test_operate import free_port, http

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
GPUCONFIG = str(Path(sys.executable).parent / "gpuconfig")
NO_ENGINE = "unix:///nonexistent/gpuconfig-cli-test.sock"
FINISHED = r"^Last apply \S+: (succeeded|partial|failed|interrupted)$"


@pytest.fixture
def shell(tmp_path):
    """A migrated installation; ``shell(*args)`` runs ``gpuconfig *args`` in it."""
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    env_file = tmp_path / "gpuconfig.env"
    env_file.write_text(
        f"DATABASE_URL=sqlite:///{tmp_path / 'cli.sqlite3'}\n"
        f"REDIS_URL={redis_url}\n"
        f"GPUCONFIG_SIMULATED_GPUS={REFERENCE_GPUS}\n"
        f"GPUCONFIG_CONFIG_DIR={tmp_path / 'config'}\n"
        f"GPUCONFIG_VAR_DIR={tmp_path / 'var'}\n"
        "GPUCONFIG_SIMULATED_RUNTIME_STEP=0.05\n"
        # The host's CDI folders hold the test Podman service's stand-in spec (no common
        # device nodes); the lint reads an empty folder here instead.
        f"GPUCONFIG_CDI_SPEC_DIRS={tmp_path / 'cdi'}\n"
    )
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "USER": "operator",
        # This checkout's code, not another installation's.
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "GPUCONFIG_ENV_FILE": str(env_file),
        "DOCKER_HOST": NO_ENGINE,
    }

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [GPUCONFIG, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def start(*args: str, log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(
                [GPUCONFIG, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    run.start = start
    run.env = env
    done = run("migrate")
    assert done.returncode == 0, done.stderr
    yield run
    run("manage", "shell", "-c", DEMO_OFF)


DEMO_ON = "from applies.live import demo_runtime_enable; demo_runtime_enable()"
DEMO_OFF = (
    "from applies.runtime.simulated import simulated_runtime_disable; simulated_runtime_disable()"
)


def save_gpu(service: str, index: int) -> str:
    """Python for `gpuconfig manage shell -c`: save ``service`` on GPU ``index``."""
    return (
        "from assignments.services import config_save; "
        f"config_save(assignments=[{{'service': {service!r}, 'gpu_index': {index}}}])"
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_log(proc: subprocess.Popen, log: Path, text: str, timeout: float = 60) -> str:
    def seen():
        content = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n{content[-3000:]}")
        return content if text in content else None

    return wait_for(seen, timeout=timeout, interval=0.2, what=text)


def test_migrate_then_manage_lists_every_migration_applied(shell):
    done = shell("manage", "showmigrations", "assignments")
    assert done.returncode == 0, done.stderr
    assert "[ ]" not in done.stdout and "[X] 0001_initial" in done.stdout


def test_detect_prints_the_inventory(shell):
    done = shell("detect", "--json")
    assert done.returncode == 0, done.stderr
    gpus = json.loads(done.stdout)["gpus"]
    assert [(g["index"], g["name"]) for g in gpus] == [
        (0, "NVIDIA RTX A5500"),
        (1, "NVIDIA RTX A400"),
    ]


def test_plan_prints_a_strategy_s_preview(shell):
    shell("detect")
    done = shell("plan", "--strategy", "balanced", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["strategy"] == "balanced"
    assert len(plan["placements"]) == 5


def test_status_with_no_apply_and_no_engine(shell):
    shell("detect")
    done = shell("status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("No apply has run yet.\n")
    # Where it runs is unknown without an engine; the saved GPU is said beside it.
    line = r"^ai-llm: unknown \(health \w+\), GPU - \(saved: GPU 0\)$"
    assert re.search(line, done.stdout, re.M), done.stdout


def test_apply_without_an_engine_says_so_in_one_line(shell):
    """Without --wait and with it: no traceback, the reason, exit status 1."""
    shell("detect")
    for args in (["apply"], ["apply", "--wait"]):
        done = shell(*args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        # (The recovery it runs first may log its own line before.)
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("gpuconfig apply: Cannot reach the container engine"), line
        assert "gpuconfig-cli-test.sock" in line, line


def test_apply_starts_and_apply_wait_reports_the_outcome(shell, tmp_path):
    """With the demo runtime on, `apply` starts a run and returns; a worker started with
    `gpuconfig worker` carries it out, and `apply --wait` prints each service's outcome and
    exits with the run's status."""
    shell("detect")
    assert shell("manage", "shell", "-c", DEMO_ON).returncode == 0
    assert shell("manage", "shell", "-c", save_gpu("ai-clip", 0)).returncode == 0

    started = shell("apply")
    assert started.returncode == 0, started.stderr
    assert re.fullmatch(r"Apply [0-9a-f-]{36}: restarting ai-clip\n", started.stdout)

    log = tmp_path / "worker.log"
    worker = shell.start("worker", "--concurrency", "1", log=log)
    try:
        wait_log(worker, log, " ready.")
        # The first run is carried out by the worker; --wait then waits for a second one.
        wait_for(
            lambda: re.search(FINISHED, shell("status").stdout, re.M),
            timeout=60,
            what="the first apply to finish",
        )
        # GPU 0 cannot hold ai-clip beside ai-llm, so the demo rolls it back: the saved GPU
        # still differs from the running one, and --wait follows a second run to its end.
        waited = shell("apply", "--wait", "--timeout", "60")
    finally:
        stop(worker)
    lines = waited.stdout.splitlines() or [""]
    assert re.fullmatch(r"Apply [0-9a-f-]{36}: restarting ai-clip", lines[0]), (
        waited.stdout,
        waited.stderr,
        log.read_text()[-2000:],
    )
    # GPU 0 has no room left for it: out of memory, rolled back.
    assert re.fullmatch(r"  ai-clip: rolled_back .*CUDA out of memory on GPU 0.*", lines[1]), lines
    # One service that rolled back is the whole run failing, and the exit status says so.
    assert re.fullmatch(r"Apply [0-9a-f-]{36}: failed(: .+)?", lines[-1]), lines
    assert waited.returncode == 1, waited.stderr


def test_check_prints_one_line_per_part(shell):
    done = shell("check")
    names = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert [n.split()[1] for n in names] == [
        "config",
        "database",
        "redis",
        "engine",
        "nvml",
        "pids",
        "compose",
        "lint",
    ], done.stdout
    assert "FAIL engine" in done.stdout  # no engine answers here
    assert done.returncode == 1


def test_serve_answers_healthz(shell, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    server = shell.start("serve", "--bind", f"127.0.0.1:{port}", "--workers", "1", log=log)
    try:
        wait_for(
            lambda: http(f"http://127.0.0.1:{port}/healthz")[0] == 200 or server.poll(),
            timeout=60,
            what="gunicorn",
        )
        assert server.poll() is None, log.read_text()
        assert http(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        stop(server)


def test_beat_starts_its_schedule(shell, tmp_path):
    log = tmp_path / "beat.log"
    beat = shell.start("beat", log=log)
    try:
        wait_log(beat, log, "beat: Starting...")
    finally:
        stop(beat)
    assert (tmp_path / "var" / "celerybeat-schedule").exists() or list(
        (tmp_path / "var").glob("celerybeat-schedule*")
    )


def test_deploy_systemd_names_the_invoking_user_and_says_so(shell, tmp_path):
    done = shell("deploy", "systemd")
    assert done.returncode == 0, done.stderr
    assert "User=operator\nGroup=operator\n" in done.stdout
    assert "the units run as user 'operator'" in done.stderr
    chosen = shell("deploy", "systemd", "--user", "gpuconfig", "--output", str(tmp_path / "u"))
    assert chosen.returncode == 0, chosen.stderr
    assert "User=gpuconfig\n" in (tmp_path / "u" / "gpuconfig-web.service").read_text()
