"""One allow-list rule (glmv_agent.urls) for the policy's goto check and the web env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmv_agent.actions import Goto
from PIL import Image

from glmv_agent.envs.base import Observation
from glmv_agent.errors import ActionRefusedError, ConfigError
from glmv_agent.geometry import phone_mapping
from glmv_agent.policy import Policy
from glmv_agent.urls import normalize_allowed_domains, url_allowed

from web_server import serve_pages  # noqa: E402

ENTRIES = ["example.com", "*.shop.test", "127.0.0.1:8000", "https://docs.example.org:8443/a/b",
           "HTTP://User@Mixed.Case.NET/"]
PAGE = Observation(screenshot=Image.new("RGB", (64, 64)), mapping=phone_mapping(64, 64),
                   platform="web")
CASES = {
    "https://example.com/": True, "https://a.b.example.com:9999/x": True,
    "https://badexample.com/": False, "https://shop.test/": True, "https://x.shop.test/": True,
    "http://127.0.0.1:8000/page": True, "http://127.0.0.1:8001/page": False,
    "http://127.0.0.1/": False, "https://docs.example.org:8443/": True,
    "https://docs.example.org/": False, "https://mixed.case.net/": True,
    "ftp://example.com/": False, "http://example.com.evil.test/": False,
    "https://example.com:99999/": False,
}


def test_entries_are_normalized() -> None:
    assert normalize_allowed_domains(ENTRIES) == (
        "example.com", "shop.test", "127.0.0.1:8000", "docs.example.org:8443", "mixed.case.net")
    for bad in ["", "   ", "https:///path", "host:port"]:
        with pytest.raises(ConfigError):
            normalize_allowed_domains([bad])


@pytest.mark.parametrize("url", sorted(CASES))
def test_policy_and_web_env_give_the_same_verdict(url: str) -> None:
    allowed = normalize_allowed_domains(ENTRIES)
    assert url_allowed(url, allowed) is CASES[url]
    policy = Policy(allowed_domains=list(ENTRIES), allowed_schemes=("http", "https", "ftp"))
    try:
        policy.check(Goto(url=url), PAGE, {"goto"})
        verdict = True
    except ActionRefusedError:
        verdict = False
    assert verdict is CASES[url]


def test_agent_does_not_change_the_callers_policy(tmp_path: Path) -> None:
    from glmv_agent.agent import Agent
    from glmv_agent.backends.replay import ReplayBackend

    from scripted_env import FormEnv

    shared = Policy(allowed_domains=["a.test"])
    agent = Agent(ReplayBackend([]), FormEnv(), policy=shared, allowed_domains=["b.test"],
                  max_text_length=5, trace=False)
    assert agent.policy.allowed_domains == ["b.test"] and agent.policy.max_text_length == 5
    assert shared.allowed_domains == ["a.test"] and shared.max_text_length == 2000


def test_cli_run_with_a_host_and_port_allow_list(tmp_path: Path) -> None:
    """`--allowed-domain 127.0.0.1:PORT` lets the run use the local site: a link on the same
    host and port is followed, and the model's Bing search is refused by the policy with
    the allow-list named."""
    answers = [
        "<think>Follow the link.</think><answer>Thought: open the next page.\nAction: Click [0]"
        "\nMemory_Updated: []</answer>",
        "<think>Search.</think><answer>Thought: search the web.\nAction: Bing\n"
        "Memory_Updated: []</answer>",
        "<think>Done.</think><answer>Thought: I am on page 2.\nAction: ANSWER; [page two]\n"
        "Memory_Updated: []</answer>",
    ]
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps(answers))
    server = serve_pages()
    try:
        port = server.port
        done = subprocess.run(
            [sys.executable, "-m", "glmv_agent.cli", "run", "Go to the next page", "--env", "web",
             "--url", server.url("links.html"), "--model", str(replay), "--allowed-domain",
             f"127.0.0.1:{port}", "--trace-dir", str(tmp_path / "trace")],
            capture_output=True, text=True, timeout=180)
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(line) for line in (tmp_path / "trace" / "steps.jsonl").read_text().splitlines()]
    assert steps[0]["outcome"] == "executed"
    assert steps[1]["observation"]["url"].endswith("/page2.html")
    assert steps[1]["outcome"] == "refused" and f"127.0.0.1:{port}" in steps[1]["detail"]
    assert steps[2]["outcome"] == "terminal"
