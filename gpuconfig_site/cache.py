"""Django's Redis cache, keeping its Redis clients and their connections.

Django's ``RedisCacheClient`` builds a new ``redis.Redis`` for every cache call, and with it
the client's table of response callbacks: a measurable part of a page that makes a dozen
cache calls. Here each thread keeps one client per connection pool instead, holding one
connection of that pool: a command no longer takes a connection from the pool and gives it
back (its lock and bookkeeping were about a sixth of a cache read on a small box). The check
the pool made at each checkout is kept: a connection the server closed (a restart, a timeout)
or that holds an unread reply is dropped and made again before the command is sent, and a
command is never sent twice. A forked process (a Celery child, a gunicorn worker) builds its
own clients: the parent's socket is never shared.

Keys are not checked against memcached's rules either (Django warns of keys memcached would
refuse, looking at each of their characters on every call); Redis takes any key.
"""

from __future__ import annotations

import os
import threading

import redis
from django.core.cache.backends import redis as django_redis


class KeptConnectionRedis(redis.Redis):
    """A client on one kept connection, checked before each command as the pool checks a
    connection it hands out."""

    def execute_command(self, *args, **options):
        connection = self.connection
        # Only a connected one: can_read() would connect a closed one, and the command would
        # then connect a second time (twice the connect timeout while Redis does not answer).
        if connection is not None and connection.is_connected:
            try:
                stale = connection.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()  # the command below connects it again
        return super().execute_command(*args, **options)


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = KeptConnectionRedis
        self._local = threading.local()

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            # The first call of this thread, or of a process forked since: the clients
            # inherited hold the parent's connections (redis-py gives them back to their pool
            # without touching the socket, which the parent still uses).
            local.pid, local.clients = pid, {}
        client = local.clients.get(id(pool))
        if client is None:
            client = local.clients[id(pool)] = self._client(
                connection_pool=pool, single_connection_client=True
            )
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient

    def validate_key(self, key):
        """Redis takes any key: nothing to warn of (memcached's limits do not apply)."""
