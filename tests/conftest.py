"""Shared fixtures: an isolated config folder and cache per test, the simulated reference
hardware, API clients with each kind of identity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from django.core.cache import cache
from rest_framework.test import APIClient

from gpuconfig_site.celery import app as celery_app

pytest_plugins = [
    "tests.plugins.nvml",
    "tests.plugins.dockerd",
    "tests.plugins.podman",
    "tests.plugins.celery_worker",
    "tests.plugins.rabbitmq",
]

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_GPUS = FIXTURES / "simulated" / "reference.yml"
API_KEY = "test-key-0123456789"


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, request):
    """Every test writes its generated files to its own folder and starts with an empty cache;
    Celery tasks run inline unless a test asks for the real worker."""
    settings.GPUCONFIG_CONFIG_DIR = tmp_path / "config"
    settings.GPUCONFIG_SIMULATED_GPUS = None
    settings.GPUCONFIG_GPU_BACKEND = "simulated"
    settings.GPUCONFIG_API_KEY = API_KEY
    settings.GPUCONFIG_DETECT_WAIT = 5
    cache.clear()
    eager = not {"real_worker", "celery_worker_factory"} & set(request.fixturenames)
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    yield
    celery_app.conf.task_always_eager = previous


def reference_uuid(index: int) -> str:
    """The UUID of the reference hardware's GPU ``index``, as the fixture file gives it."""
    entries = yaml.safe_load(REFERENCE_GPUS.read_text())
    return next(e["uuid"] for e in entries if e["index"] == index)


@pytest.fixture
def simulated_gpus(settings, tmp_path):
    """A writable copy of the reference hardware (RTX A5500 24 GB + RTX A400 4 GB) that the
    simulated backend reads at every scan; returns its path."""
    path = tmp_path / "gpus.yml"
    path.write_text(REFERENCE_GPUS.read_text())
    settings.GPUCONFIG_SIMULATED_GPUS = str(path)
    settings.GPUCONFIG_GPU_BACKEND = "simulated"
    return path


@pytest.fixture
def reference_inventory(db, simulated_gpus):
    """The reference hardware scanned into the database, with the user guide's starting layout:
    every service on GPU 0 except ai-enrichment, alone on the 4 GB GPU at its default budget.

    The layout is set here rather than left to the first scan's plan, so that tests of the
    page, the API and applying do not change when the planner's choices do.
    """
    from gpus.services import gpu_scan_run

    summary = gpu_scan_run()
    assert summary["backend"] == "simulated", summary
    guide_layout()
    return simulated_gpus


def guide_layout() -> None:
    """Put the saved assignments in the user guide's starting layout: every service on GPU 0
    except ai-enrichment, alone on GPU 1 at its default budget (over capacity on both GPUs)."""
    from assignments.models import Assignment
    from gpus.models import Gpu

    gpus = {g.index: g for g in Gpu.objects.all()}
    for assignment in Assignment.objects.select_related("service"):
        gpu = gpus[1 if assignment.service.name == "ai-enrichment" else 0]
        Assignment.objects.filter(pk=assignment.pk).update(
            gpu_index=gpu.index, gpu_uuid=gpu.uuid, vram_budget_override=None
        )


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("viewer", password="pw-viewer-123")


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def viewer_client(plain_user):
    client = APIClient()
    client.force_authenticate(plain_user)
    return client


@pytest.fixture
def key_client():
    return APIClient(headers={"X-API-Key": API_KEY})


@pytest.fixture
def anon_client():
    return APIClient()


def config_files(settings) -> dict[str, str | None]:
    """The generated files' contents (None when missing)."""
    out = {}
    for name in ("docker-compose.gpu-override.yml", "gpu-assignments.yml"):
        path = Path(settings.GPUCONFIG_CONFIG_DIR) / name
        out[name] = path.read_text() if path.exists() else None
    return out


def saved_state(settings) -> tuple:
    """Everything a save may change: the strategy, the assignments, the versions, the generated
    files and what else lies in their folder (temp files). Equal before and after: nothing
    changed."""
    from assignments.models import Assignment, ConfigVersion, GpuConfig

    folder = Path(settings.GPUCONFIG_CONFIG_DIR)
    return (
        GpuConfig.load().strategy,
        sorted(
            Assignment.objects.values_list("service__name", "gpu_index", "vram_budget_override")
        ),
        ConfigVersion.objects.count(),
        config_files(settings),
        sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None,
    )


def seed_catalog() -> None:
    """Put the seeded service catalog back (transactional tests flush every table)."""
    import importlib

    from django.apps import apps

    # Every data migration that fills the catalog, in order (the minimum budgets came later).
    for migration in ("0002_seed_catalog", "0004_aiservice_min_budget"):
        importlib.import_module(f"assignments.migrations.{migration}").seed(apps, None)


@pytest.fixture
def live_db(transactional_db):
    """A committed database other processes (a worker, a browser's server) can see, with the
    catalog in place."""
    seed_catalog()


def wait_for(predicate, timeout=30.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# Markers follow folders: unit/ and api/ are the fast tier; integration/ talks to real engines,
# workers and tools; e2e/ drives a browser. A test's folder is the one place that decides it,
# so `make test-fast` (-m "not integration and not e2e") never skips a pure test.
FOLDER_MARKERS = {"integration": ("integration",), "e2e": ("e2e",)}
# Tests run once in `make test`, not again on the second database.
ONCE_PER_SUITE = {"test_chaos.py": "chaos"}


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            parts = Path(item.fspath).relative_to(tests_dir).parts
        except ValueError:
            continue
        for name in FOLDER_MARKERS.get(parts[0], ()):
            item.add_marker(getattr(pytest.mark, name))
        if parts[-1] in ONCE_PER_SUITE:
            item.add_marker(getattr(pytest.mark, ONCE_PER_SUITE[parts[-1]]))
