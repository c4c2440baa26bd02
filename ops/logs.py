"""Ops room. Log context and quiet access logs.

Every log record carries ``request_id`` (the ``X-Request-ID`` a proxy sent, else a new one) and
``operation_id`` (the apply it belongs to), so that with ``GPUCONFIG_LOG_FORMAT=json`` one line
is one JSON object a log pipeline can join on. gunicorn's access log leaves out the requests a
healthy box makes all day: static files, health probes, scrapes and the page's polling.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from django.core.signals import request_finished
from gunicorn.glogging import Logger as GunicornLogger

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
operation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "operation_id", default=None
)

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Successful GETs of these paths are not access-logged (errors always are).
QUIET_PATHS = re.compile(
    r"^/(static/|healthz$|readyz$|metrics$|favicon\.ico$"
    r"|settings/gpu/cards/$|settings/gpu/apply/progress/$|api/system/gpu-config/status$)"
)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``operation_id`` to every record (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "operation_id"):
            record.operation_id = operation_id_var.get()
        return True


class RequestIdMiddleware:
    """Gives each request an id (kept from ``X-Request-ID`` when well formed) and echoes it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        # Cleared when the response is closed (request_finished), not here: Django logs a
        # request's 4xx/5xx after the middleware returns, and that line needs the id too.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _clear_request_id(**_kwargs) -> None:
    request_id_var.set(None)


request_finished.connect(_clear_request_id, dispatch_uid="gpuconfig-clear-request-id")


def is_quiet(method: str, path: str, status: int) -> bool:
    """True for a successful poll, probe, scrape or static file: not worth a log line."""
    return method in {"GET", "HEAD"} and status < 400 and bool(QUIET_PATHS.match(path))


class QuietAccessLogger(GunicornLogger):
    """gunicorn's logger without the noise; JSON lines when ``GPUCONFIG_LOG_FORMAT=json``."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        import os

        if os.environ.get("GPUCONFIG_LOG_FORMAT", "text").strip().lower() == "json":
            from pythonjsonlogger.json import JsonFormatter

            formatter = JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(formatter)

    def access(self, resp, req, environ, request_time) -> None:
        status = int(str(getattr(resp, "status", "0")).split()[0] or 0)
        if is_quiet(req.method, req.path, status):
            return
        super().access(resp, req, environ, request_time)


def bind_operation(operation_id: str | None) -> contextvars.Token:
    """Tag the log lines that follow (in this context) with an apply's operation id."""
    return operation_id_var.set(operation_id)


def _on_task_prerun(task_id=None, task=None, args=None, kwargs=None, **_kw) -> None:
    """Apply tasks log under their run's operation id; other tasks under none."""
    operation_id = None
    if task is not None and task.name == "assignments.tasks.apply_config_task":
        # Imported here: LOGGING loads this module during setup, before the models load.
        from applies.models import ApplyRun

        run_id = (args or [None])[0] if args else (kwargs or {}).get("run_id")
        operation_id = (
            ApplyRun.all_hosts.filter(pk=run_id).values_list("operation_id", flat=True).first()
        )
    operation_id_var.set(str(operation_id) if operation_id else None)


def connect_celery_signals() -> None:
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_on_task_prerun, weak=False)
    task_postrun.connect(lambda **_kw: operation_id_var.set(None), weak=False)
