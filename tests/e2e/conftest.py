"""A real browser (Debian's chromium, driven by Playwright's sync API) against pytest-django's
live server, logged in through the login page like a person."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import guide_layout
from tests.e2e.pages import DESKTOP

CHROMIUM = os.environ.get("GPUCONFIG_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="package", autouse=True)
def _orm_beside_the_event_loop():
    """Playwright's sync API runs an event loop in the test thread; Django's ORM calls made from
    the test itself (fixtures, assertions) are still plain synchronous calls. Allowed for these
    browser tests only, never for the rest of the run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="package")
def browser(_orm_beside_the_event_loop):
    """One chromium for the browser tests; closed (its event loop with it) when they end."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found (install the Debian package chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Logging in is part of every test; its hashing is not what they are about."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def e2e(live_db, live_server):
    """The live server over a committed database that holds the service catalog."""
    return live_server


@pytest.fixture
def reference_gpus(e2e, simulated_gpus):
    """The reference hardware scanned into the committed database, in the user guide's
    starting layout (over capacity on both GPUs)."""
    from gpus.services import gpu_scan_run

    assert gpu_scan_run()["backend"] == "simulated"
    guide_layout()
    return simulated_gpus


class Browsing:
    """Opens pages at desktop and phone size and keeps them closed after the test."""

    def __init__(self, browser, base_url: str):
        self.browser = browser
        self.base_url = base_url
        self.contexts = []

    def page(self, *, viewport=DESKTOP, javascript: bool = True):
        context = self.browser.new_context(
            viewport=viewport, base_url=self.base_url, java_script_enabled=javascript
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        return context.new_page()

    def login(self, username: str, password: str, *, viewport=DESKTOP, javascript: bool = True):
        """A page logged in through the login form, on the GPU Configuration tab."""
        page = self.page(viewport=viewport, javascript=javascript)
        page.goto("/accounts/login/?next=/settings/gpu/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/settings/gpu/$"))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser, e2e) -> Iterator[Browsing]:
    session = Browsing(browser, e2e.url)
    yield session
    session.close()
