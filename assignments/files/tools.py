"""Generated files room. The compose tools gpuconfig knows: how to find them, and how to run their
``config``.

``docker-compose-v2`` is ``docker compose`` (the CLI plugin) or a standalone ``docker-compose``
that reports version 2 or later; ``podman-compose``; ``docker-compose-v1`` is the Python
``docker-compose`` 1.x. Every call runs with a timeout and never raises for a tool that is
missing or fails: detection returns None, running raises ``ComposeToolError`` with its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuconfig_site.errors import ApplicationError, echo

V2 = "docker-compose-v2"
PODMAN = "podman-compose"
V1 = "docker-compose-v1"
KINDS = (V2, PODMAN, V1)
AUTO = "auto"
DETECT_TIMEOUT = 10.0
DETECT_TTL = 60.0

_CANDIDATES: dict[str, tuple[tuple[str, ...], ...]] = {
    V2: (("docker", "compose"), ("docker-compose",)),
    PODMAN: (("podman-compose",),),
    V1: (("docker-compose",),),
}
_VERSION = re.compile(r"version\s+v?(\d+(?:\.\d+)+)", re.IGNORECASE)


class ComposeToolError(Exception):
    """A compose tool failed or timed out; the message carries its output."""


class UnknownTool(ApplicationError):
    """A tool name that is not one of ``KINDS`` (or ``auto``)."""

    code = "unknown_tool"


@dataclass(frozen=True)
class ComposeTool:
    """One installed compose tool: its kind, the argv that runs it, its version."""

    name: str
    argv: tuple[str, ...]
    version: str

    @property
    def supports_override_tag(self) -> bool:
        """``!override`` (Compose v2.24 and later)."""
        return self.name == V2

    @property
    def supports_reset_tag(self) -> bool:
        return self.name in (V2, PODMAN)

    @property
    def display(self) -> str:
        return " ".join(Path(self.argv[0]).name if i == 0 else a for i, a in enumerate(self.argv))

    def command(
        self,
        args: Sequence[str],
        *,
        files: Sequence[Path],
        project: str | None = None,
        env_file: Path | None = None,
        profiles: Sequence[str] = (),
        display: bool = False,
    ) -> list[str]:
        """The argv for ``args`` on these files (``display``: the tool as a user types it)."""
        argv = self.display.split() if display else list(self.argv)
        if project:
            argv += ["-p", project]
        for profile in profiles:
            argv += ["--profile", profile]
        for path in files:
            argv += ["-f", str(path)]
        if env_file is not None:
            argv += ["--env-file", str(env_file)]
        return [*argv, *args]

    def run(
        self, args: Sequence[str], *, cwd: Path, timeout: float, **command_kwargs
    ) -> subprocess.CompletedProcess[str]:
        argv = self.command(args, **command_kwargs)
        try:
            done = subprocess.run(
                argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeToolError(f"{' '.join(argv)} did not finish within {timeout:g}s") from exc
        except OSError as exc:
            raise ComposeToolError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise ComposeToolError(f"{self.display} config failed ({done.returncode}): {output}")
        return done

    def _podman_hashes(self, *, cwd: Path, timeout: float, **command_kwargs) -> dict[str, str]:
        return _podman_hashes_of(self, cwd=cwd, timeout=timeout, **command_kwargs)

    def config_hashes(self, *, cwd: Path, timeout: float, **command_kwargs) -> dict[str, str]:
        """Each service's config hash as this tool computes it: Compose v2's
        ``config --hash``; podman-compose's own (``io.podman.compose.config-hash``, from its
        module, run by its interpreter). docker-compose 1.29 records none: nothing is returned."""
        if self.name == PODMAN:
            return self._podman_hashes(cwd=cwd, timeout=timeout, **command_kwargs)
        if self.name != V2:
            return {}
        done = self.run(["config", "--hash", "*"], cwd=cwd, timeout=timeout, **command_kwargs)
        hashes = {}
        for line in done.stdout.splitlines():
            service, _, digest = line.strip().partition(" ")
            if service and digest:
                hashes[service] = digest.strip()
        return hashes


# podman-compose compares this hash with the label on the container at `up`: computed by its own
# code, so that a container gpuconfig recreated is not recreated again.
_PODMAN_HASHES = """
import json, sys
import podman_compose as pc
c = pc.podman_compose
c._parse_args(sys.argv[1:])
c._parse_compose_file()
print(json.dumps({n: c.config_hash(s) for n, s in c.services.items()}))
"""


def _podman_hashes_of(tool: ComposeTool, *, cwd: Path, timeout: float, **kwargs) -> dict:
    try:
        shebang = Path(tool.argv[0]).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return {}
    interpreter = shebang.removeprefix("#!").strip().split()
    if not shebang.startswith("#!") or "python" not in " ".join(interpreter):
        return {}
    argv = [*interpreter, "-c", _PODMAN_HASHES, *tool.command(["config"], **kwargs)[1:]]
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
        hashes = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return {str(k): str(v) for k, v in hashes.items()} if isinstance(hashes, dict) else {}


def _version_of(argv: tuple[str, ...]) -> str | None:
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *argv[1:], "version"],
            capture_output=True,
            text=True,
            timeout=DETECT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    match = _VERSION.search(done.stdout)
    return match.group(1) if match else None


def _kind_of(argv: tuple[str, ...], version: str) -> str:
    if argv[0] == "podman-compose":
        return PODMAN
    if argv == ("docker", "compose"):
        return V2
    return V2 if int(version.split(".")[0]) >= 2 else V1


_cache: dict[tuple, tuple[float, ComposeTool | None]] = {}
_cache_lock = threading.Lock()


def tool_detect(choice: str = AUTO) -> ComposeTool | None:
    """The installed tool of kind ``choice`` (``auto``: the first of v2, podman-compose, v1
    found), or None. Results are kept for a minute per PATH."""
    if choice != AUTO and choice not in KINDS:
        raise UnknownTool(
            f"Unknown compose tool {echo(choice)}; expected one of: {', '.join((AUTO, *KINDS))}.",
            field="tool",
        )
    key = (choice, os.environ.get("PATH", ""), os.environ.get("DOCKER_CONFIG", ""))
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
    found = None
    for kind in KINDS if choice == AUTO else (choice,):
        for argv in _CANDIDATES[kind]:
            version = _version_of(argv)
            if version and _kind_of(argv, version) == kind:
                found = ComposeTool(kind, (shutil.which(argv[0]) or argv[0], *argv[1:]), version)
                break
        if found:
            break
    with _cache_lock:
        _cache[key] = (time.monotonic() + DETECT_TTL, found)
    return found


def tool_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
