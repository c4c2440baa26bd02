"""Request parsers (DRF's APIView reads these settings when it is imported, so they live apart
from ``api.py``, which imports DRF's views)."""

from __future__ import annotations

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; a body nested too deeply to parse is malformed input, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON nested too deeply") from exc
