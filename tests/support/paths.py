"""Where things are, for tests and the helpers beside them (tests/support/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent  # tests/support: helper modules, data, pages
ROOT = SUPPORT.parents[1]  # the repository root
DATA = SUPPORT / "data"  # recorded fixtures (dialect renders, adb output, Midscene requests)
PAGES = SUPPORT / "web_pages"  # the local pages the browser tests serve
