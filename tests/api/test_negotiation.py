"""Content negotiation: an API client's usual ``Accept`` (none, ``*/*``, ``application/json``)
gets JSON without the header being parsed; everything else is DRF's own negotiation, and both
give the same answer wherever the short path applies."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from gpuconfig_site.negotiation import ContentNegotiation

RENDERERS = [JSONRenderer(), BrowsableAPIRenderer()]


def _select(negotiation, accept: str | None, query: str = ""):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/system/gpus{query}", **headers))
    renderer, media_type = negotiation.select_renderer(request, RENDERERS)
    return type(renderer), media_type


@pytest.mark.parametrize(
    "accept, query",
    [
        (None, ""),
        ("*/*", ""),
        ("application/json", ""),
        (" application/json ", ""),
        ("text/html", ""),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", ""),
        ("application/json; indent=4", ""),
        ("text/html;q=0.5, application/json", ""),
        ("*/*", "?format=api"),
        (None, "?format=json"),
    ],
)
def test_the_answer_is_drfs_own(accept, query):
    assert _select(ContentNegotiation(), accept, query) == _select(
        DefaultContentNegotiation(), accept, query
    )


def test_a_client_with_no_preference_gets_json_unparsed(monkeypatch):
    def parse(*args, **kwargs):
        raise AssertionError("the Accept header was parsed")

    monkeypatch.setattr(DefaultContentNegotiation, "_get_parsed_accept_list", parse)
    for accept in (None, "*/*", "application/json"):
        assert _select(ContentNegotiation(), accept) == (JSONRenderer, "application/json")


def test_a_browser_still_gets_the_browsable_api():
    assert _select(ContentNegotiation(), "text/html")[0] is BrowsableAPIRenderer
    assert _select(ContentNegotiation(), "*/*", "?format=api")[0] is BrowsableAPIRenderer
