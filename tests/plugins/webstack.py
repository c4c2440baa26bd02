"""A stack of two HTTP stand-in services on a user-defined network, and probes that ask them
every 100 ms: what the move tests and the move bench measure downtime with.

The services answer over HTTP (busybox httpd; the page is the container's hostname, so a probe
sees which copy answered). ``ai-clip`` is reached only by its network alias; ``ai-florence``
also publishes a host port. On "GPU 99" (the test engine's broken card) a copy never serves,
so it never gets healthy.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import yaml

from tests.plugins.dockerd import IMAGE, PROJECT_LABEL, SERVICE_LABEL, gpu_override

ALIASED = "ai-clip"  # reached by its alias only: make-before-break
PORTED = "ai-florence"  # publishes a host port: stop-start
# On "GPU 99" (the test engine's broken card) the copy never serves, so never gets healthy.
SERVING = (
    "trap 'exit 0' TERM; "
    "if tr '\\0' '\\n' </proc/1/environ | grep -qx NVIDIA_VISIBLE_DEVICES=99; "
    "then sleep 3600 & wait; fi; "
    "mkdir -p /www; hostname > /www/index.html; httpd -f -p 8080 -h /www & wait"
)
# One line per probe: "<seconds since boot> ok <hostname>" or "<seconds> fail". busybox nc, not
# wget: the static busybox's wget crashes on its output here.
ASK = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {host} 8080 2>/dev/null | tail -n 1"
PROBE = (
    "while true; do t=$(cut -d' ' -f1 /proc/uptime); r=$(" + ASK + "); "
    'if [ -n "$r" ]; then echo "$t ok $r"; else echo "$t fail"; fi; usleep 100000; done'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_file(network: str, port: int) -> dict:
    web = {
        "image": IMAGE,
        "command": ["sh", "-c", SERVING.replace("$", "$$")],
        "healthcheck": {
            "test": ["CMD", "sh", "-c", ASK.format(host="127.0.0.1") + " | grep -q ."],
            "interval": "1s",
            "timeout": "2s",
            "retries": 1,
        },
        "networks": ["movenet"],
        "restart": "unless-stopped",
    }
    return {
        "version": "2.4",
        "services": {ALIASED: dict(web), PORTED: {**web, "ports": [f"127.0.0.1:{port}:8080"]}},
        "networks": {"movenet": {"name": network}},
    }


class WebStack:
    """The two stand-in services under Debian's docker-compose, on a network of their own."""

    def __init__(self, directory: Path) -> None:
        self.project = f"gpumv{uuid.uuid4().hex[:8]}"
        self.network = f"gpumv-{uuid.uuid4().hex[:8]}"
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "base.yml").write_text(
            yaml.safe_dump(stack_file(self.network, _free_port()), sort_keys=False)
        )
        (self.dir / "override.yml").write_text(gpu_override({ALIASED: ("0",), PORTED: ("0",)}))
        self.api = docker.from_env().api
        self.probes: list[str] = []

    def compose(self, *args: str) -> None:
        command = ["docker-compose", "-p", self.project, "-f", "base.yml", "-f", "override.yml"]
        done = subprocess.run(
            [*command, *args], cwd=self.dir, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr

    def containers(self) -> list[dict]:
        return self.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})

    def of(self, service: str) -> list[dict]:
        return [c for c in self.containers() if c["Labels"].get(SERVICE_LABEL) == service]

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.containers()
            if len(listed) == 2 and all("(healthy)" in c["Status"] for c in listed):
                return
            time.sleep(0.2)
        raise AssertionError(f"not healthy: {[c['Status'] for c in self.containers()]}")

    def probe(self, alias: str) -> str:
        """Start a client on the network asking ``alias`` every 100 ms; returns its id."""
        name = f"{self.project}-probe-{alias}"
        created = self.api.create_container(
            IMAGE,
            ["sh", "-c", PROBE.format(host=alias)],
            name=name,
            host_config=self.api.create_host_config(network_mode=self.network),
        )
        self.api.start(created["Id"])
        self.probes.append(created["Id"])
        return created["Id"]

    def answers(self, probe_id: str) -> list[tuple[float, str]]:
        """(seconds, "ok <hostname>" or "fail") per probe so far."""
        out = []
        for line in self.api.logs(probe_id, stderr=False).decode().splitlines():
            t, _, rest = line.partition(" ")
            out.append((float(t), rest))
        return out

    def ask(self, alias: str) -> str:
        """One answer from ``alias`` through a probe container (empty: none)."""
        probe = self.probes[0]
        exec_id = self.api.exec_create(probe, ["sh", "-c", ASK.format(host=alias)])
        return self.api.exec_start(exec_id).decode().strip()

    def remove(self) -> None:
        for probe in self.probes:
            self.api.remove_container(probe, force=True)
        subprocess.run(
            ["docker-compose", "-p", self.project, "-f", "base.yml", "-f", "override.yml"]
            + ["down", "-v", "--timeout", "1"],
            cwd=self.dir,
            capture_output=True,
            timeout=180,
        )
        for listed in self.containers():  # copies left by a failed test
            self.api.remove_container(listed["Id"], force=True)
        try:
            self.api.remove_network(self.network)
        except docker.errors.APIError:
            pass
        self.api.close()


def gaps(answers: list[tuple[float, str]]) -> tuple[int, float]:
    """Failed probes, and the longest run of them in seconds (first failure to next answer)."""
    failed = sum(1 for _, r in answers if r == "fail")
    longest, since = 0.0, None
    for t, r in answers:
        if r == "fail":
            since = t if since is None else since
        elif since is not None:
            longest, since = max(longest, t - since), None
    return failed, longest


@contextlib.contextmanager
def running_web_stack(directory: Path) -> Iterator[WebStack]:
    """The two services up and healthy on GPU 0; everything removed on exit."""
    stack = WebStack(directory)
    try:
        stack.compose("up", "-d")
        stack.wait_healthy()
        yield stack
    finally:
        stack.remove()
