"""Ops room. Is gpuconfig healthy? One check per dependency, shared by ``/readyz`` and ``gpuconfig
check``.

Each check returns a ``Check``: its name, whether it passed (None: not relevant here, skipped)
and a one-line detail for a person. Checks never raise: a dependency that is down is a failed
check with the reason, and every network call has a short timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from applies.models import ApplyRun
from applies.runtime import RuntimeUnavailable, get_runtime
from applies.selectors import run_stall
from assignments.selectors import compose_report, lint_report, service_list
from gpuconfig_site.heartbeat import HEARTBEAT_KEY
from gpus.backends import AUTO, BackendError, BackendUnavailable, get_backend
from gpus.selectors import last_scan

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    """The outcome of one check. ``ok`` None means skipped (not relevant to this setup)."""

    name: str
    ok: bool | None
    detail: str

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]

    def as_dict(self) -> dict:
        return asdict(self)


def _guarded(name: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except Exception as exc:  # a check reports its dependency's failure, never raises it
        return Check(name, False, f"{type(exc).__name__}: {exc}")


# --- the checks ----------------------------------------------------------------------------


def check_config() -> Check:
    """The configuration file, the GPU backend, the container runtime and the config folder."""

    env_file = Path(settings.GPUCONFIG_ENV_FILE)
    source = f"{env_file}" if env_file.is_file() else f"environment only ({env_file} absent)"
    backend = str(settings.GPUCONFIG_GPU_BACKEND or AUTO).strip()
    if backend.lower() != AUTO:
        get_backend(backend)
    elif settings.GPUCONFIG_SIMULATED_GPUS:
        backend = "auto (simulated)"
        get_backend("simulated").scan()  # the simulated file parses
    try:
        get_runtime()  # a runtime setting that names nothing is ImproperlyConfigured
    except RuntimeUnavailable:
        pass  # the setting is valid; that no engine answers is the engine line's to say
    config_dir = Path(settings.GPUCONFIG_CONFIG_DIR)
    writable_dir = config_dir if config_dir.exists() else config_dir.parent
    if not os.access(writable_dir, os.W_OK):
        return Check("config", False, f"{config_dir} is not writable by this user")
    return Check("config", True, f"{source}; GPU backend {backend}; files in {config_dir}")


def check_database(*, migrations: bool = False) -> Check:
    """The database answers (and, for the command, has every migration applied)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    vendor = connection.vendor
    if migrations:
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            return Check(
                "database",
                False,
                f"{vendor}: {len(pending)} migration(s) not applied (run: gpuconfig migrate)",
            )
    return Check("database", True, f"{vendor} answers")


def check_redis() -> Check:
    """Redis, the broker and live progress store (or the embedded stand-ins of `make run`)."""
    if settings.GPUCONFIG_EMBEDDED:
        return Check("redis", True, "not used: embedded broker and file cache under var/")
    import redis

    url = settings.REDIS_URL
    client = redis.Redis.from_url(
        url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return Check("redis", True, f"{_redact(url)} answers")


def check_engine() -> Check:
    """The container engine answers through the configured runtime."""

    runtime = get_runtime()
    first = service_list().values_list("name", flat=True).first()
    state = runtime.inspect(first or "gpuconfig-probe")
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    found = f"; {first} is {state.status}" if first and state else ""
    return Check("engine", True, f"{type(runtime).__name__} at {where} answers{found}")


def check_nvml() -> Check:
    """NVML loads and counts the GPUs (skipped when another backend is configured)."""
    backend = str(settings.GPUCONFIG_GPU_BACKEND or "auto").strip().lower()
    if backend not in {"auto", "nvml"} or (backend == "auto" and settings.GPUCONFIG_SIMULATED_GPUS):
        return Check("nvml", None, f"not used: GPU backend is {_backend_in_use()}")

    try:
        readings = get_backend("nvml").scan()
    except (BackendUnavailable, BackendError) as exc:
        return Check("nvml", False, str(exc))
    names = ", ".join(sorted({r.name for r in readings})) or "none"
    return Check("nvml", True, f"{len(readings)} GPU(s): {names}")


COMPOSE_TOOLS = {
    "docker-compose-v2": ["docker", "compose", "version"],
    "podman-compose": ["podman-compose", "version"],
    "docker-compose-v1": ["docker-compose", "version", "--short"],
}


def check_compose_tool() -> Check:
    """A compose tool runs (the configured one, or the first of v2, podman-compose, v1)."""
    wanted = str(getattr(settings, "GPUCONFIG_COMPOSE_TOOL", "auto") or "auto").strip()
    if wanted != "auto" and wanted not in COMPOSE_TOOLS:
        return Check("compose", False, f"unknown GPUCONFIG_COMPOSE_TOOL {wanted!r}")
    names = [wanted] if wanted != "auto" else list(COMPOSE_TOOLS)
    tried = []
    for name in names:
        command = COMPOSE_TOOLS[name]
        if shutil.which(command[0]) is None:
            tried.append(f"{name}: {command[0]} not found")
            continue
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT * 5, check=False
        )
        if result.returncode == 0:
            version = (result.stdout.strip().splitlines() or ["?"])[0]
            return _compose_stack_check(f"{name}: {version}")
        tried.append(f"{name}: exit {result.returncode}")
    return Check("compose", False, "no compose tool runs (" + "; ".join(tried) + ")")


