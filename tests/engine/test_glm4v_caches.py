"""Vision-encoder cache and prefix KV cache (glm4v/caches.py) on the tiny checkpoints.

Exactness: with caches on, prefill logits, the next decode step's logits and greedy tokens
equal a fresh engine's with caches off (fp32 <= 1e-5; bf16: as close as two cold runs of
the same prompt, alone and in a padded batch, which is a few bf16 steps: the reused part
skips no work a cold run does, but the rest runs as a shorter prefill attending through a
mask, another kernel order), over the real prompts of three agent sequences (built by
the dialects, tests/support/agent_episodes.py), and a multi-turn chat whose turns carry the
model's answers (reused as well). Also: what is reused, eviction and the byte bound,
clearing, batches, concurrent threads, the compiled decode step.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from agent_episodes import TokenChat, chat_turns, page_sequence, pc_episode, phone_episode, screen

from glmv_agent.errors import ConfigError
from glmv_agent.glm4v.caches import EngineCaches, PrefixCache, PrefixEntry, Span, common_prefix
from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.messages import Message, image, message, text

GREEDY: dict[str, Any] = {"do_sample": False, "max_new_tokens": 8}
SEQUENCES = {"pc": pc_episode, "phone": phone_episode,
             "page": lambda: [m for _, m in page_sequence()]}


@pytest.fixture(scope="module")
def engines(tiny_checkpoint: Path, tiny_checkpoint_bf16: Path) -> dict[str, Glm4vEngine]:
    """Per dtype: one engine with the default caches, one with both off."""
    out = {}
    for name, path, dtype in (("float32", tiny_checkpoint, "float32"),
                              ("bfloat16", tiny_checkpoint_bf16, "bfloat16")):
        out[name] = load(path, device="cpu", dtype=dtype)
        out[name + "-cold"] = load(path, device="cpu", dtype=dtype, cache_bytes=0,
                                   prefix_cache_bytes=0)
    return out


def step_logits(engine: Glm4vEngine, messages: list[Message]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Prefill logits, the logits of one greedy decode step after it, and what was reused."""
    inputs = engine.prepare(messages)
    cache = engine.model.new_cache(1, 8192)
    extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
    first = engine.model.prefill(inputs["input_ids"], cache, **extra)
    second = engine.model.decode_step(first.argmax(-1, keepdim=True), cache)
    return first.float(), second.float(), cache.prefill_stats


def inputs_logits(engine: Glm4vEngine, inputs: dict[str, Any]) -> torch.Tensor:
    """Prefill logits of ready processor tensors (batch 1)."""
    cache = engine.model.new_cache(1, 8192)
    extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if inputs.get(k) is not None}
    return engine.model.prefill(inputs["input_ids"], cache, **extra).float()


def cold_noise(cold: Glm4vEngine, prompts: list[list[Message]]) -> float:
    """How far two cold runs of the same prompt differ: alone vs as a row of a padded batch
    (another kernel order); the largest over `prompts`."""
    noise = 0.0
    for messages in prompts:
        alone = step_logits(cold, messages)[0]
        longer = messages + [message("user", text("and one more thing " * 8))]
        inputs = cold.prepare_batch([messages, longer])
        cache = cold.model.new_cache(2, 8192)
        batched = cold.model.prefill(inputs["input_ids"], cache, pixel_values=inputs["pixel_values"],
                                     image_grid_thw=inputs["image_grid_thw"],
                                     attention_mask=inputs["attention_mask"])
        noise = max(noise, float((batched[0].float() - alone[0]).abs().max()))
    return noise


