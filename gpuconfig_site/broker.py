"""The Celery broker transport for Redis: kombu's, made to survive a Redis restart.

With Celery 5.7 and kombu 5.7, a worker holding an unacknowledged message (a countdown or ETA
task, a prefetched one, or one running with ``acks_late``) died when Redis stopped:
``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``.
On the connection error the consumer collects the connection, which detaches the transport
from its ``Connection`` (``transport.client = None``); the restart then closes the task
channel, whose close drops its connection pool and, to give the unacknowledged messages back,
builds a new pool from ``transport.client``. The ``AttributeError`` is not a connection error,
so nothing ignores it and the worker stops.

This channel remembers the connection parameters it last built, so the restore on close either
works (Redis is back) or fails with a redis ``ConnectionError``, which the consumer ignores as
it does any broker outage; the message stays in Redis's unacked set, where kombu gives it back
after the visibility timeout. Nothing else changes.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    """kombu's Redis channel whose connection parameters outlive its detached transport."""

    def _connparams(self, asynchronous: bool = False) -> dict:
        saved = self.__dict__.setdefault("_gpuconfig_connparams", {})
        transport = self.connection
        if transport is not None and transport.client is not None:
            saved[asynchronous] = dict(super()._connparams(asynchronous=asynchronous))
            return dict(saved[asynchronous])
        if asynchronous not in saved:
            raise RedisConnectionError("the broker connection is closed")
        return dict(saved[asynchronous])


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above (``CELERY_BROKER_TRANSPORT``)."""

    Channel = Channel
