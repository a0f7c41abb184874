"""Padding ids: embedding rows beyond the tokenizer's vocabulary.

The real GLM-4.1V checkpoint has 151552 embedding / LM-head rows, more than its tokenizer
has tokens, so a sampled token can be an id the tokenizer does not know. transformers and
vLLM decode such ids to ""; so must we, in the tokenizer, in generation (which must go on
after one) and in the server (which must answer 200). The tiny checkpoint here has 64
padding rows (`write_tiny_checkpoint(embedding_rows=...)`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.glm4v.generation import decode_one_token
from glmv_agent.glm4v.tiny import write_tiny_checkpoint
from glmv_agent.glm4v.tokenizer import Glm4vTokenizer

VOCAB, ROWS = 2048, 2112  # tokenizer entries, embedding rows
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def padded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("padded"), vocab_size=VOCAB,
                                 embedding_rows=ROWS, shards=1, seed=3)


@pytest.fixture(scope="module")
def engine(padded_checkpoint: Path) -> Glm4vEngine:
    return load(padded_checkpoint, device="cpu", dtype="float32")


def test_the_checkpoint_has_more_rows_than_tokens(engine: Glm4vEngine) -> None:
    assert engine.tokenizer.vocab_size == VOCAB
    assert engine.model.config.text.vocab_size == ROWS
    assert engine.model.lm_head.weight.shape[0] == ROWS


def test_padding_ids_decode_to_nothing_like_transformers(padded_checkpoint: Path) -> None:
    transformers = pytest.importorskip("transformers")
    ours = Glm4vTokenizer(padded_checkpoint)
    theirs = transformers.AutoTokenizer.from_pretrained(str(padded_checkpoint))
    hello = ours.encode("Hello there")
    pad = VOCAB + 7
    for ids in ([pad], [*hello, pad], [pad, *hello, ROWS - 1, *hello], [10 ** 9]):
        for skip in (False, True):
            expected = theirs.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip) == expected
    assert ours.decode([*hello, pad]) == ours.decode(hello)
    stream = ours.stream_decoder()
    assert stream.push_many([*hello[:1], pad, *hello[1:], pad]) + stream.flush() == ours.decode(hello)
    with pytest.raises(Exception, match="negative"):  # still not a token id at all
        ours.decode([-1])


def forcing(pad_id: int, at_steps: set[int]) -> Any:
    """The real decode step, with the logits of `pad_id` raised above all others at the
    given decode steps: what a model that samples a padding row produces."""
    calls = {"n": 0}

    def step(model: Any, token_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        logits = decode_one_token(model, token_ids, cache)
        calls["n"] += 1
        if calls["n"] in at_steps:
            logits = logits.clone()
            logits[:, pad_id] = logits.max() + 100.0
        return logits

    return step


def test_generation_goes_on_after_a_padding_id(engine: Glm4vEngine) -> None:
    pad = VOCAB + 5
    forced = Glm4vEngine(engine.model, engine.processor, engine.defaults,
                         step_fn=forcing(pad, {1, 3}))
    result = forced.generate(MESSAGES, max_new_tokens=6, temperature=0)
    assert result.token_ids[1] == pad and result.token_ids[3] == pad
    assert len(result.token_ids) == 6 and result.finish_reason == "length"
    others = [t for t in result.token_ids if t != pad]
    assert result.text == engine.tokenizer.decode(others)
    streamed = "".join(Glm4vEngine(engine.model, engine.processor, engine.defaults,
                                   step_fn=forcing(pad, {1, 3})).stream(
        MESSAGES, max_new_tokens=6, temperature=0))
    assert streamed == result.text


@pytest.fixture()
def forced_server(engine: Glm4vEngine) -> Iterator[str]:
    from glmv_agent.server import ServerConfig
    from served import running_server  # the server tests' harness: real uvicorn

    forced = Glm4vEngine(engine.model, engine.processor, engine.defaults,
                         step_fn=forcing(VOCAB + 9, {1, 2, 3, 4, 5, 6, 7, 8}))
    with running_server(forced, ServerConfig(model_name="padded", max_queue=2, max_batch=1)) as served:
        yield served.v1


def test_the_server_answers_200_when_a_padding_id_is_sampled(forced_server: str) -> None:
    body = {"model": "padded", "messages": MESSAGES, "max_tokens": 5, "temperature": 0}
    response = httpx.post(forced_server + "/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 5
    assert isinstance(reply["choices"][0]["message"]["content"], str)