def assert_same(warm: Glm4vEngine, cold: Glm4vEngine, messages: list[Message],
                tol: float = 1e-5) -> Any:
    w1, w2, stats = step_logits(warm, messages)
    c1, c2, _ = step_logits(cold, messages)
    assert (w1 - c1).abs().max() <= tol
    assert (w2 - c2).abs().max() <= tol
    assert torch.equal(w1.argmax(-1), c1.argmax(-1)) and torch.equal(w2.argmax(-1), c2.argmax(-1))
    hot, fresh = warm.generate(messages, **GREEDY), cold.generate(messages, **GREEDY)
    assert hot.token_ids == fresh.token_ids and hot.text == fresh.text
    return stats


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_caches_on_equal_caches_off(engines: dict[str, Glm4vEngine], dtype: str, sequence: str) -> None:
    warm, cold = engines[dtype], engines[dtype + "-cold"]
    warm.clear_caches()
    prompts = SEQUENCES[sequence]()
    # fp32: float rounding of a shorter prefill; bf16: as close as two cold runs (x1.5).
    tol = 1e-5 if dtype == "float32" else 1.5 * cold_noise(cold, prompts)
    reused = []
    for messages in prompts:
        stats = assert_same(warm, cold, messages, tol)
        reused.append((stats.cached_tokens[0], stats.cached_images[0]))
        assert warm.caches.prefix.nbytes <= warm.caches.prefix.max_bytes
    prompt_lengths = [int(warm.prepare(m)["input_ids"].shape[1]) for m in prompts]
    if sequence == "pc":
        # Step k shows k history screenshots; all but the newest were encoded before.
        assert [images for _, images in reused] == [0, 0, 1, 2, 3]
    elif sequence == "phone":
        # Everything up to the newest turn's user message is the previous prompt: the reuse
        # stops at the previous screenshot, which this turn drops (the previous answer comes
        # after it, so storing answers cannot help AutoGLM).
        begin_image = warm.processor.image_start_token_id
        for turn in range(1, len(prompts)):
            previous = warm.prepare(prompts[turn - 1])["input_ids"][0]
            assert reused[turn][0] == int((previous == begin_image).nonzero()[0])
            assert reused[turn][0] > 0.8 * prompt_lengths[turn - 1]
    else:
        # query and assert reuse the page screenshot at the start of the prompt.
        first_ids = warm.prepare(prompts[0])["input_ids"][0]
        image_end = int((first_ids == warm.model.config.image_token_id).nonzero()[-1]) + 1
        for tokens, images in reused[1:]:
            assert tokens > image_end and images == 1
    assert cold.caches.nbytes == 0


def test_other_image_same_text_reuses_only_up_to_the_image(engines: dict[str, Glm4vEngine]) -> None:
    warm, cold = engines["float32"], engines["float32-cold"]
    warm.clear_caches()
    question = "What changed on the screen?"
    first = [message("user", image(screen(1)), text(question))]
    second = [message("user", image(screen(2)), text(question))]  # same size: same ids
    assert torch.equal(warm.prepare(first)["input_ids"], warm.prepare(second)["input_ids"])
    assert_same(warm, cold, first)
    stats = assert_same(warm, cold, second)
    ids = warm.prepare(second)["input_ids"][0]
    image_start = int((ids == warm.model.config.image_token_id).nonzero()[0])
    assert 0 < stats.cached_tokens[0] <= image_start
    assert stats.cached_images[0] == 0
    # The same image again, other text after it: the image is reused.
    third = [message("user", image(screen(1)), text("Where is the box?"))]
    stats = assert_same(warm, cold, third)
    assert stats.cached_tokens[0] > image_start and stats.cached_images[0] == 1


def test_vision_cache_is_keyed_by_content(tiny_checkpoint: Path) -> None:
    engine = load(tiny_checkpoint, device="cpu", dtype="float32", prefix_cache_bytes=0)
    one = engine.generate([message("user", image(screen(3)), text("a"))], **GREEDY)
    two = engine.generate([message("user", image(screen(3)), text("b"))], **GREEDY)  # new object
    three = engine.generate([message("user", image(screen(4)), text("b"))], **GREEDY)
    assert (one.cached_images, two.cached_images, three.cached_images) == (0, 1, 0)
    assert one.cached_tokens == two.cached_tokens == 0  # prefix cache off
    stats = engine.caches.stats()["vision"]
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 2, 2)


def stored_bytes(caches: EngineCaches) -> tuple[int, int]:
    """Bytes of the tensors the caches really hold (vision, prefix)."""
    vision = sum(t.numel() * t.element_size() for _, t in caches.vision._snapshot())
    prefix = sum(e.ids.numel() * 8 + 2 * e.k.numel() * e.k.element_size()
                 for _, e in caches.prefix._snapshot())
    return vision, prefix


