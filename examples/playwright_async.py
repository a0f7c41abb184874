"""`AsyncPageAgent`: natural-language commands in an asyncio playwright script.

Shows: the same commands as `playwright_page.py` (`act`, `click`, `query`, `assert_that`)
as coroutines on a `playwright.async_api` page. The page is driven by the async web
environment on your event loop, so other tasks keep running while the model thinks.

Run it here, without weights (scripted answers, real browser, on the bundled demo app):

    python examples/playwright_async.py --replay

With a real model:

    python examples/playwright_async.py --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from _common import add_model_args, chromium_launch_options, model_from_args
from playwright.async_api import async_playwright
from playwright_page import SCRIPTED

from glmv_agent import AsyncPageAgent
from glmv_agent.demo import demo_dir, serve_directory


async def heartbeat(beats: list[int]) -> None:
    """Another task on the same loop: it keeps ticking while the agent works."""
    while True:
        beats.append(1)
        await asyncio.sleep(0.05)


async def run(model: Any, family: str, site: str, headed: bool) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(headless=not headed, **chromium_launch_options())
        page = await browser.new_page(viewport={"width": 1280, "height": 720})
        await page.goto(site + "index.html")
        beats: list[int] = []
        ticker = asyncio.create_task(heartbeat(beats))

        async with AsyncPageAgent(page, model, family=family) as agent:
            result = await agent.act("Search the catalogue for the book Dune")
            print(f"act: {result.status} in {len(result.steps)} steps")
            await agent.click("the search result titled Dune")
            print(f"click: now at {page.url}")
            print(f"query: {await agent.query('What is the price of this book?')}")
            await agent.assert_that("the page shows the book Dune by Frank Herbert")
            print("assert_that: passed")

        ticker.cancel()
        print(f"page title: {await page.title()}; price element: "
              f"{await page.text_content('#price')}; event loop stayed free: {len(beats) > 1}")
        await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--family", default="glm-4.1v")
    parser.add_argument("--headed", action="store_true")
    args = parser.parse_args(argv)
    model = model_from_args(parser, args, scripted=SCRIPTED)
    with serve_directory(demo_dir()) as site:
        asyncio.run(run(model, args.family, site, args.headed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
