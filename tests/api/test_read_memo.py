"""Cache reads shared within one page render (``gpuconfig_site.read_memo``): the entries the
page's parts read again and again cost one round trip to Redis, a write in the render is read
back, and outside a render every read goes to Redis."""

from __future__ import annotations

import pytest
import redis.client
from django.core.cache import cache
from django.test import Client

from applies.live import LIVE_KEY, live_cached, live_refresh
from gpuconfig_site.read_memo import SHARED_KEYS, cache_read, forget, reads_shared
from gpuconfig_site.redis_health import PING_KEY
from gpus.selectors import LAST_SCAN_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def round_trips(monkeypatch):
    """The commands sent to Redis, each as its name followed by its arguments."""
    calls: list[str] = []
    execute = redis.client.Redis.execute_command

    def counted(self, *args, **kwargs):
        calls.append(" ".join(map(str, args)))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Redis, "execute_command", counted)
    return calls


def _names(calls: list[str]) -> list[str]:
    return [c.split()[0] for c in calls]


def test_shared_entries_are_read_once_per_render(round_trips):
    cache.set(LIVE_KEY, {"checked_at": 1.0})
    cache.set(LAST_SCAN_KEY, {"seq": 3})
    round_trips.clear()
    with reads_shared():
        for _ in range(3):
            assert cache_read(LIVE_KEY) == {"checked_at": 1.0}
            assert cache_read(LAST_SCAN_KEY) == {"seq": 3}
    assert _names(round_trips) == ["MGET"]


def test_outside_a_render_every_read_goes_to_redis(round_trips):
    cache.set(LIVE_KEY, {"checked_at": 1.0})
    round_trips.clear()
    for _ in range(3):
        cache_read(LIVE_KEY)
    assert _names(round_trips) == ["GET"] * 3


def test_a_write_in_the_render_is_read_back(settings, reference_inventory):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "tests.api.test_service_state_reads.OnGpuZeroRuntime"
    with reads_shared():
        assert live_cached() is None
        live_refresh()  # stores the engine's answer (as an inline refresh does)
        assert live_cached()["containers"]["ai-llm"]["status"] == "running"
        cache.set(LAST_SCAN_KEY, {"seq": 9})
        forget(LAST_SCAN_KEY)
        assert cache_read(LAST_SCAN_KEY) == {"seq": 9}


def test_renders_do_not_share_their_reads(round_trips):
    cache.set(LIVE_KEY, {"checked_at": 1.0})
    with reads_shared():
        assert cache_read(LIVE_KEY) == {"checked_at": 1.0}
    cache.set(LIVE_KEY, {"checked_at": 2.0})
    with reads_shared():
        assert cache_read(LIVE_KEY) == {"checked_at": 2.0}


def test_the_page_reads_each_shared_entry_once(staff_user, reference_inventory, round_trips):
    client = Client()
    client.force_login(staff_user)
    client.get("/settings/gpu/")
    round_trips.clear()
    assert client.get("/settings/gpu/").status_code == 200
    shared = [c for c in round_trips if c.startswith("MGET ") and f":{PING_KEY}" in c]
    assert len(shared) == 1, round_trips
    for key in SHARED_KEYS:
        assert f":{key}" in shared[0]
        assert not [c for c in round_trips if c.startswith("GET ") and c.endswith(f":{key}")]


def test_a_key_read_of_the_gpus_costs_one_round_trip(key_client, reference_inventory, round_trips):
    """The lockout check of the key and the inventory are fetched together (the request before
    taught which entries the path reads)."""
    key_client.get("/api/system/gpus")
    round_trips.clear()
    assert key_client.get("/api/system/gpus").status_code == 200
    assert _names(round_trips) == ["MGET"], round_trips
    assert "axes:failed:" in round_trips[0]


def test_an_unchanged_page_costs_one_round_trip(staff_user, reference_inventory, round_trips):
    client = Client()
    client.force_login(staff_user)
    client.get("/settings/gpu/")
    client.get("/settings/gpu/")
    round_trips.clear()
    assert client.get("/settings/gpu/").status_code == 200
    assert _names(round_trips) == ["MGET"], round_trips


def test_a_failure_noted_in_the_request_is_read_back(round_trips):
    """A write in the request (``forget``) sends the next read of it to Redis again."""
    cache.delete("read-memo-test")
    with reads_shared("a-path"):
        assert cache_read("read-memo-test") is None
        cache.set("read-memo-test", 1)
        forget("read-memo-test")
        assert cache_read("read-memo-test") == 1
