"""The cached GPU inventory read (``GET /api/system/gpus``): served from the cache while nothing
changed, and never stale after a scan, a GPU edit or a removed GPU."""

from __future__ import annotations

import os
import threading

import pytest
import redis
import yaml
from django.conf import settings
from rest_framework.renderers import JSONRenderer

from gpus.api.views import _inventory_payload
from gpus.models import Gpu
from gpus.services import gpu_scan_run

pytestmark = pytest.mark.django_db

URL = "/api/system/gpus"


def _gpus(client) -> dict[int, dict]:
    return {g["index"]: g for g in client.get(URL).json()["gpus"]}


def test_an_unchanged_inventory_is_answered_from_the_cache(
    staff_client, reference_inventory, django_assert_num_queries
):
    first = staff_client.get(URL).json()
    with django_assert_num_queries(0):
        again = staff_client.get(URL).json()
    assert again == first


def test_a_scan_is_visible_on_the_next_read(staff_client, reference_inventory):
    assert _gpus(staff_client)[0]["vram_used_mb"] != 12345
    entries = yaml.safe_load(reference_inventory.read_text())
    next(e for e in entries if e["index"] == 0)["vram_used_mb"] = 12345
    reference_inventory.write_text(yaml.safe_dump(entries))
    gpu_scan_run()
    assert _gpus(staff_client)[0]["vram_used_mb"] == 12345


def test_a_gpu_edit_is_visible_on_the_next_read(staff_client, reference_inventory):
    assert _gpus(staff_client)[1]["name"] == "NVIDIA RTX A400"
    gpu = Gpu.objects.get(index=1)
    gpu.name = "Renamed card"
    gpu.save()
    assert _gpus(staff_client)[1]["name"] == "Renamed card"


def test_a_removed_gpu_is_gone_on_the_next_read(staff_client, reference_inventory):
    assert set(_gpus(staff_client)) == {0, 1}
    Gpu.objects.filter(index=1).first().delete()
    assert set(_gpus(staff_client)) == {0}


def test_a_save_moves_the_version_again_at_commit(
    staff_client, reference_inventory, django_capture_on_commit_callbacks
):
    """The version moves at the save and again at the commit: a read between the two cannot
    keep the old rows under the new version."""
    staff_client.get(URL)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        gpu = Gpu.objects.get(index=0)
        gpu.name = "Mid-commit"
        gpu.save()
    assert callbacks, "the save schedules a second bump at commit"
    assert _gpus(staff_client)[0]["name"] == "Mid-commit"


def test_the_redis_cache_keeps_one_client_per_pool_and_thread():
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)
    assert cache._cache.get_client() is client
    cache.set("read-cache-test", {"a": 1}, 5)
    assert cache.get("read-cache-test") == {"a": 1}

    # Another thread gets its own client, on a connection of its own.
    other: list = []
    thread = threading.Thread(target=lambda: other.append(cache._cache.get_client()))
    thread.start()
    thread.join()
    assert other[0] is not client
    assert other[0].connection is not client.connection


def test_a_cache_connection_closed_by_redis_is_made_again():
    """The kept connection is a connection like the pool's: one Redis drops (a restart, a
    CLIENT KILL, a timeout) is made again by the next command, and the read answers."""
    from django.core.cache import cache

    cache.set("read-cache-kill", 7, 30)
    client = cache._cache.get_client()
    own_id = client.client_id()
    other = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    assert other.client_kill_filter(_id=own_id) == 1
    assert cache.get("read-cache-kill") == 7
    assert cache._cache.get_client().client_id() != own_id


def test_a_redis_that_is_down_is_tried_once_per_read(monkeypatch):
    """While Redis does not answer, a read fails after one connection attempt (one connect
    timeout), as with the pool: the check before a command leaves a closed connection to the
    command's own connect."""
    from django.core.cache import cache

    connection = cache._cache.get_client().connection
    connection.disconnect()
    attempts = []

    def refused():
        attempts.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(connection, "_connect", refused)
    with pytest.raises(redis.ConnectionError):
        cache.get("read-cache-down")
    assert len(attempts) == 1


def test_a_forked_process_reads_the_cache_on_a_connection_of_its_own():
    """A forked child (a Celery worker, a gunicorn worker) never uses its parent's socket: the
    two answers would interleave on it. The child reads on a new connection, and the parent's
    connection still answers the parent afterwards."""
    from django.core.cache import cache

    cache.set("read-cache-fork", "parent", 30)
    parent_id = cache._cache.get_client().client_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection's id and its read, then leave at once
        try:
            child = cache._cache.get_client()
            os.write(write, f"{child.client_id()} {cache.get('read-cache-fork')}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_id, value = os.read(read, 200).decode().split()
    os.close(read)
    assert status == 0
    assert int(child_id) != parent_id
    assert value == "parent"
    assert cache._cache.get_client().client_id() == parent_id
    assert cache.get("read-cache-fork") == "parent"


def test_the_inventory_is_kept_rendered_as_drf_renders_it(key_client, reference_inventory):
    """The JSON answer is the bytes DRF's renderer writes for the payload, kept rendered; a
    browser asking for HTML still gets the browsable API over the same payload."""
    answer = key_client.get(URL)
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/json"
    assert answer.content == JSONRenderer().render(_inventory_payload())
    assert "Accept" in answer["Vary"]

    page = key_client.get(URL, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    assert "NVIDIA RTX A400" in page.content.decode()


def test_the_cards_show_a_new_sample_on_the_next_read(reference_inventory):
    from front.panels import gpu_cards

    before = gpu_cards()["cards"][0].sparkline.count
    gpu_scan_run()
    assert gpu_cards()["cards"][0].sparkline.count == before + 1


def test_the_cards_are_kept_no_longer_than_their_oldest_sample_is_shown(
    settings, reference_inventory
):
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    from front.panels import gpu_cards
    from front.panels.cards import _cards_ttl
    from gpus.models import GpuSample

    gpu = Gpu.objects.get(index=0)
    edge = timezone.now() - timedelta(seconds=settings.GPUCONFIG_SAMPLE_RETENTION - 3)
    GpuSample.objects.create(gpu=gpu, taken_at=edge, utilization_percent=1, vram_used_mb=1)
    cards = gpu_cards()
    assert cards["oldest_sample_at"] == edge
    assert 0 < _cards_ttl(cards) <= 3
    key = next(k for k in cache._cache.get_client().keys("*gpus:read:cards"))
    assert cache._cache.get_client().ttl(key) <= 3


def test_the_status_strip_counts_a_lost_gpu_on_the_next_read(reference_inventory):
    from front.panels import status_strip

    strip = status_strip(problem_count=0)
    assert (strip.gpus_present, strip.gpus_lost) == (2, 0)
    gpu = Gpu.objects.get(index=1)
    gpu.available = False
    gpu.save()
    strip = status_strip(problem_count=0)
    assert (strip.gpus_present, strip.gpus_lost) == (1, 1)


def test_the_page_shows_a_scanned_change_on_the_next_render(
    client, staff_user, reference_inventory
):
    client.force_login(staff_user)
    assert "Renamed by a scan" not in client.get("/settings/gpu/").content.decode()
    entries = yaml.safe_load(reference_inventory.read_text())
    next(e for e in entries if e["index"] == 1)["name"] = "Renamed by a scan"
    reference_inventory.write_text(yaml.safe_dump(entries))
    gpu_scan_run()
    assert "Renamed by a scan" in client.get("/settings/gpu/").content.decode()
    assert "Renamed by a scan" in client.get("/settings/gpu/cards/").content.decode()
