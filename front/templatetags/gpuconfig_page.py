"""Front room. Template tags of the settings page: ``{% partialdef %}`` on both Django 5.2 and 6,
and a few formatting filters.

Django 6 has ``{% partialdef %}``/``{% partial %}`` built in; on 5.2 they come from
django-template-partials, which has to be loaded. Loading this library works on both, so the
page template does not depend on the Django version.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import django
from django import template
from django.urls import reverse
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from assignments import planner
from front.page_fragments import fragment_get, fragment_set
from gpus.units import MB_PER_GB

register = template.Library()

if django.VERSION < (6, 0):
    from template_partials.templatetags.partials import register as _partials

    register.tags.update(_partials.tags)
    register.filters.update(_partials.filters)


@register.filter
def gb(mb, places: int = 1) -> str:
    """MB as GB with ``places`` decimals: ``24564|gb`` → ``24.0``."""
    if mb in (None, ""):
        return "–"
    return f"{float(mb) / MB_PER_GB:.{int(places)}f}"


@register.filter
def gb_short(value) -> str:
    """A GB value without a trailing ``.0``: ``24.0`` → ``24``, ``3.5`` → ``3.5``."""
    if value in (None, ""):
        return "–"
    return f"{float(value):.1f}".removesuffix(".0")


@register.filter
def seconds(value) -> str:
    """Elapsed seconds for people: ``4.2 s``, ``1 min 5 s``."""
    if value in (None, ""):
        return "–"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


@register.filter
def strategy_label(name: str) -> str:
    """The label users see for a strategy name (the name itself when it is not registered)."""

    strategy = planner.STRATEGIES.get(name)
    return strategy.label if strategy else name


@register.filter
def devices(ids) -> str:
    """Device ids as words: ``("1",)`` → ``GPU 1``; empty → ``no GPU``."""
    if ids is None:
        return "no container"
    ids = tuple(ids)
    if not ids:
        return "no GPU"
    if ids == ("all",):
        return "all GPUs"
    return ("GPU " if len(ids) == 1 else "GPUs ") + ", ".join(ids)


@register.filter
def gb_up(mb) -> str:
    """MB as GB rounded up to 0.1, as the planner states a shortfall."""
    if mb in (None, ""):
        return "–"
    return f"{-(-int(mb) * 10 // MB_PER_GB) / 10:.1f}"


@register.filter
def code_spans(value: str) -> str:
    """Escape ``value`` and show its `backticked` parts as code."""
    escaped = conditional_escape(value)
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escaped)))


ISSUE_SHORT = {
    "over_capacity": "GPU over capacity",
    "budget_suggestion": "does not fit",
    "budget_too_large": "budget too large",
    "gpu_missing": "GPU not available",
    "unassigned": "no GPU",
    "unplaced": "not placed",
}


@register.filter
def issue_short(code: str) -> str:
    """A warning code as a short flag for its table row (the full message is its title)."""
    return ISSUE_SHORT.get(code, code.replace("_", " "))


class _FragmentCachedNode(template.Node):
    def __init__(self, name: str, key, nodelist):
        self.name, self.key, self.nodelist = name, key, nodelist

    def render(self, context) -> str:

        key = self.key.resolve(context)
        if not key:
            return self.nodelist.render(context)
        # Read by the view already when it built the page around the kept parts.
        html = (context.get("kept_fragments") or {}).get(self.name)
        if html is None:
            html = fragment_get(self.name, key)
        if html is None:
            html = self.nodelist.render(context)
            fragment_set(self.name, key, str(html))
        return mark_safe(html)


@register.tag
def fragment_cached(parser, token):
    """``{% fragment_cached name key %}...{% endfragment_cached %}``: the HTML inside, kept in
    the cache under ``name`` and ``key`` (``front.page_fragments``); rendered afresh,
    and not kept, when ``key`` is empty."""
    bits = token.split_contents()
    if len(bits) != 3:
        raise template.TemplateSyntaxError(f"{bits[0]} takes a name and a key")
    nodelist = parser.parse(("endfragment_cached",))
    parser.delete_first_token()
    return _FragmentCachedNode(bits[1], parser.compile_filter(bits[2]), nodelist)


@register.simple_tag(takes_context=True)
def host_url(context, name: str, *args, **query) -> str:
    """``{% url name *args %}`` for the host the page is on: with ``?host=<name>`` when the
    request named one (``HostMiddleware``), so plain links and forms stay on that host.
    ``query``: further parameters (``poll=1``)."""
    request = context.get("request")
    host = getattr(request, "gpu_host_name", None)
    if host:
        query["host"] = host
    url = reverse(name, args=args)
    return f"{url}?{urlencode(query)}" if query else url