def test_eviction_under_small_limits_stays_exact(tiny_checkpoint: Path,
                                                 engines: dict[str, Glm4vEngine]) -> None:
    cold = engines["float32-cold"]
    prompts = pc_episode()
    # Room for about one and a half prompts and two screenshots: every step evicts.
    kv = engines["float32"].model.config.text
    per_token = 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * 4 + 8
    prefix_limit = int(per_token * 2600 * 1.5)
    warm = load(tiny_checkpoint, device="cpu", dtype="float32", cache_bytes=40_000,
                prefix_cache_bytes=prefix_limit)
    for messages in prompts:
        assert_same(warm, cold, messages)
        assert warm.caches.prefix.nbytes <= prefix_limit and warm.caches.vision.nbytes <= 40_000
        assert stored_bytes(warm.caches) == (warm.caches.vision.nbytes, warm.caches.prefix.nbytes)
        assert len(warm.caches.prefix) <= 1
    stats = warm.caches.stats()
    assert stats["prefix"]["evictions"] >= 3 and stats["vision"]["evictions"] >= 3


def test_clear_caches_forgets_everything(engines: dict[str, Glm4vEngine]) -> None:
    warm = engines["float32"]
    (_, act), (_, query), _ = page_sequence()
    warm.generate(act, **GREEDY)
    assert warm.caches.nbytes > 0
    warm.clear_caches()
    assert warm.caches.nbytes == 0 and len(warm.caches.prefix) == len(warm.caches.vision) == 0
    result = warm.generate(query, **GREEDY)
    assert (result.cached_tokens, result.cached_images) == (0, 0)


def test_batch_rows_reuse_their_own_prefixes(engines: dict[str, Glm4vEngine]) -> None:
    warm, cold = engines["float32"], engines["float32-cold"]
    warm.clear_caches()
    (_, act), (_, query), (_, check) = page_sequence()
    warm.generate(act, **GREEDY)  # caches the page screenshot and the act prompt
    other = [message("user", image(screen(6)), text("Describe it."))]
    batch = [query, [message("user", text("No image here."))], check, other]
    hot, fresh = warm.generate_batch(batch, **GREEDY), cold.generate_batch(batch, **GREEDY)
    assert [r.token_ids for r in hot] == [r.token_ids for r in fresh]
    assert [r.prompt_tokens for r in hot] == [r.prompt_tokens for r in fresh]
    page_image_end = int((warm.prepare(act)["input_ids"][0]
                          == warm.model.config.image_token_id).nonzero()[-1]) + 1
    assert hot[0].cached_tokens > page_image_end and hot[2].cached_tokens > page_image_end
    assert hot[3].cached_tokens < 10  # only the chat template's opening is shared
    assert [r.cached_images for r in hot] == [1, 0, 1, 0]
    # Each row was stored: alone, the same prompts now reuse all but their last token.
    for messages, row in zip(batch, hot):
        single = warm.generate(messages, **GREEDY)
        assert single.token_ids == row.token_ids
        assert single.cached_tokens == single.prompt_tokens - 1
    # The prefix cache off: the batch is prefilled padded, the vision cache still serves it.
    vision_only = Glm4vEngine(warm.model, warm.processor, warm.defaults, prefix_cache_bytes=0)
    try:
        vision_only.generate(act, **GREEDY)
        padded = vision_only.generate_batch(batch, **GREEDY)
    finally:
        warm.model.caches = warm.caches  # the model is shared: give it back its engine's caches
    assert [r.token_ids for r in padded] == [r.token_ids for r in fresh]
    assert [r.cached_tokens for r in padded] == [0, 0, 0, 0]
    assert [r.cached_images for r in padded] == [1, 0, 1, 0]


def test_concurrent_threads_get_their_own_answers(engines: dict[str, Glm4vEngine]) -> None:
    warm, cold = engines["float32"], engines["float32-cold"]
    warm.clear_caches()
    prompts = phone_episode()[:3] + [m for _, m in page_sequence()]
    expected = [cold.generate(p, **GREEDY).token_ids for p in prompts]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask(index: int) -> None:
        try:
            for _ in range(2):
                results[index] = warm.generate(prompts[index], **GREEDY).token_ids
                assert results[index] == expected[index]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def clear() -> None:
        while not stop.is_set():
            warm.clear_caches()
            stop.wait(0.05)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    clearer = threading.Thread(target=clear)
    clearer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    stop.set()
    clearer.join()
    assert not errors, errors
    assert [results[i] for i in range(len(prompts))] == expected


