"""Natural-language commands inside your own (sync) playwright script, with `PageAgent`.

Shows: you keep your browser, context and page; `PageAgent(page, model)` adds
`act(instruction)`, `click(description)`, `query(question)` and `assert_that(statement)`
next to your ordinary playwright calls, and never closes your page. Each command is an
ordinary task for the model family's trained web prompt (see `glmv_agent.page_agent`).

Run it here, without weights (scripted answers, real browser, on the bundled demo app):

    python examples/playwright_page.py --replay

With a real model:

    python examples/playwright_page.py --base-url http://127.0.0.1:8000/v1 --model-name glm-4.1v
    python examples/playwright_page.py --model /models/GLM-4.1V-9B-Thinking
"""

from __future__ import annotations

import argparse
import sys

from _common import add_model_args, chromium_launch_options, model_from_args
from playwright.sync_api import sync_playwright

from glmv_agent import PageAgent
from glmv_agent.demo import demo_dir, serve_directory


def scripted(thought: str, action: str) -> str:
    """An answer in GLM-4.1V's web format, written by hand for --replay."""
    return (f"<think>{thought}</think><answer>Thought: {thought}\nAction: {action}\n"
            "Memory_Updated: {}</answer>")


# One answer per model call of main() below; set-of-marks labels of the demo app:
# [0] the search box; after searching, [2] the "Dune" result.
SCRIPTED = [
    scripted("The search box is [0]; I type the title.", "Type [0]; [Dune]"),
    scripted("The results for Dune are listed.", "ANSWER; <content>Searched for Dune</content>"),
    scripted("The result titled Dune is [2].", "Click [2]"),
    scripted("The book page shows the price $9.99.", "ANSWER; <content>$9.99</content>"),
    scripted("The page shows Dune by Frank Herbert (1965).", "ANSWER; <content>Yes, it shows "
             "Dune by Frank Herbert.</content>"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--family", default="glm-4.1v")
    parser.add_argument("--headed", action="store_true")
    args = parser.parse_args(argv)
    model = model_from_args(parser, args, scripted=SCRIPTED)

    with serve_directory(demo_dir()) as site, sync_playwright() as p:
        # Your own playwright code: browser, page, navigation.
        browser = p.chromium.launch(headless=not args.headed, **chromium_launch_options())
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(site + "index.html")

        agent = PageAgent(page, model, family=args.family)
        result = agent.act("Search the catalogue for the book Dune")
        print(f"act: {result.status} in {len(result.steps)} steps")
        agent.click("the search result titled Dune")
        print(f"click: now at {page.url}")
        price = agent.query("What is the price of this book?")
        print(f"query: {price}")
        agent.assert_that("the page shows the book Dune by Frank Herbert")
        print("assert_that: passed")

        # Back to plain playwright on the same, still open page.
        print(f"page title: {page.title()}; price element: {page.text_content('#price')}")
        agent.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
