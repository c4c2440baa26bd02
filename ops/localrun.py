"""Ops room. ``make run``: web, worker and beat for a home box, kept up by supervisord.

The first run writes its choices into ``gpuconfig.env`` (commented), so every later process,
and any shell running the ``gpuconfig`` command, uses the same backend, Redis and database:

- Redis at ``REDIS_URL`` if one answers, else a private ``redis-server`` under ``var/redis``
  (supervised like the rest), else Celery's filesystem transport and a file cache;
- no NVIDIA GPU: the simulated reference hardware;
- a named API key in an owner-only file (``var/first-run-api-key``), for scripts and Prometheus.

supervisord restarts a process that dies (a process that keeps failing to start is retried with
a growing delay), and its log says so: one crash never takes the site down.
This module imports nothing from Django: settings are read by the processes it starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRIVATE_REDIS_PORT = 6390
FIRST_RUN_KEY = "first-run-api-key"
# Set in the environment of the first run, they are kept in the file for every later process.
CARRIED = (
    "DATABASE_URL",
    "GPUCONFIG_VAR_DIR",
    "GPUCONFIG_CONFIG_DIR",
    "GPUCONFIG_BIND",
    "GPUCONFIG_CACHE_PREFIX",
    "GPUCONFIG_SCAN_INTERVAL",
    "GPUCONFIG_COMPOSE_PROJECT",
    "GPUCONFIG_COMPOSE_FILE",
    "GPUCONFIG_CONTAINER_RUNTIME",
    "DOCKER_HOST",
    "GPUCONFIG_LOG_FORMAT",
)


def say(message: str) -> None:
    print(f"gpuconfig: {message}", flush=True)


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except (redis.RedisError, OSError, ValueError):
        return False


def nvidia_present() -> bool:
    if shutil.which("nvidia-smi"):
        return True
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False)
    except OSError:
        return False
    return "libnvidia-ml.so.1" in out.stdout


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def write_first_config(env_file: Path, var_dir: Path) -> None:
    """Decide Redis, the GPU backend and the API key once, and write them down, commented."""
    lines = [
        "# gpuconfig configuration: read by every entry point (web, worker, beat, manage.py,",
        "# the gpuconfig command, the service units). A variable set in the environment wins.",
        f"# Written by the first `make run` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC); edit freely.",
        "",
    ]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    server = os.environ.get("GPUCONFIG_REDIS_SERVER", "redis-server")
    lines.append("# Redis: the Celery broker and the live apply progress.")
    if redis_answers(redis_url):
        lines += ["# A Redis answered here on the first run.", f"REDIS_URL={redis_url}"]
    elif shutil.which(server):
        from urllib.parse import urlsplit

        # A local REDIS_URL given but not answering names the port to start one on.
        asked = urlsplit(redis_url) if "REDIS_URL" in os.environ else None
        local = asked is not None and asked.hostname in {"127.0.0.1", "localhost"}
        port = asked.port or 6379 if local else _free_port(PRIVATE_REDIS_PORT)
        lines += [
            "# No Redis answered on the first run: `make run` starts a private redis-server on",
            "# this port (data under var/redis). Point REDIS_URL elsewhere and drop",
            "# GPUCONFIG_PRIVATE_REDIS to use another Redis.",
            f"REDIS_URL=redis://127.0.0.1:{port}/0",
            "GPUCONFIG_PRIVATE_REDIS=1",
        ]
    else:
        lines += [
            "# No Redis and no redis-server binary on the first run: Celery's filesystem",
            "# transport and a file cache under var/ stand in. Set REDIS_URL and remove this",
            "# line to use Redis.",
            "GPUCONFIG_EMBEDDED=1",
        ]
    lines.append("")
    backend = os.environ.get("GPUCONFIG_GPU_BACKEND", "auto")
    simulated = os.environ.get("GPUCONFIG_SIMULATED_GPUS", "")
    lines.append(
        "# GPU detection backend: auto (NVML, then nvidia-smi), nvml, nvidia-smi, simulated."
    )
    if not simulated and backend == "auto" and not nvidia_present():
        simulated = str(ROOT / "config" / "examples" / "gpus.reference.yml")
        lines += [
            "# No NVIDIA GPU was found on the first run: the reference hardware is SIMULATED",
            "# (RTX A5500 24 GB + RTX A400 4 GB). Remove GPUCONFIG_SIMULATED_GPUS for real GPUs.",
        ]
    lines.append(f"GPUCONFIG_GPU_BACKEND={backend}")
    if simulated:
        lines.append(f"GPUCONFIG_SIMULATED_GPUS={simulated}")
    lines.append("")
    lines += [
        "# The first-run API key (X-API-Key header; a bearer token for Prometheus) is a named",
        f"# key (admin > API keys), written to {var_dir / FIRST_RUN_KEY} (owner-only).",
        "",
    ]
    carried = [f"{name}={os.environ[name]}" for name in CARRIED if os.environ.get(name)]
    if carried:
        lines += ["# Set in the environment of the first run.", *carried, ""]
    tmp = env_file.with_name(f".{env_file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, env_file)


def supervisord_conf(config: dict, var_dir: Path) -> str:
    """supervisord's configuration: the site, the worker, beat and (maybe) a private Redis."""
    gpuconfig = BIN / "gpuconfig"
    log_dir = var_dir / "log"
    sections = [
        f"""[supervisord]
nodaemon=true
logfile={log_dir / "supervisord.log"}
pidfile={var_dir / "supervisord.pid"}
childlogdir={log_dir}
umask=077

[unix_http_server]
file={var_dir / "supervisor.sock"}
chmod=0700

[supervisorctl]
serverurl=unix://{var_dir / "supervisor.sock"}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface
"""
    ]
    common = (
        "autostart=true\nautorestart=true\nstartsecs=3\nstartretries=10\n"
        "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
    )
    if config.get("GPUCONFIG_PRIVATE_REDIS") and not config.get("GPUCONFIG_EMBEDDED"):
        from urllib.parse import urlsplit

        port = urlsplit(config["REDIS_URL"]).port or 6379
        server = shutil.which(config.get("GPUCONFIG_REDIS_SERVER") or "redis-server")
        (var_dir / "redis").mkdir(mode=0o700, exist_ok=True)
        sections.append(
            f"[program:redis]\ncommand={server} --port {port} --bind 127.0.0.1 "
            f'--dir {var_dir / "redis"} --save "" --appendonly no\npriority=1\n'
            f"stdout_logfile={log_dir / 'redis.log'}\n{common}"
        )
    sections.append(
        f"[program:web]\ncommand={gpuconfig} serve\npriority=20\n"
        f"stdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\n{common}"
    )
    # A warm shutdown lets a running apply finish before the worker exits.
    sections.append(
        f"[program:worker]\ncommand={gpuconfig} worker\npriority=10\nstopwaitsecs=600\n"
        f"stdout_logfile={log_dir / 'worker.log'}\n{common}"
    )
    sections.append(
        f"[program:beat]\ncommand={gpuconfig} beat\npriority=30\n"
        f"stdout_logfile={log_dir / 'beat.log'}\n{common}"
    )
    return "\n".join(sections)


