"""Who sent a message: an agent speaks only for its own host.

On RabbitMQ each agent connects as its own broker user, and the broker stamps what it publishes
with that user (the ``user_id`` property, which RabbitMQ validates: a publisher cannot set
another user's name). The centre accepts a message for host H only when it carries H's broker
user. Brokers that cannot say who published (Redis, the embedded filesystem transport) are
trusted for this machine's own host only: a fleet of several hosts needs RabbitMQ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kombu.utils.url import url_to_parts

logger = logging.getLogger("gpuconfig.fleet")

AUTHENTICATING_SCHEMES = {"amqp", "amqps", "pyamqp"}


class SenderRefused(Exception):
    """A message whose sender may not speak for the host it names; dropped and logged."""


@dataclass(frozen=True)
class BrokerIdentity:
    """What this process knows of its broker: whether it authenticates publishers, and the
    user this process itself connects as."""

    authenticates: bool
    own_user: str

    @classmethod
    def from_url(cls, url: str) -> BrokerIdentity:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        user = ""
        if scheme in AUTHENTICATING_SCHEMES:
            user = url_to_parts(url).username or "guest"
        return cls(authenticates=scheme in AUTHENTICATING_SCHEMES, own_user=user)


def check_sender(
    *,
    claimed_host: str,
    host_broker_user: str | None,
    local_host: str,
    sender: str | None,
    broker: BrokerIdentity,
) -> None:
    """Raise ``SenderRefused`` unless ``sender`` (the message's validated ``user_id``) may speak
    for ``claimed_host``. ``host_broker_user`` is None when no such host is registered."""
    if host_broker_user is None:
        raise SenderRefused(f"no host named {claimed_host!r} is registered")
    if not broker.authenticates:
        if claimed_host != local_host:
            raise SenderRefused(
                f"a message for host {claimed_host!r} came over a broker that cannot tell who "
                f"sent it; only this machine's host ({local_host!r}) is trusted there (a fleet "
                "of several hosts needs RabbitMQ)"
            )
        return
    expected = host_broker_user or (broker.own_user if claimed_host == local_host else "")
    if not expected:
        raise SenderRefused(f"host {claimed_host!r} has no broker user registered")
    if not sender:
        raise SenderRefused(
            f"a message for host {claimed_host!r} carries no broker user (user_id); "
            f"expected {expected!r}"
        )
    if sender != expected:
        raise SenderRefused(
            f"broker user {sender!r} may not speak for host {claimed_host!r} "
            f"(its agent connects as {expected!r})"
        )
