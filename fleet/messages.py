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


# --- applies carried out by a host's agent (fleet.applying, applies.remote) -------------------

APPLY_STEPS = frozenset(
    {
        "",  # a beat: the agent is still at work on the run
        "pending",
        "stopping",
        "recreating",
        "starting",
        "waiting_health",
        "healthy",
        "rolled_back",
        "failed",
        "unchanged",
        "interrupted",
    }
)
APPLY_OUTCOMES = frozenset({"succeeded", "partial", "failed", "interrupted"})
_SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MESSAGE_TEXT_MAX = 20_000
LOG_TEXT_MAX = 200_000


def _run_fields(kind: str, payload) -> tuple[str, int, str]:
    """The host, run id and operation id every apply message names."""
    if not isinstance(payload, dict):
        raise MessageInvalid(f"{kind} is an object")
    host = payload.get("host")
    if not isinstance(host, str) or not _HOST_RE.match(host):
        raise MessageInvalid(f"{kind} host {host!r} is not a host name")
    run_id = payload.get("run_id")
    if not isinstance(run_id, int) or isinstance(run_id, bool) or run_id < 1:
        raise MessageInvalid(f"{kind} run_id must be a positive integer")
    operation_id = payload.get("operation_id")
    if not isinstance(operation_id, str) or not _UUID_RE.match(operation_id):
        raise MessageInvalid(f"{kind} operation_id must be a UUID")
    return host, run_id, operation_id


def _text(kind: str, payload: dict, name: str, limit: int) -> str:
    value = payload.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise MessageInvalid(f"{kind} {name} must be a string of at most {limit} characters")
    return value


@dataclass(frozen=True)
class ApplyProgress:
    """One step of one service of a host's apply, or (``service`` empty) a beat that says the
    agent is still at work on the run. ``notes``: the move mode and measured downtime."""

    host: str
    run_id: int
    operation_id: str
    service: str = ""
    step: str = ""
    message: str = ""
    notes: dict | None = None

    @classmethod
    def from_payload(cls, payload) -> ApplyProgress:
        host, run_id, operation_id = _run_fields("apply progress", payload)
        service = payload.get("service", "")
        if not isinstance(service, str) or (service and not _SERVICE_RE.match(service)):
            raise MessageInvalid(f"apply progress service {service!r} is not a service name")
        step = payload.get("step", "")
        if step not in APPLY_STEPS or bool(step) != bool(service):
            raise MessageInvalid(f"apply progress step {step!r} is not a step of a service")
        notes = payload.get("notes") or {}
        if not isinstance(notes, dict) or not set(notes) <= {"move_mode", "downtime_s"}:
            raise MessageInvalid("apply progress notes may hold move_mode and downtime_s only")
        return cls(
            host=host,
            run_id=run_id,
            operation_id=operation_id,
            service=service,
            step=step,
            message=_text("apply progress", payload, "message", MESSAGE_TEXT_MAX),
            notes=notes or None,
        )

    def as_payload(self) -> dict:
        out = {
            "host": self.host,
            "run_id": self.run_id,
            "operation_id": self.operation_id,
            "service": self.service,
            "step": self.step,
            "message": self.message,
        }
        if self.notes:
            out["notes"] = dict(self.notes)
        return out


@dataclass(frozen=True)
class ApplyOutcome:
    """How a host's apply ended: ``succeeded``, ``partial`` or ``failed`` as carried out, or
    ``interrupted`` when the agent stopped mid-apply and repaired it from its local journal
    when it started again. ``results`` per service: outcome, message (and move mode, downtime);
    ``journal``: the steps the agent recorded, settled."""

    host: str
    run_id: int
    operation_id: str
    status: str
    error: str = ""
    results: dict | None = None
    log: str = ""
    journal: dict | None = None

    @classmethod
    def from_payload(cls, payload) -> ApplyOutcome:
        host, run_id, operation_id = _run_fields("apply outcome", payload)
        status = payload.get("status")
        if status not in APPLY_OUTCOMES:
            raise MessageInvalid(f"apply outcome status {status!r} is not an outcome")
        results = payload.get("results") or {}
        journal = payload.get("journal") or {}
        for name, value in (("results", results), ("journal", journal)):
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and _SERVICE_RE.match(k) and isinstance(v, dict)
                for k, v in value.items()
            ):
                raise MessageInvalid(f"apply outcome {name} must map service names to objects")
        return cls(
            host=host,
            run_id=run_id,
            operation_id=operation_id,
            status=status,
            error=_text("apply outcome", payload, "error", MESSAGE_TEXT_MAX),
            results=results,
            log=_text("apply outcome", payload, "log", LOG_TEXT_MAX),
            journal=journal,
        )

    def as_payload(self) -> dict:
        return {
            "host": self.host,
            "run_id": self.run_id,
            "operation_id": self.operation_id,
            "status": self.status,
            "error": self.error,
            "results": dict(self.results or {}),
            "log": self.log,
            "journal": dict(self.journal or {}),
        }
