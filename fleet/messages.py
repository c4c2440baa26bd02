"""What an agent sends the centre, checked before anything is written.

An agent holds no database credentials: everything it knows reaches the database as one of
these messages, carried by the broker to the central worker, which checks the shape here and
the sender in ``fleet.identity`` before the services write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fleet.models import HOST_NAME_PATTERN

_HOST_RE = re.compile(HOST_NAME_PATTERN)


class MessageInvalid(ValueError):
    """A message the centre cannot use; it is dropped and logged, never half-applied."""


@dataclass(frozen=True)
class Heartbeat:
    host: str
    agent_version: str
    runtime: str
    sent_at: datetime

    @classmethod
    def from_payload(cls, payload: dict) -> Heartbeat:
        if not isinstance(payload, dict):
            raise MessageInvalid("a heartbeat is an object")
        host = payload.get("host")
        if not isinstance(host, str) or not _HOST_RE.match(host):
            raise MessageInvalid(f"heartbeat host {host!r} is not a host name")
        version = payload.get("agent_version", "")
        runtime = payload.get("runtime", "")
        if not isinstance(version, str) or len(version) > 40:
            raise MessageInvalid("agent_version must be a string of at most 40 characters")
        if not isinstance(runtime, str) or len(runtime) > 20:
            raise MessageInvalid("runtime must be a string of at most 20 characters")
        try:
            sent_at = datetime.fromisoformat(payload["sent_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageInvalid("sent_at must be an ISO 8601 time") from exc
        if sent_at.tzinfo is None:
            raise MessageInvalid("sent_at must carry its time zone")
        return cls(host=host, agent_version=version, runtime=runtime, sent_at=sent_at)

    def as_payload(self) -> dict:
        return {
            "host": self.host,
            "agent_version": self.agent_version,
            "runtime": self.runtime,
            "sent_at": self.sent_at.astimezone(UTC).isoformat(),
        }