def _compose_stack_check(found: str) -> Check:
    """The tool runs; with a base file set, the verdict is the page's and the API's own
    (``/gpu-config/compose``), so ``gpuconfig check`` never passes what they report failing."""
    if not getattr(settings, "GPUCONFIG_COMPOSE_FILE", None):
        return Check("compose", True, f"{found}; no base file set (GPUCONFIG_COMPOSE_FILE)")

    report = compose_report()
    if report["ok"]:
        return Check("compose", True, f"{found}; the stack gives each service its GPU")
    if report["error"]:
        return Check("compose", False, f"{found}; {report['error']}")
    problems = "; ".join(
        f"{r['service']}: {r['problem']}" for r in report["services"] if not r["ok"]
    )
    return Check("compose", False, f"{found}; {problems}")


def check_worker() -> Check:
    """A Celery worker beat its heart within two scan intervals, and no apply is stuck (a
    running one whose heartbeat stopped: its worker died mid-apply)."""

    beat = cache.get(HEARTBEAT_KEY)
    limit = 2 * settings.GPUCONFIG_SCAN_INTERVAL
    if not beat:
        return Check("worker", False, "no worker heartbeat (is the worker running?)")
    age = time.time() - beat["at"]
    detail = f"{beat.get('hostname') or 'worker'} beat {age:.0f} s ago"
    running = ApplyRun.objects.filter(status=ApplyRun.Status.RUNNING).first()
    stall = run_stall(running)
    if stall:
        return Check("worker", False, f"apply {running.operation_id} is stuck: {stall} ({detail})")
    return Check("worker", age < limit, detail)


def check_last_scan() -> Check:
    """The last GPU scan finished within two scan intervals, without error."""
    from datetime import datetime

    summary = last_scan()
    if not summary or not summary.get("finished_at"):
        return Check("last_scan", False, "no GPU scan has finished yet (is beat running?)")
    age = time.time() - datetime.fromisoformat(summary["finished_at"]).timestamp()
    if summary.get("error"):
        return Check("last_scan", False, f"{age:.0f} s ago, failed: {summary['error']}")
    ok = age < 2 * settings.GPUCONFIG_SCAN_INTERVAL
    return Check("last_scan", ok, f"{age:.0f} s ago, backend {summary.get('backend') or 'none'}")


# The inode of the initial PID namespace (the kernel's PROC_PID_INIT_INO): a process in it sees
# the host's PIDs, those NVML reports.
HOST_PID_NAMESPACE_INODE = 0xEFFFFFFC


def _pid_namespace_inode() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def check_pids() -> Check:
    """NVML's host PIDs can be resolved to processes and containers: the proc root
    (``GPUCONFIG_PROC_ROOT``) is readable, gpuconfig is not in a PID namespace of its own
    (when it reads its own /proc), and the last scan resolved every GPU process."""

    root = str(settings.GPUCONFIG_PROC_ROOT)
    fix = (
        "run gpuconfig with the host's PIDs (`pid: host` in compose, as deploy/compose.yml "
        "does) or mount the host's /proc and name it in GPUCONFIG_PROC_ROOT"
    )
    if not os.path.isdir(root) or not os.access(root, os.R_OK | os.X_OK):
        return Check("pids", False, f"GPU processes cannot be resolved: no {root}; {fix}")
    if os.path.realpath(root) == "/proc":
        inode = _pid_namespace_inode()
        if inode is not None and inode != HOST_PID_NAMESPACE_INODE:
            return Check(
                "pids",
                False,
                "GPU processes cannot be resolved: gpuconfig runs in a PID namespace of its "
                f"own, so NVML's host PIDs mean nothing in {root}; {fix}",
            )
    seen = (last_scan() or {}).get("processes") or {}
    unresolved, total = seen.get("unresolved", 0), seen.get("seen", 0)
    if unresolved:
        return Check(
            "pids",
            False,
            f"{unresolved} of {total} GPU process(es) at the last scan are not in {root}; {fix}",
        )
    return Check("pids", True, f"host PIDs resolve through {root} ({total} GPU process(es))")


def _backend_in_use() -> str:
    if str(settings.GPUCONFIG_GPU_BACKEND or "auto").strip().lower() == "auto":
        return "simulated" if settings.GPUCONFIG_SIMULATED_GPUS else "auto"
    return str(settings.GPUCONFIG_GPU_BACKEND)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_lint() -> Check:
    """The lint of the compose stack finds nothing that keeps an assignment from taking effect
    (each finding is printed with its fix)."""

    report = lint_report()
    if report["error"]:
        return Check("lint", False, report["error"])
    findings = report["findings"]
    if not findings:
        # Without a base file only the host's CDI specs are read: say so in a few words.
        scope = " (no base compose file set: the host's CDI specs only)" if report["notice"] else ""
        return Check("lint", True, "no finding" + scope)
    shown = "; ".join(
        f"{f['service'] or 'host'} [{f['rule']}]: {f['message']} Fix: {f['fix']}" for f in findings
    )
    return Check("lint", False, f"{len(findings)} finding(s): {shown}")


# --- the two sets --------------------------------------------------------------------------


def setup_checks() -> list[Check]:
    """What ``gpuconfig check`` reports: can this box run gpuconfig as configured?"""
    return [
        _guarded("config", check_config),
        _guarded("database", lambda: check_database(migrations=True)),
        _guarded("redis", check_redis),
        _guarded("engine", check_engine),
        _guarded("nvml", check_nvml),
        _guarded("pids", check_pids),
        _guarded("compose", check_compose_tool),
        _guarded("lint", check_lint),
    ]


def readiness_checks() -> list[Check]:
    """What ``/readyz`` reports: is the running site able to do its work now?"""
    checks = [_guarded("database", check_database), _guarded("redis", check_redis)]
    redis_up = checks[-1].ok is not False
    for name, probe in (("worker", check_worker), ("last_scan", check_last_scan)):
        # Both live in the cache: with Redis down their failure is Redis's, said once.
        checks.append(_guarded(name, probe) if redis_up else Check(name, False, "Redis is down"))
    checks.append(_guarded("engine", check_engine))
    return checks