def main() -> int:
    os.umask(0o077)
    env_file = Path(os.environ.get("GPUCONFIG_ENV_FILE") or ROOT / "gpuconfig.env").absolute()
    os.environ["GPUCONFIG_ENV_FILE"] = str(env_file)
    var_dir = Path(
        os.environ.get("GPUCONFIG_VAR_DIR")
        or dotenv_values(env_file).get("GPUCONFIG_VAR_DIR")
        or ROOT / "var"
    ).absolute()
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (var_dir / "log").mkdir(mode=0o700, exist_ok=True)
    if not env_file.exists():
        write_first_config(env_file, var_dir)
        say(f"first run: wrote the configuration to {env_file} (every entry point reads it).")
    config = {**dotenv_values(env_file), **os.environ}

    if config.get("GPUCONFIG_EMBEDDED"):
        say("no Redis: using the embedded broker and file cache under var/.")
    elif config.get("GPUCONFIG_PRIVATE_REDIS"):
        say(f"starting a private redis-server for {config['REDIS_URL']} (var/redis).")
    else:
        url = config.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        state = "answers" if redis_answers(url) else "does NOT answer (the worker will retry)"
        say(f"using Redis at {url}: it {state}.")
    if config.get("GPUCONFIG_SIMULATED_GPUS") and config.get("GPUCONFIG_GPU_BACKEND", "auto") in {
        "auto",
        "simulated",
    }:
        say(f"SIMULATING the GPUs of {config['GPUCONFIG_SIMULATED_GPUS']} (see {env_file.name}).")

    gpuconfig = str(BIN / "gpuconfig")
    subprocess.run([gpuconfig, "migrate"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([gpuconfig, "manage", "ensure_admin"], check=True)
    subprocess.run(
        [gpuconfig, "manage", "create_api_key", "first-run", "--if-none"]
        + ["--file", str(var_dir / FIRST_RUN_KEY)],
        check=True,
    )

    conf = var_dir / "supervisord.conf"
    conf.write_text(supervisord_conf(config, var_dir))
    supervisor = subprocess.Popen([str(BIN / "supervisord"), "-c", str(conf)])

    def forward(signum, _frame):
        supervisor.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    say(f"web, worker and beat run under supervisord (logs: {var_dir / 'log'}).")
    say(f"open http://{config.get('GPUCONFIG_BIND', '127.0.0.1:8000')}/settings/gpu/")
    # A first scan as soon as Redis answers, so the page shows the GPUs at once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and supervisor.poll() is None:
        if config.get("GPUCONFIG_EMBEDDED") or redis_answers(config.get("REDIS_URL", "")):
            subprocess.run([gpuconfig, "detect"], check=False, stdout=subprocess.DEVNULL)
            break
        time.sleep(0.2)
    while True:
        try:
            return supervisor.wait()
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue


if __name__ == "__main__":
    sys.exit(main())
