"""The engine-backed stack, once per engine: a test that takes ``engine_stack`` runs against the
Docker engine under docker-compose and against Podman under podman-compose, so both runtimes
go through the same scenarios. ``engine_stack_shared`` does the same with one stack per engine
and module, for tests that only read it."""

from __future__ import annotations

import pytest
import yaml


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


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("podman", marks=pytest.mark.podman),
    ]
)
def engine_stack_shared(request):
    """``engine_stack`` for tests that only read it: one stack per engine and module
    (``compose_stack_shared``, ``podman_stack_shared``)."""
    return request.getfixturevalue(
        "compose_stack_shared" if request.param == "docker" else "podman_stack_shared"
    )


BROKEN = {  # a third card the test engine treats as broken: containers on it never get healthy
    "index": 99,
    "name": "Broken test card",
    "uuid": "GPU-broken-99",
    "vram_total_mb": 49152,
    "vram_used_mb": 0,
    "compute_capability": "8.6",
}


def stack_on_gpu0(stack, simulated_gpus, settings, staff_user):
    """The reference hardware (plus the broken card) scanned, ``stack``'s project managed,
    everything on GPU 0 saved as the current configuration; returns the stack and a staff
    API client."""
    from rest_framework.test import APIClient

    from assignments.services import config_save
    from gpus.services import gpu_scan_run
    from tests.conftest import REFERENCE_GPUS
    from tests.plugins.dockerd import SERVICES

    entries = yaml.safe_load(REFERENCE_GPUS.read_text()) + [BROKEN]
    simulated_gpus.write_text(yaml.safe_dump(entries))
    settings.GPUCONFIG_COMPOSE_PROJECT = stack.project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 30
    gpu_scan_run()
    config_save(strategy="manual", assignments=[{"service": s, "gpu_index": 0} for s in SERVICES])
    client = APIClient()
    client.force_authenticate(staff_user)
    return stack, client


@pytest.fixture
def docker_box(compose_stack, simulated_gpus, settings, staff_user, live_db):
    """The Docker engine's stack on GPU 0 (see ``stack_on_gpu0``)."""
    return stack_on_gpu0(compose_stack, simulated_gpus, settings, staff_user)
