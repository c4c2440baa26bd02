"""The plan's rendered parts of the settings page, kept in the cache: the same HTML as a fresh
render, never stale after a save, a scan or a catalog edit, apart for a user who may not
change anything, and never kept while Redis is away."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.cache import cache
from django.test import Client

from assignments.models import AiService, Assignment
from assignments.selectors import planning_input, planning_input_cached
from front.page_fragments import config_fragment_key
from gpus.services import gpu_scan_run

pytestmark = pytest.mark.django_db

PAGE = "/settings/gpu/"
TOKEN = re.compile(r'(csrfmiddlewaretoken" value=|"X-CSRFToken": )"[^"]+"')


def _page(client) -> str:
    res = client.get(PAGE)
    assert res.status_code == 200
    return TOKEN.sub(r"\1TOKEN", res.content.decode())


def _fragments() -> list:
    return list(cache._cache.get_client().keys("*page-fragment:*"))


@pytest.fixture
def staff_page(staff_user, reference_inventory):
    client = Client()
    client.force_login(staff_user)
    return client


def test_a_kept_page_is_the_page_rendered_afresh(staff_page):
    first = _page(staff_page)
    assert len(_fragments()) == 3  # the plan, its problems and how many there are
    assert _page(staff_page) == first
    for key in _fragments():
        cache._cache.get_client().delete(key)
    assert _page(staff_page) == first


def test_a_save_is_shown_on_the_next_render(staff_page):
    assert 'id="id_gpu-ai-clip"' in _page(staff_page)
    before = _page(staff_page)
    assignment = Assignment.objects.get(service__name="ai-clip")
    assignment.gpu_index = 1
    assignment.save()
    after = _page(staff_page)
    assert after != before
    clip_row = re.search(r'<select name="gpu-ai-clip".*?</select>', after, re.S)[0]
    assert re.search(r'<option value="1" selected>', clip_row)


def test_a_catalog_edit_is_shown_on_the_next_render(staff_page):
    _page(staff_page)
    clip = AiService.objects.get(name="ai-clip")
    clip.display_name = "Renamed in the catalog"
    clip.save()
    assert "Renamed in the catalog" in _page(staff_page)


def _summary(html: str) -> str:
    return html[html.index('id="gpu-summary"') : html.index('id="save-button"')]


def test_a_lost_gpu_is_shown_on_the_next_render(staff_page, reference_inventory):
    assert "RTX A400" in _summary(_page(staff_page))
    entries = yaml.safe_load(reference_inventory.read_text())
    reference_inventory.write_text(yaml.safe_dump([e for e in entries if e["index"] != 1]))
    gpu_scan_run()
    assert "RTX A400" not in _summary(_page(staff_page))


def test_a_viewer_gets_the_read_only_plan(staff_page, plain_user, reference_inventory):
    staff_html = _page(staff_page)
    viewer = Client()
    viewer.force_login(plain_user)
    viewer_html = _page(viewer)
    save = re.compile(r'<button type="submit" class="btn btn-primary" id="save-button"[^>]*>')
    assert "disabled" not in save.search(staff_html)[0]
    assert "disabled" in save.search(viewer_html)[0]
    assert len(_fragments()) == 6


def test_the_key_moves_with_the_configuration_state(reference_inventory):
    key = config_fragment_key(
        planning=planning_input_cached(), can_change=True, saved_strategy="manual"
    )
    assert key == config_fragment_key(
        planning=planning_input_cached(), can_change=True, saved_strategy="manual"
    )
    assert key != config_fragment_key(
        planning=planning_input_cached(), can_change=False, saved_strategy="manual"
    )
    assert key != config_fragment_key(
        planning=planning_input_cached(needs="catalog"), can_change=True, saved_strategy="manual"
    )
    clip = AiService.objects.get(name="ai-clip")
    clip.save()
    assert key != config_fragment_key(
        planning=planning_input_cached(), can_change=True, saved_strategy="manual"
    )
    # Read from the database directly there is no state to key on: nothing is kept.
    assert (
        config_fragment_key(planning=planning_input(), can_change=True, saved_strategy="manual")
        is None
    )


def test_a_posted_form_is_not_kept(staff_page):
    res = staff_page.post(
        "/settings/gpu/check/", {"strategy": "manual", "gpu-ai-clip": "1", "needs_switch": "1"}
    )
    assert res.status_code in (200, 422)
    assert _fragments() == []


def test_a_page_missing_one_kept_part_renders_the_plan_afresh(staff_page):
    first = _page(staff_page)
    for key in _fragments():
        if b":assignments:" in key:
            cache._cache.get_client().delete(key)
    assert _page(staff_page) == first
