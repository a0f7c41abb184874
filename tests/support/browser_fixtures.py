"""Module-scoped pytest fixtures for the browser tests: the local page server and one Chromium.

Import them into a test module (`from browser_fixtures import browser, server`); each module
that does gets its own server and browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from glmv_agent.envs.web import CHROMIUM_ARGS, default_executable_path
from web_server import PageServer, serve_pages


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    srv = serve_pages()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=default_executable_path(),
                                     args=list(CHROMIUM_ARGS))
        yield chromium
        chromium.close()