def test_reuse_never_ends_inside_an_image() -> None:
    image_id = 7
    ids = torch.tensor([1, 2, image_id, image_id, image_id, 3, 4])
    spans = [Span(2, 5, b"A")]
    entry = PrefixEntry(ids.clone(), tuple(spans), torch.zeros(1, 1, 7, 2), torch.zeros(1, 1, 7, 2))
    assert common_prefix(entry, ids, spans, limit=6) == 6
    assert common_prefix(entry, ids, spans, limit=4) == 2  # would cut the image: stop before it
    assert common_prefix(entry, ids, [Span(2, 5, b"B")], limit=6) == 2  # another image
    other = ids.clone()
    other[5] = 9
    assert common_prefix(entry, other, spans, limit=6) == 5
    cache = PrefixCache(10**6)
    cache.store(entry)
    match = cache.lookup(other, spans, limit=6)
    assert match is not None and (match.length, match.images) == (5, 1)
    assert cache.lookup(torch.tensor([5, 5]), [], limit=1) is None


@pytest.mark.parametrize("option", ["cache_bytes", "prefix_cache_bytes"])
def test_bad_cache_sizes_are_config_errors(option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        EngineCaches(**{option: -1})
    with pytest.raises(ConfigError, match=option):
        EngineCaches(**{option: "lots"})  # type: ignore[arg-type]


def test_compiled_decode_after_a_prefix_cached_prefill(tiny_checkpoint: Path,
                                                       engines: dict[str, Glm4vEngine]) -> None:
    cold = engines["float32-cold"]
    compiled = load(tiny_checkpoint, device="cpu", dtype="float32", compile=True)
    for kind, messages in page_sequence():
        hot = compiled.generate(messages, **GREEDY)
        assert hot.token_ids == cold.generate(messages, **GREEDY).token_ids
        assert (hot.cached_tokens > 0) == (kind != "act")


def test_server_reports_cached_tokens(engines: dict[str, Glm4vEngine]) -> None:
    import httpx
    from served import running_server

    from glmv_agent.server import ServerConfig

    warm = engines["float32"]
    warm.clear_caches()
    question = [{"role": "user", "content": "How many items are in the cart? Answer briefly."}]
    config = ServerConfig(model_name="tiny", max_queue=4, max_batch=1, default_max_tokens=4)
    with running_server(warm, config) as served:
        body = {"model": "tiny", "messages": question, "max_tokens": 4, "temperature": 0}
        first = httpx.post(served.v1 + "/chat/completions", json=body, timeout=120).json()
        again = httpx.post(served.v1 + "/chat/completions", json=body, timeout=120).json()
        streamed = httpx.post(served.v1 + "/chat/completions", timeout=120, json={
            **body, "stream": True, "stream_options": {"include_usage": True}}).text
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    prompt = again["usage"]["prompt_tokens"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == prompt - 1
    assert f'"prompt_tokens_details":{{"cached_tokens":{prompt - 1}}}' in streamed.replace(" ", "")


def test_step_timings_and_report_show_prefill_and_cached_tokens(
        tmp_path: Path, engines: dict[str, Glm4vEngine]) -> None:
    """The tiny model answers gibberish, so the agent re-asks: the re-ask prompt starts with
    the first one, and the step records the prefill time and the tokens its cache served."""
    from scripted_env import FormEnv, JsonDialect

    from glmv_agent.agent import Agent
    from glmv_agent.backends.local import LocalBackend
    from glmv_agent.report import render_report
    from glmv_agent.trace import TraceReader

    warm = engines["float32"]
    warm.clear_caches()
    backend = LocalBackend(warm, max_new_tokens=4, temperature=0.0)
    for on_text in (None, lambda delta: None):  # complete(), then stream()
        trace = tmp_path / ("streamed" if on_text else "plain")
        agent = Agent(backend, FormEnv(), dialect=JsonDialect("pc"), max_parse_retries=1,
                      trace_dir=trace, on_text=on_text)
        agent.run("press plus")
        timings = TraceReader(trace).records()[0].timings
        assert 0 < timings["model_prefill"] <= timings["model"]
        assert timings["model_cached_tokens"] == backend.last_result.cached_tokens > 0
        page = render_report(trace).read_text("utf-8")
        assert f"<td>model_cached_tokens</td><td>{int(timings['model_cached_tokens'])} tokens</td>" in page


def test_engines_sharing_a_model_each_use_their_own_caches(engines: dict[str, Glm4vEngine]) -> None:
    """Was: a second engine on the same model took the model's caches over for good."""
    warm = engines["float32"]
    warm.clear_caches()
    (_, act), (_, query), _ = page_sequence()
    warm.generate(act, **GREEDY)
    off = Glm4vEngine(warm.model, warm.processor, warm.defaults, cache_bytes=0, prefix_cache_bytes=0)
    assert off.generate(query, **GREEDY).cached_tokens == 0
    assert warm.generate(query, **GREEDY).cached_tokens > 0
    assert off.caches.nbytes == 0


CHAT_TURNS = chat_turns()


def padded_noise(cold: Glm4vEngine, inputs: dict[str, Any]) -> float:
    """`cold_noise` for ready inputs: prefill logits alone vs as the left-padded shorter row
    of a batch whose other row goes on longer."""
    ids = inputs["input_ids"][0]
    longer = torch.cat([ids, torch.tensor(cold.tokenizer.encode("and one more thing " * 8))])
    pad = longer.shape[0] - ids.shape[0]
    batch = torch.stack([torch.cat([torch.full((pad,), cold.pad_token_id), ids]), longer])
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0
    extra = {k: torch.cat([inputs[k]] * 2) for k in ("pixel_values", "image_grid_thw") if k in inputs}
    batched = cold.model.prefill(batch, cold.model.new_cache(2, 8192), attention_mask=mask, **extra)
    return float((batched[0].float() - inputs_logits(cold, inputs)[0]).abs().max())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_answers_are_reused_by_the_next_turn(engines: dict[str, Glm4vEngine], dtype: str) -> None:
    """Each turn reuses the whole previous turn, its answer too (all but the answer's last
    token, which was never fed back), with tokens equal to caches off and logits within
    fp32 1e-5 / bf16 1.5x the cold noise (decoded keys are another kernel order than
    prefilled ones): the decoded keys sit at the rotary positions a cold run gives them,
    images before and after."""
    warm, cold = engines[dtype], engines[dtype + "-cold"]
    warm.clear_caches()
    chat = TokenChat(warm)
    previous = 0  # tokens of the previous prompt + its answer
    differences, noise = [], [0.0]
    for number, content in enumerate(CHAT_TURNS):
        inputs = chat.ask(*content)
        hot = warm.generate_inputs(inputs, **GREEDY)[0]
        fresh = cold.generate_inputs(inputs, **GREEDY)[0]
        assert hot.token_ids == fresh.token_ids and hot.text == fresh.text
        assert hot.cached_tokens == (previous - 1 if number else 0)
        assert hot.cached_images == sum(1 for c in CHAT_TURNS[:number] for part in c if part["type"] == "image")
        differences.append(float((inputs_logits(warm, inputs) - inputs_logits(cold, inputs)).abs().max()))
        if dtype == "bfloat16":
            noise.append(padded_noise(cold, inputs))
        chat.answer(hot.token_ids)
        previous = len(chat.ids)
        # The answer replaced its prompt's entry (it answers every lookup the prompt could).
        assert len(warm.caches.prefix) == 1
        assert warm.caches.prefix._snapshot()[0][1].length == previous - 1
    assert max(differences) <= (1e-5 if dtype == "float32" else 1.5 * max(noise))
    # The last turn asked again for a shorter answer: the stored entry holds it already.
    again = warm.generate_inputs(inputs, **{**GREEDY, "max_new_tokens": 4})[0]
    assert again.token_ids == hot.token_ids[:4]
    assert again.cached_tokens == inputs["input_ids"].shape[1] - 1
    assert len(warm.caches.prefix) == 1


def test_an_edited_answer_reuses_only_up_to_the_edit(engines: dict[str, Glm4vEngine]) -> None:
    """Never the keys of another conversation: a client that changed one token of the
    answer gets the reuse up to that token, and the cold run's logits."""
    warm, cold = engines["float32"], engines["float32-cold"]
    warm.clear_caches()
    chat = TokenChat(warm)
    first = warm.generate_inputs(chat.ask(*CHAT_TURNS[0]), **GREEDY)[0]
    prompt = len(chat.ids)
    edited = list(first.token_ids)
    edited[2] = (edited[2] + 1) % warm.model.config.text.vocab_size
    chat.answer(edited)
    inputs = chat.ask(*CHAT_TURNS[1])
    hot = warm.generate_inputs(inputs, **GREEDY)[0]
    assert hot.cached_tokens == prompt + 2
    assert hot.token_ids == cold.generate_inputs(inputs, **GREEDY)[0].token_ids
    assert (inputs_logits(warm, inputs) - inputs_logits(cold, inputs)).abs().max() <= 1e-5


def test_answers_of_a_batch_and_under_a_small_limit(engines: dict[str, Glm4vEngine]) -> None:
    """The server's case: two conversations answered in one padded batch, each next turn
    alone reuses its own answer. With room for about one conversation (the second row's
    answer evicts the first's), the bound holds, the first conversation's next turn finds
    no stale keys (only the chat template's opening is shared) and answers stay caches off's."""
    warm, cold = engines["float32"], engines["float32-cold"]
    kv = warm.model.config.text
    per_token = 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * 4 + 8
    small = Glm4vEngine(warm.model, warm.processor, warm.defaults, prefix_cache_bytes=per_token * 120)
    firsts = [CHAT_TURNS[0], (text("Describe a coffee maker."),)]
    try:
        for engine in (warm, small):
            engine.clear_caches()
            chats = [TokenChat(engine), TokenChat(engine)]
            alone = [chat.ask(*content) for chat, content in zip(chats, firsts)]
            batch = engine.prepare_batch([[message("user", *content)] for content in firsts])
            assert [int(n) for n in batch["attention_mask"].sum(-1)] == [len(c.ids) for c in chats]
            answers = engine.generate_inputs(batch, **GREEDY)
            for chat, inputs, answer in zip(chats, alone, answers):
                assert answer.token_ids == cold.generate_inputs(inputs, **GREEDY)[0].token_ids
                chat.answer(answer.token_ids)
            reused = []
            for chat in chats:
                previous = len(chat.ids)
                inputs = chat.ask(text("Go on."))
                hot = engine.generate_inputs(inputs, **GREEDY)[0]
                assert hot.token_ids == cold.generate_inputs(inputs, **GREEDY)[0].token_ids
                reused.append((hot.cached_tokens, previous - 1))
                assert engine.caches.prefix.nbytes <= engine.caches.prefix.max_bytes
                assert stored_bytes(engine.caches)[1] == engine.caches.prefix.nbytes
            if engine is warm:
                assert [got for got, _ in reused] == [full for _, full in reused]
            else:
                assert reused[0][0] == len(warm.tokenizer.encode("[gMASK]<sop><|user|>\n"))
                assert engine.caches.prefix.evictions >= 2
    finally:
        warm.model.caches = warm.caches  # the model is shared: give it back its engine's caches


@pytest.mark.parametrize(("length", "keys"), [(1, 1), (300, 305), (700, 1500), (256, 256)])
def test_continuation_attention_is_one_masked_sdpa(length: int, keys: int) -> None:
    """The rest of a prompt after a reused prefix, run in query chunks (cpu_kernels), equals
    one masked SDPA over the whole rectangle (fp32)."""
    from glmv_agent.glm4v.cpu_kernels import continuation_attention

    generator = torch.Generator().manual_seed(length)
    q = torch.randn(1, 4, length, 16, generator=generator)
    k, v = torch.randn(2, 1, 2, keys, 16, generator=generator)
    mask = (torch.arange(keys)[None, :] <= torch.arange(keys - length, keys)[:, None])[None, None]
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25,
                                                             enable_gqa=True)
    assert (continuation_attention(q, k, v, mask, 0.25) - whole).abs().max() <= 1e-6
