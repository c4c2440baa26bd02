"""The broker transport survives what killed the worker on a Redis restart (a private, real
Redis server, stopped under two channels that hold unacknowledged messages)."""

from __future__ import annotations

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gpuconfig_site.broker import RedisTransport
from gpuconfig_site.celery import app
from tests.plugins.private_redis import PrivateRedis

QUEUE = Queue("gpuconfig-test", Exchange("gpuconfig-test"), routing_key="gpuconfig-test")


@pytest.fixture
def redis_server(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _held_after_a_lost_connection(server, transport_cls):
    """Two channels each take a message without acknowledging it; Redis stops and the
    connection is collected, as the worker's consumer does on a connection error. The first
    channel closed in the collect fails on the dead socket; the other is left to close later.
    Returns it and the number of the message it holds."""
    connection = Connection(server.url, transport=transport_cls)
    with connection.Producer() as producer:
        for n in (1, 2):
            producer.publish(
                {"n": n}, exchange=QUEUE.exchange, routing_key="gpuconfig-test", declare=[QUEUE]
            )
    channels = [connection.channel() for _ in range(2)]
    held = {}
    for channel in channels:
        message = QUEUE(channel).get(no_ack=False)
        held[channel] = message.payload["n"]
    server.stop()
    connection.collect()
    left = [c for c in channels if not c.closed]
    assert len(left) == 1
    return left[0], held[left[0]]


def test_kombus_own_transport_dies_closing_a_channel_after_the_connection_was_collected(
    redis_server,
):
    """The defect this transport exists for, on kombu's own transport (should kombu fix it, this
    fails and ``gpuconfig_site/broker.py`` can go)."""
    channel, _ = _held_after_a_lost_connection(redis_server, kombu_redis.Transport)
    redis_server.start()
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


def test_with_redis_still_down_the_close_fails_as_a_connection_error(redis_server):
    """A connection error is what the worker's consumer ignores on its restart."""
    channel, _ = _held_after_a_lost_connection(redis_server, RedisTransport)
    with pytest.raises(RedisConnectionError):
        channel.close()


def test_with_redis_back_the_close_gives_the_message_back(redis_server):
    channel, number = _held_after_a_lost_connection(redis_server, RedisTransport)
    redis_server.start()

    channel.close()

    with Connection(redis_server.url, transport=RedisTransport) as again:
        restored = QUEUE(again.channel()).get(no_ack=True)
    assert restored is not None and restored.payload["n"] == number


def test_the_worker_uses_the_gpuconfig_transport():
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, RedisTransport)
