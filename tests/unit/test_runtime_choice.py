"""Choosing the container runtime: ``auto`` asks the socket, Podman's socket is looked for in
the documented order, and an engine that cannot be reached is a 503 naming where it was
looked for, in order. (Which engine answers a live socket is checked against both real engines
in tests/integration/test_apply_worker.py.)"""

from __future__ import annotations

import socket

import pytest
from django.core.exceptions import ImproperlyConfigured

from applies.runtime import get_runtime
from applies.runtime.base import RuntimeUnavailable
from applies.runtime.podman import PodmanRuntime


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    """No engine anywhere: every place the runtimes look at is a missing socket."""
    for name in ("CONTAINER_HOST", "DOCKER_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run-user"))
    monkeypatch.setattr("applies.runtime.sockets.PODMAN_ROOTFUL", str(tmp_path / "rootful.sock"))
    monkeypatch.setattr("applies.runtime.sockets.DOCKER_DEFAULT", str(tmp_path / "docker.sock"))
    return tmp_path


def test_auto_names_every_place_it_tried_in_order(
    no_engine, settings, reference_inventory, staff_client
):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "auto"

    with pytest.raises(RuntimeUnavailable) as caught:
        get_runtime()
    live = staff_client.get("/api/system/gpu-config/services").json()

    message = str(caught.value)
    places = [
        str(no_engine / "run-user" / "podman" / "podman.sock"),
        str(no_engine / "rootful.sock"),
        str(no_engine / "docker.sock"),
    ]
    assert "GPUCONFIG_CONTAINER_RUNTIME=auto" in message
    assert [message.index(p) for p in places] == sorted(message.index(p) for p in places)
    assert {(s["status"], s["runtime"], s["error"]) for s in live["services"]} == {
        ("unknown", None, message)
    }


def test_a_socket_the_user_set_is_not_guessed_past(no_engine, settings, monkeypatch):
    """CONTAINER_HOST set to a dead socket: that is the error, even with DOCKER_HOST set."""
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{no_engine / 'podman.sock'}")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{no_engine / 'other.sock'}")
    settings.GPUCONFIG_CONTAINER_RUNTIME = "podman"

    with pytest.raises(RuntimeUnavailable) as caught:
        get_runtime().inspect("ai-llm")

    message = str(caught.value)
    assert f"unix://{no_engine / 'podman.sock'} (CONTAINER_HOST): no socket at" in message
    assert "other.sock" not in message and "rootful" not in message
    assert "no Podman engine answers" in message


def test_docker_host_is_podmans_second_choice(no_engine, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{no_engine / 'podman.sock'}")

    with pytest.raises(RuntimeUnavailable, match=r"podman\.sock \(DOCKER_HOST\)"):
        PodmanRuntime().recover()


def test_a_tcp_socket_that_does_not_answer_is_reported(no_engine, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CONTAINER_HOST", f"tcp://127.0.0.1:{port}")

    with pytest.raises(
        RuntimeUnavailable, match=rf"tcp://127.0.0.1:{port} \(CONTAINER_HOST\): no answer"
    ):
        PodmanRuntime().inspect("ai-llm")


def test_an_unknown_runtime_name_is_a_configuration_error(settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "lxc"

    with pytest.raises(ImproperlyConfigured, match="known: auto, docker, podman"):
        get_runtime()


def test_apply_without_an_engine_is_a_503_naming_the_places(
    no_engine, reference_inventory, staff_client, settings, monkeypatch
):
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{no_engine / 'podman.sock'}")
    settings.GPUCONFIG_CONTAINER_RUNTIME = "podman"

    res = staff_client.post("/api/system/gpu-config/apply")

    assert res.status_code == 503
    assert "CONTAINER_HOST" in res.json()["detail"]
    live = staff_client.get("/api/system/gpu-config/services").json()
    assert {(s["status"], s["runtime"]) for s in live["services"]} == {("unknown", "podman")}
    assert "CONTAINER_HOST" in live["services"][0]["error"]
