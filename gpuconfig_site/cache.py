"""Django's Redis cache, keeping its Redis clients.

Django's ``RedisCacheClient`` builds a new ``redis.Redis`` for every cache call, and with it
the client's table of response callbacks: a measurable part of a page that makes a dozen
cache calls. A ``redis.Redis`` is safe to share (each command takes a connection from the
pool), so one per connection pool is kept instead.
"""

from __future__ import annotations

from django.core.cache.backends import redis as django_redis


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient
