"""API-wide pieces: every error under ``/api/`` leaves as ``{"detail": "..."}`` JSON; a refusal
of a service (``ApplicationError``) gets the status its code maps to (``gpuconfig_site.errors``);
``InputSerializer``, the base of every endpoint's input serializer, refuses bad input the same
way (an ``InputInvalid``, 400)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from django.conf import settings
from django.http import JsonResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from gpuconfig_site.errors import ApplicationError, echo, http_status
from gpuconfig_site.redis_health import is_redis_down, redis_down_detail

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def _flatten(detail) -> str:
    """Turn DRF's nested error structures into one readable sentence."""
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            text = _flatten(value)
            parts.append(text if key in ("non_field_errors", "detail") else f"{key}: {text}")
        return "; ".join(parts)
    if isinstance(detail, (list, tuple)):
        return "; ".join(_flatten(item) for item in detail)
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.message}, status=http_status(exc))
    if is_redis_down(exc):
        logger.error("Redis is not reachable: %s", exc)
        return Response({"detail": redis_down_detail(exc)}, status=503)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ParseError):
        response.data = {"detail": f"Malformed JSON: {exc.detail}"}
    elif not (isinstance(response.data, dict) and set(response.data) == {"detail"}):
        response.data = {"detail": _flatten(response.data)}
    else:
        response.data = {"detail": str(response.data["detail"])}
    return response


class InputInvalid(ApplicationError):
    """A request's input refused at the edge, before any service ran (``extra["field"]`` names
    the field when the refusal is about one)."""

    code = "invalid_input"


def _first_error(errors: dict) -> tuple[str | None, str]:
    """The first of DRF's errors as (field, one sentence); a sentence that does not name its
    field (DRF's own, such as "Must be a valid boolean.") is prefixed with it."""
    key, value = next(iter(errors.items()))
    text = _flatten(value)
    if key == api_settings.NON_FIELD_ERRORS_KEY:
        return None, text
    return key, text if key in text else f"{key}: {text}"


class InputSerializer(serializers.Serializer):
    """The input of one endpoint (body or query), checked before the service is called.

    ``validated(data)`` returns the values to pass as the service's keyword arguments, or
    raises ``InputInvalid`` with one sentence. With ``body_example`` set, the input is a JSON
    body: anything but an object is refused naming that example, and so is an unknown field
    (a query string may carry parameters of other layers, such as ``?format=``)."""

    body_example: str = ""

    @classmethod
    def validated(cls, data) -> dict:
        serializer = cls(data=data)
        if not serializer.is_valid():
            field, message = _first_error(serializer.errors)
            raise InputInvalid(message, field=field)
        return dict(serializer.validated_data)

    def to_internal_value(self, data):
        if self.body_example:
            if not isinstance(data, Mapping):
                raise serializers.ValidationError(
                    {
                        api_settings.NON_FIELD_ERRORS_KEY: [
                            f"The body must be a JSON object like {self.body_example}."
                        ]
                    }
                )
            unknown = set(data) - set(self.fields)
            if unknown:
                names = echo(", ".join(sorted(map(str, unknown))))
                raise serializers.ValidationError(
                    {api_settings.NON_FIELD_ERRORS_KEY: [f"Unknown field(s): {names}."]}
                )
        return super().to_internal_value(data)


def _json_error(status_code: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status_code)


class ApiErrorMiddleware:
    """Keeps every answer under ``/api/`` JSON, whatever Django itself answers.

    - a body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is refused with 413 before it is read;
    - an error Django answers with an HTML page (unknown path 404, 400, 405) becomes
      ``{"detail": <reason>}`` with the same status;
    - an exception no view handled becomes a logged JSON 500 (503 naming Redis when it is down).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return _json_error(
                413, f"The request body is {length} bytes; at most {limit} bytes are accepted."
            )
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and "json" not in content_type:
            status_code = response.status_code
            return _json_error(status_code, _reason(status_code, request))
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        if is_redis_down(exception):
            logger.error("Redis is not reachable: %s", exception)
            return _json_error(503, redis_down_detail(exception))
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return _json_error(500, f"Internal error ({type(exception).__name__}); see the server log.")


def _reason(status_code: int, request) -> str:
    if status_code == 404:
        return f"Not found: {request.path}"
    if status_code == 405:
        return f"Method {request.method} is not allowed on {request.path}."
    try:
        return HTTPStatus(status_code).phrase + "."
    except ValueError:
        return f"Error {status_code}."


def bounded_integer(name: str, *, default: int, low: int, high: int) -> serializers.IntegerField:
    """An optional whole-number query parameter from ``low`` to ``high``: every refusal is the
    one sentence the schema's bounds say."""
    sentence = f"{name} must be a whole number from {low} to {high}."
    return serializers.IntegerField(
        required=False,
        default=default,
        min_value=low,
        max_value=high,
        error_messages=dict.fromkeys(
            ("invalid", "min_value", "max_value", "max_string_length", "null"), sentence
        ),
    )
