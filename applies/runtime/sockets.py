"""Applies room. Where a container engine is looked for, and which engine answers there.

Podman's socket comes from ``CONTAINER_HOST``, then ``DOCKER_HOST``, then the rootless
``$XDG_RUNTIME_DIR/podman/podman.sock``, then the rootful ``/run/podman/podman.sock``; ``auto``
also looks at Docker's default socket last. A variable that is set is where the user said the
engine is: nothing past it is guessed. The default paths are tried in order until one answers.
Both ``unix://`` and ``tcp://`` URLs work. An engine says it is Podman by a component named
"Podman Engine" in its Docker-compatible ``/version``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from .base import RuntimeUnavailable

DOCKER = "docker"
PODMAN = "podman"
DISPLAY = {DOCKER: "Docker", PODMAN: "Podman"}
PODMAN_COMPONENT = "Podman Engine"
PODMAN_ROOTFUL = "/run/podman/podman.sock"
DOCKER_DEFAULT = "/var/run/docker.sock"
PROBE_TIMEOUT = 5.0
PROBE_API_VERSION = "1.41"  # both engines serve it; fixed so building the client asks nothing


@dataclass(frozen=True, slots=True)
class Candidate:
    """A place an engine may answer: its URL, where that came from, and whether the user set it."""

    url: str
    source: str
    explicit: bool

    def __str__(self) -> str:
        return f"{self.url} ({self.source})"


class NoAnswer(Exception):
    """Nothing usable answers at a candidate; the message says what happened."""


def _from_env(name: str) -> Candidate | None:
    value = os.environ.get(name, "").strip()
    return Candidate(value, name, explicit=True) if value else None


def podman_candidates() -> list[Candidate]:
    """Where the Podman runtime looks for its socket, in order."""
    found = [_from_env("CONTAINER_HOST"), _from_env("DOCKER_HOST")]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime_dir:
        rootless = os.path.join(runtime_dir, "podman", "podman.sock")
        found.append(Candidate(f"unix://{rootless}", "rootless, $XDG_RUNTIME_DIR", explicit=False))
    found.append(Candidate(f"unix://{PODMAN_ROOTFUL}", "rootful default", explicit=False))
    return [c for c in found if c is not None]


def auto_candidates() -> list[Candidate]:
    """Where ``auto`` looks for an engine, in order: Podman's places, then Docker's default."""
    return [*podman_candidates(), Candidate(f"unix://{DOCKER_DEFAULT}", "Docker's default", False)]


def identify(url: str, *, timeout: float = PROBE_TIMEOUT) -> str:
    """Which engine answers at ``url``: ``podman`` or ``docker``; ``NoAnswer`` when none does."""
    if url.startswith("unix://") and not os.path.exists(url[len("unix://") :]):
        raise NoAnswer(f"no socket at {url[len('unix://') :]}")
    try:
        client = docker.APIClient(base_url=url, version=PROBE_API_VERSION, timeout=timeout)
    except (docker.errors.DockerException, ValueError) as exc:
        raise NoAnswer(f"not an engine URL: {exc}") from exc
    try:
        info = client.version(api_version=False)
    except docker.errors.APIError as exc:
        raise NoAnswer(f"not a container engine: {exc.explanation or exc}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise NoAnswer(f"no answer: {exc}") from exc
    finally:
        client.close()
    components = info.get("Components") or []
    return PODMAN if any(c.get("Name") == PODMAN_COMPONENT for c in components) else DOCKER


def resolve(
    candidates: list[Candidate], *, want: str | None, setting: str
) -> tuple[Candidate, str]:
    """The first candidate where an engine (of kind ``want``, when given) answers, and its kind.

    ``RuntimeUnavailable`` names every place tried, in order, with what happened there.
    """
    tried: list[str] = []
    for candidate in candidates:
        try:
            kind = identify(candidate.url)
        except NoAnswer as exc:
            tried.append(f"{candidate}: {exc}")
        else:
            if want is None or kind == want:
                return candidate, kind
            tried.append(
                f"{candidate}: a {DISPLAY[kind]} engine answers there, not {DISPLAY[want]}"
            )
        if candidate.explicit:
            break
    what = f"{DISPLAY[want]} engine" if want else "container engine"
    raise RuntimeUnavailable(
        f"no {what} answers (GPUCONFIG_CONTAINER_RUNTIME={setting}); tried, in order: "
        + "; ".join(tried)
    )
