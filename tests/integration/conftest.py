"""The engine-backed stack, once per engine: a test that takes ``engine_stack`` runs against the
Docker engine under docker-compose and against Podman under podman-compose, so both runtimes
go through the same scenarios."""

from __future__ import annotations

import pytest


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("podman", marks=pytest.mark.podman),
    ]
)
def engine_stack(request):
    """The five services up and healthy on GPU 0 on one engine (``.engine`` says which), with
    that engine's socket in the environment where ``auto`` looks first."""
    return request.getfixturevalue("compose_stack" if request.param == "docker" else "podman_stack")
