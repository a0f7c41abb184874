"""Generation: logits processors, stop strings, streaming text, thinking budget, and greedy
equality with transformers' Glm4vForConditionalGeneration.generate on the tiny checkpoint."""

from __future__ import annotations

import pytest
import torch

from glmv_agent.errors import ConfigError
from glmv_agent.glm4v.generation import (
    GenerationConfig, StopStringMatcher, ThinkingBudget, apply_repetition_penalty,
    apply_temperature, apply_top_k, apply_top_p, process_logits, select_tokens,
)

tf_logits = pytest.importorskip("transformers.generation.logits_process")


# ----------------------------------------------------------------------------- logits processors


@pytest.fixture
def random_scores() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 500, generator=g) * 4
    history = torch.randint(0, 500, (3, 40), generator=g)
    return scores, history


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(random_scores, penalty):
    scores, history = random_scores
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, history, True)
    ours = apply_repetition_penalty(scores.clone(), seen, penalty)
    theirs = tf_logits.RepetitionPenaltyLogitsProcessor(penalty)(history, scores.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
def test_temperature_matches_transformers(random_scores, temperature):
    scores, history = random_scores
    theirs = tf_logits.TemperatureLogitsWarper(temperature)(history, scores.clone())
    torch.testing.assert_close(apply_temperature(scores.clone(), temperature), theirs, rtol=0, atol=0)


@pytest.mark.parametrize("top_k", [1, 5, 50, 499])
def test_top_k_matches_transformers(random_scores, top_k):
    scores, history = random_scores
    theirs = tf_logits.TopKLogitsWarper(top_k)(history, scores.clone())
    assert torch.equal(apply_top_k(scores.clone(), top_k), theirs)


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_matches_transformers(random_scores, top_p):
    scores, history = random_scores
    theirs = tf_logits.TopPLogitsWarper(top_p)(history, scores.clone())
    ours = apply_top_p(scores.clone(), top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.equal(ours, theirs)


def test_full_chain_matches_transformers_in_order(random_scores):
    scores, history = random_scores
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, history, True)
    cfg = GenerationConfig(do_sample=True, temperature=0.6, top_k=40, top_p=0.8, repetition_penalty=1.2)
    chain = tf_logits.LogitsProcessorList([
        tf_logits.RepetitionPenaltyLogitsProcessor(1.2),
        tf_logits.TemperatureLogitsWarper(0.6),
        tf_logits.TopKLogitsWarper(40),
        tf_logits.TopPLogitsWarper(0.8),
    ])
    assert torch.equal(process_logits(scores.clone(), seen, cfg), chain(history, scores.clone()))


def test_greedy_ignores_warpers_and_temperature_zero_is_greedy(random_scores):
    scores, _ = random_scores
    greedy = select_tokens(process_logits(scores, None, GenerationConfig()), GenerationConfig(), None)
    cfg = GenerationConfig(do_sample=True, temperature=0.0, top_k=3)
    assert torch.equal(select_tokens(process_logits(scores, None, cfg), cfg, None), greedy)
    cfg_k1 = GenerationConfig(do_sample=True, top_k=1, seed=3)
    sampled = select_tokens(process_logits(scores, None, cfg_k1), cfg_k1, torch.Generator().manual_seed(3))
    assert torch.equal(sampled, greedy)


def test_sampling_follows_the_distribution():
    # Two allowed tokens with probabilities 0.8 / 0.2 after top-k; the empirical frequency
    # over many draws must be close (binomial std ~0.006 for n=4000).
    scores = torch.full((4000, 10), -1e4)
    scores[:, 3] = torch.log(torch.tensor(0.8))
    scores[:, 7] = torch.log(torch.tensor(0.2))
    cfg = GenerationConfig(do_sample=True, top_k=2)
    picks = select_tokens(process_logits(scores, None, cfg), cfg, torch.Generator().manual_seed(1))
    assert set(picks.unique().tolist()) == {3, 7}
    assert abs((picks == 3).float().mean().item() - 0.8) < 0.04


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(ConfigError, match="unknown generation option"):
        GenerationConfig().updated(nucleus=0.3)


# ----------------------------------------------------------------------------- stop strings


def _feed_all(matcher: StopStringMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush()


def test_stop_string_spanning_pieces_is_cut_before_it():
    m = StopStringMatcher(["</answer>"])
    emitted = [m.feed(p) for p in ["The answer", " is 4</", "ans", "wer> and more"]]
    assert m.stopped and m.matched == "</answer>"
    assert "".join(emitted) == "The answer is 4"
    # Nothing that could be the start of the stop string was emitted early.
    assert emitted[1] == " is 4"


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    m = StopStringMatcher(["STOP"])
    assert _feed_all(m, ["ST", "OR", "Y time S", "T"]) == "STORY time ST"
    assert not m.stopped


def test_earliest_of_several_stop_strings_wins():
    m = StopStringMatcher(["bb", "abc"])
    assert _feed_all(m, ["xxa", "bcbb"]) == "xx"
    assert m.matched == "abc"


# ----------------------------------------------------------------------------- thinking budget


def test_thinking_budget_forces_close_after_n_tokens():
    OPEN, CLOSE = [100], [101, 102]  # a two-token close marker exercises the queue
    tb = ThinkingBudget(3, OPEN, CLOSE, prompt_ids=[1, 2, 100])
    emitted = []
    for proposal in [5, 6, 7, 8, 9, 10, 11]:
        token = tb.forced_token() or proposal
        tb.observe(token)
        emitted.append(token)
    assert emitted == [5, 6, 7, 101, 102, 10, 11]
    assert tb.state == "closed"


def test_thinking_budget_idle_when_model_closes_itself_or_never_thinks():
    tb = ThinkingBudget(4, [100], [101], prompt_ids=[1, 2])
    for t in [100, 5, 101, 6, 7, 8, 9, 10]:  # opens, closes after 1 token, then answers
        assert tb.forced_token() is None
        tb.observe(t)
    tb2 = ThinkingBudget(0, [100], [101], prompt_ids=[100, 101])  # `<think></think>` prompt
    assert tb2.forced_token() is None
    tb3 = ThinkingBudget(0, [100], [101], prompt_ids=[100])  # zero budget: close at once
    assert tb3.forced_token() == 101


# ----------------------------------------------------------------------------- on the tiny model
# The real 9B weights cannot run here; the tiny random checkpoint has the real architecture,
# key names and tokenizer layout, and transformers' own Glm4vForConditionalGeneration is the
# oracle for greedy decoding.

from PIL import Image  # noqa: E402

from glmv_agent.glm4v.engine import Glm4vEngine, load  # noqa: E402
from glmv_agent.glm4v.generation import generate  # noqa: E402
from glmv_agent.messages import image, message  # noqa: E402

N_TOKENS = 24


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> Glm4vEngine:
    return load(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def hf_model(tiny_checkpoint):
    transformers = pytest.importorskip("transformers")
    return transformers.Glm4vForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()


def _screenshot() -> Image.Image:
    img = Image.new("RGB", (120, 90), (240, 240, 240))
    for x in range(20, 60):
        for y in range(30, 50):
            img.putpixel((x, y), (30, 90, 200))
    return img


TEXT_CHAT = [message("user", "Open the settings and turn on dark mode.")]
IMAGE_CHAT = [message("user", image(_screenshot()), "Click the blue button.")]


def _hf_greedy(hf_model, inputs: dict, n: int) -> list[list[int]]:
    hf_inputs = {k: v for k, v in inputs.items() if v is not None}
    out = hf_model.generate(**hf_inputs, do_sample=False, max_new_tokens=n, top_k=None, top_p=None)
    prompt_len = inputs["input_ids"].shape[1]
    return [row[prompt_len:].tolist() for row in out]


@pytest.mark.parametrize("chat", [TEXT_CHAT, IMAGE_CHAT], ids=["text", "image"])
def test_greedy_matches_transformers_generate(engine, hf_model, chat):
    inputs = engine.prepare(chat)
    if chat is IMAGE_CHAT:
        assert inputs["pixel_values"] is not None
    ours = engine.generate(chat, do_sample=False, max_new_tokens=N_TOKENS)
    (theirs,) = _hf_greedy(hf_model, inputs, N_TOKENS)
    assert len(ours.token_ids) >= 20
    assert ours.token_ids == theirs
    assert ours.finish_reason == "length"
    assert ours.text == engine.tokenizer.decode(ours.token_ids)
    assert ours.prefill_seconds > 0 and ours.decode_tokens_per_second > 0


def test_left_padded_batch_equals_each_prompt_alone(engine):
    long_chat = [message("user", "Search for the weather in Paris tomorrow and then book a table for two.")]
    alone = [engine.generate(c, do_sample=False, max_new_tokens=N_TOKENS).token_ids for c in (TEXT_CHAT, long_chat, IMAGE_CHAT)]
    batch_inputs = engine.prepare_batch([TEXT_CHAT, long_chat, IMAGE_CHAT])
    assert bool((batch_inputs["attention_mask"] == 0).any())  # padding really happened
    together = engine.generate_batch([TEXT_CHAT, long_chat, IMAGE_CHAT], do_sample=False, max_new_tokens=N_TOKENS)
    assert [r.token_ids for r in together] == alone


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(engine):
    greedy = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS).token_ids
    a = engine.generate(TEXT_CHAT, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, seed=7, max_new_tokens=N_TOKENS)
    b = engine.generate(TEXT_CHAT, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, seed=7, max_new_tokens=N_TOKENS)
    c = engine.generate(TEXT_CHAT, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, seed=8, max_new_tokens=N_TOKENS)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids  # 2048-token vocab, near-flat distribution: never equal in practice
    assert a.token_ids != greedy
    k1 = engine.generate(TEXT_CHAT, do_sample=True, top_k=1, seed=3, max_new_tokens=N_TOKENS).token_ids
    assert k1 == greedy


def test_repetition_penalty_generation_matches_transformers(engine, hf_model):
    inputs = engine.prepare(TEXT_CHAT)
    ours = engine.generate(TEXT_CHAT, do_sample=False, repetition_penalty=1.5, max_new_tokens=N_TOKENS)
    out = hf_model.generate(**{k: v for k, v in inputs.items() if v is not None}, do_sample=False,
                            repetition_penalty=1.5, max_new_tokens=N_TOKENS, top_k=None, top_p=None)
    assert ours.token_ids == out[0, inputs["input_ids"].shape[1]:].tolist()
    plain = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS)
    assert ours.token_ids != plain.token_ids  # the greedy run repeats tokens; the penalty changes it


def test_max_new_tokens_and_eos_stop(engine):
    base = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS)
    short = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=5)
    assert short.token_ids == base.token_ids[:5] and short.finish_reason == "length"
    # Declare the 8th greedy token an eos id: generation stops there and drops it from text.
    eos = base.token_ids[7]
    first = base.token_ids.index(eos)
    stopped = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS, eos_token_ids=[eos])
    assert stopped.finish_reason == "eos"
    assert stopped.token_ids == base.token_ids[: first + 1]
    assert stopped.text == engine.tokenizer.decode(base.token_ids[:first])


