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
