"""Content negotiation (DRF reads this setting when it is imported, so it lives apart from
``api.py``, which imports DRF's views)."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation

# What API clients send (or send nothing): each picks the first renderer, JSON, as DRF's own
# negotiation would after parsing the header.
_FIRST_RENDERER_ACCEPTS = frozenset({"", "*/*", "application/json"})


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with the answer it always gives to an API client worked out without
    parsing: no ``?format=`` and an ``Accept`` header absent, ``*/*`` or ``application/json``
    choose the first renderer. Anything else (a browser's ``text/html``, quality values, a
    format) is negotiated by DRF."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            renderers
            and not format_suffix
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
            and request.META.get("HTTP_ACCEPT", "").strip() in _FIRST_RENDERER_ACCEPTS
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
