"""Each family's official sampling settings reach every backend (issue 8, item 5).

GLM-4.1V / GLM-4.5V: the official GUI-agent examples call the model with temperature
0.001, max_tokens 8192 and skip_special_tokens false; AutoGLM-Phone: Open-AutoGLM's client
(temperature 0, top_p 0.85, frequency_penalty 0.2, max_tokens 3000). An agent must sample
the same way on vLLM (the OpenAI backend, checked on a real HTTP server on 127.0.0.1) and
in-process (the engine options the local backend derives, on a tiny real checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_env import FormEnv
from scripted_openai import ScriptedServer, completion, server  # noqa: F401 - server: fixture

from glmv_agent.agent import Agent
from glmv_agent.dialects import get_dialect

GLMV = {"max_new_tokens": 8192, "temperature": 0.001, "skip_special_tokens": False}
AUTOGLM = {"max_new_tokens": 3000, "temperature": 0.0, "top_p": 0.85,
           "skip_special_tokens": False, "extra": {"frequency_penalty": 0.2}}
FINISH = {"glm-4.1v": "<answer>DONE()</answer>", "glm-4.5v": "<answer>DONE()</answer>",
          "autoglm-phone": '<answer>finish(message="done")</answer>'}
PLATFORM = {"glm-4.1v": "pc", "glm-4.5v": "pc", "autoglm-phone": "mobile"}


@pytest.mark.parametrize("family, platform, expected", [
    *[("glm-4.1v", p, GLMV) for p in ("mobile", "pc", "web")],
    *[("glm-4.5v", p, GLMV) for p in ("mobile", "pc", "web")],
    ("autoglm-phone", "mobile", AUTOGLM),
])
def test_each_dialect_declares_its_official_sampling(family: str, platform: str,
                                                     expected: dict) -> None:
    assert get_dialect(family, platform).generation_defaults() == expected


@pytest.mark.parametrize("family", ["glm-4.1v", "glm-4.5v", "autoglm-phone"])
def test_openai_request_carries_the_dialect_defaults(server: ScriptedServer, family: str,
                                                     tmp_path: Path) -> None:
    server.script.append(("json", 200, completion(FINISH[family])))
    agent = Agent(server.url, FormEnv(), family=family, platform=PLATFORM[family],
                  model_name="m", trace_dir=tmp_path)
    assert agent.run("finish").status == "success"
    body = server.requests[0]["body"]
    expected = GLMV if family != "autoglm-phone" else AUTOGLM
    assert body["temperature"] == expected["temperature"]
    assert body["max_tokens"] == expected["max_new_tokens"]
    assert body["skip_special_tokens"] is False
    if family == "autoglm-phone":
        assert body["top_p"] == 0.85 and body["frequency_penalty"] == 0.2
    else:
        assert "top_p" not in body and "frequency_penalty" not in body


def test_user_settings_override_the_defaults(server: ScriptedServer, tmp_path: Path) -> None:
    server.script.append(("json", 200, completion(FINISH["autoglm-phone"])))
    agent = Agent(server.url, FormEnv(), family="autoglm-phone", platform="mobile",
                  model_name="m", trace_dir=tmp_path, temperature=0.7,
                  extra={"presence_penalty": 0.1})
    agent.run("finish")
    body = server.requests[0]["body"]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 3000
    # The user's `extra` adds to the family's instead of dropping its frequency_penalty.
    assert body["presence_penalty"] == 0.1 and body["frequency_penalty"] == 0.2


@pytest.fixture(scope="module")
def local_backend(tmp_path_factory: pytest.TempPathFactory):
    from glmv_agent.backends.local import LocalBackend
    from glmv_agent.glm4v.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_sampling"), dtype="float32",
                                 shards=1, config_format="nested")
    return LocalBackend(path, device="cpu", dtype="float32")


@pytest.mark.parametrize("family", ["glm-4.1v", "glm-4.5v", "autoglm-phone"])
def test_local_engine_gets_the_dialect_defaults(local_backend, family: str,
                                                tmp_path: Path) -> None:
    agent = Agent(local_backend, FormEnv(), family=family, platform=PLATFORM[family],
                  trace_dir=tmp_path)
    options = local_backend._options(agent.generation)  # what complete() hands the engine
    config = local_backend.engine.generation_config(
        **{k: v for k, v in options.items() if k != "enable_thinking"})
    assert config.keep_special_tokens
    if family == "autoglm-phone":
        assert config.greedy and config.top_p == 0.85 and config.max_new_tokens == 3000
        assert config.frequency_penalty == 0.2 and config.presence_penalty == 0.0
    else:
        assert config.do_sample and config.temperature == 0.001
        assert config.max_new_tokens == 8192
    # And a real generation with those options runs (a short one: the weights are random).
    text = local_backend.complete([{"role": "user", "content": "hi"}],
                                  **{**agent.generation, "max_new_tokens": 3})
    assert isinstance(text, str)


def test_output_penalties_are_vllms() -> None:
    import torch

    from glmv_agent.glm4v.generation import GenerationConfig, process_logits

    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    counts = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    config = GenerationConfig(frequency_penalty=0.2, presence_penalty=0.5)
    got = process_logits(logits, None, config, counts)
    assert torch.allclose(got, torch.tensor([[1.0, 2.0 - 0.2 - 0.5, 3.0 - 0.6 - 0.5, 4.0]]))


def test_frequency_penalty_changes_what_the_engine_generates(local_backend) -> None:
    """Greedy on the tiny model repeats tokens; a strong frequency penalty makes it pick
    others from the first repetition on (and changes nothing before it)."""
    chat = [{"role": "user", "content": "hello there"}]
    plain = local_backend.engine.generate(chat, max_new_tokens=24, do_sample=False,
                                          eos_token_ids=[]).token_ids
    penalized = local_backend.engine.generate(chat, max_new_tokens=24, do_sample=False,
                                              eos_token_ids=[], frequency_penalty=2.0).token_ids
    first_repeat = next(i for i, t in enumerate(plain) if t in plain[:i])
    assert penalized[:first_repeat] == plain[:first_repeat]
    assert penalized[first_repeat] != plain[first_repeat]
    assert len(set(penalized)) == len(penalized)