def test_stop_string_spanning_tokens(engine):
    base = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS)
    pieces = [engine.tokenizer.decode([t]) for t in base.token_ids]
    k = next(i for i in range(4, len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    stop = pieces[k][-2:] + pieces[k + 1][:2]  # straddles the boundary between two tokens
    full = "".join(pieces)
    result = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS, stop=[stop])
    assert result.finish_reason == "stop_string" and result.stop_string == stop
    assert result.text == full[: full.index(stop)]
    assert len(result.token_ids) <= k + 2  # generation ended as soon as the string completed
    streamed = "".join(engine.stream(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS, stop=[stop]))
    assert streamed == result.text


def test_stream_deltas_join_to_the_full_text(engine):
    full = engine.generate(IMAGE_CHAT, do_sample=False, max_new_tokens=N_TOKENS)
    holder: list = []
    deltas = list(engine.stream(IMAGE_CHAT, do_sample=False, max_new_tokens=N_TOKENS, result_holder=holder))
    assert len(deltas) > 5
    assert "".join(deltas) == full.text
    assert holder[0].token_ids == full.token_ids


def _prompt_inside_think(engine: Glm4vEngine) -> dict:
    """TEXT_CHAT's prompt with `<think>` appended, as if the model had opened a think block."""
    inputs = engine.prepare(TEXT_CHAT)
    ids = torch.cat([inputs["input_ids"], torch.tensor([engine.think_ids[0]])], dim=1)
    return {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_special_tokens_kept_by_default_and_dropped_on_request(engine):
    # The random model rarely emits a special token, so make it emit the box markers: the
    # thinking-budget mechanism feeds whatever "close" ids it is given after 2 tokens.
    box = [engine.tokenizer.special_token_id("<|begin_of_box|>"), engine.tokenizer.special_token_id("<|end_of_box|>")]
    inputs = _prompt_inside_think(engine)
    think_ids = (engine.think_ids[0], box)
    kept = generate(engine.model, engine.text_decoder, inputs,
                    engine.generation_config(do_sample=False, max_new_tokens=8, thinking_budget=2), think_ids=think_ids)[0]
    assert kept.token_ids[2:4] == box
    assert "<|begin_of_box|><|end_of_box|>" in kept.text
    skipped = generate(engine.model, engine.text_decoder, inputs,
                       engine.generation_config(do_sample=False, max_new_tokens=8, thinking_budget=2,
                                                keep_special_tokens=False), think_ids=think_ids)[0]
    assert skipped.token_ids == kept.token_ids
    assert "<|begin_of_box|>" not in skipped.text
    assert skipped.text == engine.tokenizer.decode(kept.token_ids, skip_special_tokens=True)


def test_thinking_budget_forces_close_and_generation_continues(engine):
    # Prompt ends inside an open <think> block; the random model never closes it itself.
    close_ids = engine.think_ids[1]
    inputs = _prompt_inside_think(engine)
    budget = 6
    (free,) = engine.generate_inputs(inputs, do_sample=False, max_new_tokens=N_TOKENS)
    assert close_ids[0] not in free.token_ids
    (forced,) = engine.generate_inputs(inputs, do_sample=False, max_new_tokens=N_TOKENS, thinking_budget=budget)
    n = len(close_ids)
    assert forced.token_ids[:budget] == free.token_ids[:budget]
    assert forced.token_ids[budget:budget + n] == close_ids
    assert len(forced.token_ids) == N_TOKENS  # kept going after </think>
    assert "</think>" in forced.text
    assert forced.text.index("</think>") > 0


def test_engine_defaults_come_from_generation_config_json(engine, tiny_checkpoint):
    import json

    data = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    d = engine.defaults
    assert (d.do_sample, d.top_k, d.top_p, d.max_new_tokens) == (data["do_sample"], data["top_k"], data["top_p"], data["max_new_tokens"])
    assert list(d.eos_token_ids) == data["eos_token_id"]
    assert engine.generation_config(temperature=0).greedy  # temperature 0 switches to greedy


def test_bad_options_fail_at_the_call_not_mid_stream(engine):
    with pytest.raises(ConfigError, match="top_p"):
        engine.stream(TEXT_CHAT, top_p=2.0)
    with pytest.raises(ConfigError, match="unknown generation option"):
        engine.chat(TEXT_CHAT, beams=4)


def test_module_level_chat_loads_once_and_matches_the_engine(engine, tiny_checkpoint):
    from glmv_agent.glm4v import engine as engine_module

    first = engine_module.chat(tiny_checkpoint, TEXT_CHAT, device="cpu", dtype="float32", do_sample=False, max_new_tokens=8)
    assert first == engine.chat(TEXT_CHAT, do_sample=False, max_new_tokens=8)
    cached = engine_module._engine_for(tiny_checkpoint, "cpu", "float32")
    assert engine_module._engine_for(tiny_checkpoint, "cpu", "float32") is cached
    assert "".join(engine_module.stream(tiny_checkpoint, TEXT_CHAT, device="cpu", dtype="float32",
                                        do_sample=False, max_new_tokens=8)) == first


def test_right_padded_batch_is_rejected_with_a_hint(engine):
    from glmv_agent.errors import InputError

    inputs = engine.processor([TEXT_CHAT, [message("user", "A much longer instruction than the first one, really.")]],
                              padding_side="right")
    with pytest.raises(InputError, match="left-padded"):
        engine.generate_inputs(inputs, do_sample=False, max_new_tokens=2)


def test_thinking_budget_is_idle_when_the_model_is_not_thinking(engine):
    plain = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS)
    budgeted = engine.generate(TEXT_CHAT, do_sample=False, max_new_tokens=N_TOKENS, thinking_budget=2)
    assert budgeted.token_ids == plain.token_ids


def test_stream_never_splits_a_multibyte_character(engine):
    # Force a byte-split emoji/CJK sequence through the real pipeline (the thinking-budget
    # forcing feeds arbitrary ids), then check every streamed delta is whole characters.
    from glmv_agent.glm4v.generation import stream_generate

    text = "点击🚀é"
    forced = engine.tokenizer.encode(text)
    assert len(forced) > len(text)  # some characters really span several byte tokens
    inputs = _prompt_inside_think(engine)
    config = engine.generation_config(do_sample=False, max_new_tokens=len(forced) + 3, thinking_budget=0)
    deltas = list(stream_generate(engine.model, engine.text_decoder, inputs, config,
                                  think_ids=(engine.think_ids[0], forced)))
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas).startswith(text)
    assert len(deltas) < len(forced) + 3  # split characters were held back, not emitted as U+FFFD
