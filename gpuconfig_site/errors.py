"""The one error type services raise for the user, and the one place it becomes an HTTP status.

A refusal carries a sentence for people (``message``) and, in ``extra``, what a program needs to
act on it: ``code`` (what kind of refusal), ``service`` and ``field`` (where it belongs). The API
(``gpuconfig_site.api.exception_handler``) and the settings page read ``extra``; nobody parses
the sentence.
"""

from __future__ import annotations

from http import HTTPStatus

ECHO_LIMIT = 60


def echo(value, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a refusal's message, cut to ``limit`` characters: a refusal names the
    input it refuses, but never sends a megabyte of it back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class ApplicationError(Exception):
    """A request gpuconfig refuses, with the reason in words and as data.

    ``extra`` holds ``code`` (always), and ``service`` / ``field`` when the refusal concerns one
    service or one input field (``strategy``, ``gpu_index``, ``vram_budget_override``, ...).
    """

    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        service: str | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.extra: dict[str, str] = {"code": code or self.code}
        if service is not None:
            self.extra["service"] = service
        if field is not None:
            self.extra["field"] = field

    @property
    def detail(self) -> str:
        return self.message

    @property
    def service(self) -> str | None:
        return self.extra.get("service")

    @property
    def field(self) -> str | None:
        return self.extra.get("field")


# What each kind of refusal means for HTTP; any other code is the client's mistake (400).
STATUS_BY_CODE: dict[str, int] = {
    "apply_busy": HTTPStatus.CONFLICT,
    "engine_refused": HTTPStatus.BAD_GATEWAY,
    "engine_unavailable": HTTPStatus.SERVICE_UNAVAILABLE,
    "files_unwritable": HTTPStatus.SERVICE_UNAVAILABLE,
    "host_offline": HTTPStatus.SERVICE_UNAVAILABLE,
    "version_not_found": HTTPStatus.NOT_FOUND,
}


def http_status(error: ApplicationError) -> int:
    """The HTTP status an API answer or a page fragment carries for ``error``."""
    return int(STATUS_BY_CODE.get(error.extra["code"], HTTPStatus.BAD_REQUEST))
