"""Token generation for the GLM-4.1V engine: sampling, stop strings, streaming, thinking budget.

Layout follows gpt-fast: `prefill` runs the prompt once, `decode_one_token` is the hot step
(the one thing worth `torch.compile`-ing or CUDA-graphing), `decode_n_tokens` loops it.
Everything above the token level (text deltas, stop strings, the result object) lives in
`generate` / `stream_generate` and never touches the model.

Logits processing follows transformers' semantics and order so results are comparable:
repetition penalty -> temperature -> top-k -> top-p -> sample (or argmax when greedy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import torch

from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

FinishReason = Literal["eos", "stop_string", "length"]


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. Defaults are greedy decoding with special tokens kept in the text
    (agents need `<|begin_of_box|>` and friends to survive)."""

    max_new_tokens: int = 1024
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    # OpenAI / vLLM penalties on tokens already generated (not the prompt): logits minus
    # frequency * count and presence * (count > 0). AutoGLM's client uses frequency 0.2.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    keep_special_tokens: bool = True
    # Force `</think>` after this many tokens generated inside `<think>` (None = no limit).
    thinking_budget: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers; keep the dataclass hashable and immutable.
        object.__setattr__(self, "eos_token_ids", tuple(int(i) for i in self.eos_token_ids))
        if isinstance(self.stop_strings, str):
            object.__setattr__(self, "stop_strings", (self.stop_strings,))
        object.__setattr__(self, "stop_strings", tuple(s for s in self.stop_strings if s))
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1.0 disables it), got {self.repetition_penalty}")
        if self.thinking_budget is not None and self.thinking_budget < 0:
            raise ConfigError(f"thinking_budget must be >= 0 or None, got {self.thinking_budget}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:  # OpenAI's range (also rejects NaN)
                raise ConfigError(f"{name} must be in [-2, 2] (0 disables it), got {getattr(self, name)}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def updated(self, **changes: Any) -> GenerationConfig:
        """A copy with `changes` applied; unknown names raise ConfigError."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ConfigError(
                f"unknown generation option(s) {sorted(unknown)}; valid: {sorted(self.__dataclass_fields__)}"
            )
        return replace(self, **changes)


# ----------------------------------------------------------------------------- logits processors
# Each takes scores [B, V] and returns new scores; same maths as transformers' processors.


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on every token id marked in `seen` ([B, V] bool): negative logits
    are multiplied, positive ones divided (transformers' RepetitionPenaltyLogitsProcessor)."""
    if penalty == 1.0:
        return scores
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def apply_output_penalties(scores: torch.Tensor, counts: torch.Tensor, frequency: float,
                           presence: float) -> torch.Tensor:
    """vLLM's (and OpenAI's) frequency and presence penalties; `counts` [B, V] holds how
    often each id was generated so far."""
    return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)


def apply_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 1.0:
        return scores
    return scores / temperature


def apply_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` highest logits (ties with the k-th are kept too, as in transformers)."""
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def apply_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: drop the least likely tokens whose total probability <= 1 - top_p,
    always keeping the most likely one."""
    if top_p >= 1.0:
        return scores
    sorted_logits, sorted_idx = torch.sort(scores, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def process_logits(scores: torch.Tensor, seen: torch.Tensor | None, config: GenerationConfig,
                   counts: torch.Tensor | None = None) -> torch.Tensor:
    """All processors in transformers' order (the output penalties, which transformers
    lacks, right after the repetition penalty, as vLLM). Warpers only apply when sampling."""
    scores = scores.float()
    if seen is not None:
        scores = apply_repetition_penalty(scores, seen, config.repetition_penalty)
    if counts is not None:
        scores = apply_output_penalties(scores, counts, config.frequency_penalty,
                                        config.presence_penalty)
    if config.greedy:
        return scores
    scores = apply_temperature(scores, config.temperature)
    scores = apply_top_k(scores, config.top_k)
    return apply_top_p(scores, config.top_p)


def select_tokens(scores: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row ([B]) from processed scores, without a host sync.

    Sampling draws from softmax(scores) as the exponential race argmax(p_i / E_i), E_i ~ Exp(1)
    i.i.d. (P(i wins) = p_i / sum p): the same distribution as torch.multinomial, which
    syncs with the host on CUDA to validate the probabilities."""
    if config.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    race.clamp_min_(torch.finfo(race.dtype).tiny)  # a draw of exactly 0 would give inf / NaN
    return (probs / race).argmax(dim=-1)


# ----------------------------------------------------------------------------- thinking budget


class ThinkingBudget:
    """Per-sequence state machine that closes an over-long `<think>` block.

    It watches the token stream; once `budget` tokens have been generated inside an open
    `<think>` without `</think>`, it hands out the `</think>` token ids one by one to be fed
    instead of sampled tokens, then lets the model continue with its answer.
    """

    def __init__(self, budget: int, open_ids: Sequence[int], close_ids: Sequence[int], prompt_ids: Sequence[int]) -> None:
        if not open_ids or not close_ids:
            raise ConfigError("thinking budget needs the token ids of '<think>' and '</think>'")
        self.budget = budget
        self.open_ids = list(open_ids)
        self.close_ids = list(close_ids)
        self._tail: list[int] = []  # last few tokens, to spot multi-token markers
        self._forced: list[int] = []
        self.count = 0
        self.state: Literal["outside", "thinking", "forcing", "closed"] = "outside"
        for token in prompt_ids:  # a prompt ending in `<think>` starts inside the block
            self._track(int(token), generated=False)
        if self.state == "thinking" and self.count >= budget:
            self._start_forcing()

    def _ends_with(self, seq: list[int]) -> bool:
        return len(self._tail) >= len(seq) and self._tail[-len(seq):] == seq

    def _track(self, token: int, generated: bool) -> None:
        self._tail = (self._tail + [token])[-max(len(self.open_ids), len(self.close_ids)):]
        if self._ends_with(self.close_ids):
            self.state = "outside" if not generated else "closed"
            self.count = 0
        elif self._ends_with(self.open_ids):
            self.state = "thinking"
            self.count = 0
        elif self.state == "thinking" and generated:
            self.count += 1

    def _start_forcing(self) -> None:
        self.state = "forcing"
        self._forced = list(self.close_ids)
        logger.info("thinking budget of %d tokens reached; forcing </think>", self.budget)

    def forced_token(self) -> int | None:
        """The token that must come next, or None when the model chooses freely."""
        return self._forced[0] if self.state == "forcing" else None

    def observe(self, token: int) -> None:
        """Record the token that was actually emitted."""
        if self.state == "forcing":
            self._forced.pop(0)
            self._tail = (self._tail + [token])[-max(len(self.open_ids), len(self.close_ids)):]
            if not self._forced:
                self.state = "closed"
            return
        self._track(token, generated=True)
        if self.state == "thinking" and self.count >= self.budget:
            self._start_forcing()


# ----------------------------------------------------------------------------- text layer


class TextDecoder(Protocol):
    """Incremental detokenizer (the tokenizer's StreamDecoder): `push(id)` returns new text,
    never splitting a character; `flush()` returns whatever was held back."""

    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class StopStringMatcher:
    """Finds caller stop strings in streamed text, even when they span several tokens.

    `feed` returns the text that is safe to emit: it holds back any tail that could be the
    start of a stop string, and cuts the text right before a completed stop string.
    """

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        buffer = self._held + delta
        if not self.stop_strings:
            self._held = ""
            return buffer
        hits = [(buffer.find(s), s) for s in self.stop_strings]
        hits = [(i, s) for i, s in hits if i >= 0]
        if hits:
            index, stop = min(hits)
            self.stopped, self.matched, self._held = True, stop, ""
            return buffer[:index]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[: len(buffer) - keep]

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[len(text) - k:]):
                    longest = k
                    break
        return longest

    def flush(self) -> str:
        """At the end of generation the held-back tail was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


# ----------------------------------------------------------------------------- model loop


class GenerationModel(Protocol):
    """What generation needs from the model (see glm4v/model.py)."""

    def new_cache(self, batch_size: int, max_length: int, device: Any = None, dtype: Any = None) -> Any: ...

    def prefill(self, input_ids: torch.Tensor, cache: Any, **inputs: Any) -> torch.Tensor: ...

    def decode_step(self, token_ids: torch.Tensor, cache: Any, *, check_ids: bool = True) -> torch.Tensor: ...


@dataclass
class GenerationResult:
    """One sequence's output."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stop_string: str | None = None
    # Prompt tokens whose keys/values came from the prefix cache (not prefilled), and images
    # not run through the vision tower (in that prefix or in the vision cache); caches.py.
    cached_tokens: int = 0
    cached_images: int = 0
    vision_seconds: float = 0.0  # of prefill_seconds, in the vision tower (whole batch)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_second(self) -> float:
        # The first token comes from prefill; the rest each cost one decode step.
        steps = max(len(self.token_ids) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


@dataclass
class _Timing:
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    steps: int = 0
    # Per row: what the prefill reused (see GenerationResult), and the vision tower's time.
    cached_tokens: list[int] = field(default_factory=list)
    cached_images: list[int] = field(default_factory=list)
    vision_seconds: float = 0.0


@dataclass
class TokenStream:
    """Per-step tokens from `decode_n_tokens`, plus timings and per-row finish state."""

    batch_size: int
    timing: _Timing = field(default_factory=_Timing)
    finished: list[bool] = field(default_factory=list)
    cache: Any = None  # the KV cache the tokens went into (to store the answers from)


# Makes (or hands out a reused) KV cache: (batch_size, max_length, device=...) -> cache.
CacheFactory = Callable[..., Any]

# Processor outputs the model's prefill takes besides input_ids.
_PREFILL_INPUTS = ("attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@torch.inference_mode()
def prefill(model: GenerationModel, input_ids: torch.Tensor, cache: Any, **inputs: Any) -> torch.Tensor:
    """Run the whole prompt (with its images/videos); logits of the last position [B, V]."""
    return model.prefill(input_ids, cache, **inputs)


@torch.inference_mode()
def decode_one_token(model: GenerationModel, token_ids: torch.Tensor, cache: Any) -> torch.Tensor:
    """The hot step: one new token per row [B, 1] -> next logits [B, V]. The ids were sampled
    from this model's logits (or forced from the prompt's tokenizer), so they are in range by
    construction and not re-checked (that would be a host sync per token)."""
    return model.decode_step(token_ids, cache, check_ids=False)


# Cache lengths are rounded up to a multiple of this, so prompts of different lengths share
# one cache shape (a compiled / CUDA-graphed step is not re-specialized for every prompt).
CACHE_LENGTH_BUCKET = 256


def cache_length(prompt_len: int, max_new_tokens: int) -> int:
    """Slots for a prompt plus its new tokens, rounded up to CACHE_LENGTH_BUCKET."""
    needed = prompt_len + max_new_tokens
    return -(-needed // CACHE_LENGTH_BUCKET) * CACHE_LENGTH_BUCKET


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_n_tokens(
    model: GenerationModel,
    inputs: dict[str, Any],
    config: GenerationConfig,
    *,
    think_ids: tuple[Sequence[int], Sequence[int]] | None = None,
    pad_token_id: int = 0,
    stream: TokenStream | None = None,
    step_fn: Callable[[GenerationModel, torch.Tensor, Any], torch.Tensor] = decode_one_token,
    new_cache: CacheFactory | None = None,
) -> Generator[list[int | None], None, None]:
    """Prefill, then yield one token per row per step (None for rows already finished).

    Rows stop at an eos id; the caller stops the whole iteration by closing it (stop
    strings) or when `max_new_tokens` is reached. `inputs` is the processor output:
    input_ids [B, L] (left-padded when B > 1), attention_mask, pixel_values, ...
    `step_fn` is the hot step (decode_one_token or a compiled variant); `new_cache(batch,
    max_length, device=...)` makes the KV cache (default: the model's `new_cache`).
    """
    input_ids: torch.Tensor = inputs["input_ids"]
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be a non-empty [batch, length] tensor, got shape {tuple(input_ids.shape)}")
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    attention_mask = inputs.get("attention_mask")
    if attention_mask is not None and batch > 1 and bool((attention_mask[:, -1] == 0).any()):
        raise InputError("batched prompts must be left-padded (attention_mask[:, -1] must be all ones)")

    stream = stream or TokenStream(batch)
    stream.batch_size = batch
    stream.finished = [False] * batch
    eos = set(config.eos_token_ids)
    generator = None
    if not config.greedy and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    budgets: list[ThinkingBudget | None] = [None] * batch
    if config.thinking_budget is not None and think_ids is not None:
        for row in range(batch):
            ids = input_ids[row] if attention_mask is None else input_ids[row][attention_mask[row].bool()]
            budgets[row] = ThinkingBudget(config.thinking_budget, think_ids[0], think_ids[1], ids.tolist())

    extra = {k: inputs[k] for k in _PREFILL_INPUTS if inputs.get(k) is not None}
    cache = (new_cache or model.new_cache)(batch, cache_length(prompt_len, config.max_new_tokens), device=device)
    stream.cache = cache

    t0 = time.perf_counter()
    logits = prefill(model, input_ids, cache, **extra)
    _sync(device)
    stream.timing.prefill_seconds = time.perf_counter() - t0
    reused = getattr(cache, "prefill_stats", None)
    if reused is not None:
        stream.timing.cached_tokens = list(reused.cached_tokens)
        stream.timing.cached_images = list(reused.cached_images)
        stream.timing.vision_seconds = reused.vision_seconds
    # Tokens already present, for the repetition penalty: the prompt counts (as in
    # transformers), left padding does not.
    seen: torch.Tensor | None = None
    if config.repetition_penalty != 1.0:
        seen = torch.zeros(batch, logits.shape[-1], dtype=torch.bool, device=device)
        for row in range(batch):
            ids = input_ids[row] if attention_mask is None else input_ids[row][attention_mask[row].bool()]
            seen[row, ids] = True
    counts: torch.Tensor | None = None  # generated ids, for the frequency/presence penalties
    if config.frequency_penalty or config.presence_penalty:
        counts = torch.zeros(batch, logits.shape[-1], dtype=torch.float32, device=device)
        one = torch.ones(batch, 1, dtype=torch.float32, device=device)

    t_decode = time.perf_counter()
    for step in range(config.max_new_tokens):
        scores = process_logits(logits, seen, config, counts)
        chosen = select_tokens(scores, config, generator)
        for row, budget in enumerate(budgets):
            forced = budget.forced_token() if budget is not None else None
            if forced is not None:
                chosen[row] = forced
        if any(stream.finished):
            chosen = chosen.masked_fill(torch.tensor(stream.finished, device=device), pad_token_id)
        tokens = chosen.tolist()
        out: list[int | None] = []
        for row, token in enumerate(tokens):
            if stream.finished[row]:
                out.append(None)
                continue
            out.append(token)
            budget = budgets[row]
            if budget is not None:
                budget.observe(token)
            if token in eos:
                stream.finished[row] = True
        if seen is not None:
            seen.scatter_(1, chosen[:, None], True)
        if counts is not None:
            counts.scatter_add_(1, chosen[:, None], one)
        stream.timing.decode_seconds = time.perf_counter() - t_decode
        stream.timing.steps = step + 1
        yield out
        if all(stream.finished) or step + 1 == config.max_new_tokens:
            break
        logits = step_fn(model, chosen[:, None], cache)
    _sync(device)
    stream.timing.decode_seconds = time.perf_counter() - t_decode


class _RowText:
    """Text state of one sequence: detokenizer + stop-string matcher."""

    def __init__(self, decoder: TextDecoder, stop_strings: Sequence[str], eos: set[int]) -> None:
        self.decoder = decoder
        self.matcher = StopStringMatcher(stop_strings)
        self.eos = eos
        self.token_ids: list[int] = []
        self.parts: list[str] = []
        self.finish_reason: FinishReason | None = None

    def push(self, token: int) -> str:
        """Add one token; return the new visible text."""
        self.token_ids.append(token)
        if token in self.eos:
            self.finish_reason = "eos"
            return self._emit(self.matcher.feed(self.decoder.flush()) + self.matcher.flush())
        delta = self.matcher.feed(self.decoder.push(token))
        if self.matcher.stopped:
            self.finish_reason = "stop_string"
        return self._emit(delta)

    def finish(self) -> str:
        """End of generation without eos/stop: flush what was held back."""
        if self.finish_reason is None:
            self.finish_reason = "length"
            return self._emit(self.matcher.feed(self.decoder.flush()) + self.matcher.flush())
        return ""

    def _emit(self, text: str) -> str:
        if text:
            self.parts.append(text)
        return text

    def result(self, prompt_tokens: int, timing: _Timing, row: int = 0) -> GenerationResult:
        """This row's GenerationResult once it is finished (call after `finish()`)."""
        return GenerationResult(
            cached_tokens=timing.cached_tokens[row] if row < len(timing.cached_tokens) else 0,
            cached_images=timing.cached_images[row] if row < len(timing.cached_images) else 0,
            vision_seconds=timing.vision_seconds,
            text="".join(self.parts),
            token_ids=self.token_ids,
            finish_reason=self.finish_reason or "length",
            prompt_tokens=prompt_tokens,
            prefill_seconds=timing.prefill_seconds,
            decode_seconds=timing.decode_seconds,
            stop_string=self.matcher.matched,
        )


def _store_answers(model: GenerationModel, stream: TokenStream, answers: Sequence[Sequence[int]]) -> None:
    """After a generation that ran to its end: a model with `store_answers` (the GLM-4.1V
    one) keeps each row's prompt + answer keys/values (glm4v/caches.py), so that a next turn
    carrying this answer in its history reuses them. `answers`: the tokens of each row."""
    store = getattr(model, "store_answers", None)
    if store is not None and stream.cache is not None:
        store(stream.cache, answers)
    stream.cache = None  # the cache may be handed out again (compiled.CompiledDecodeStep)


def generate(
    model: GenerationModel,
    new_decoder: Callable[[bool], TextDecoder],
    inputs: dict[str, Any],
    config: GenerationConfig,
    *,
    think_ids: tuple[Sequence[int], Sequence[int]] | None = None,
    pad_token_id: int = 0,
    on_text: Callable[[int, str], None] | None = None,
    step_fn: Callable[[GenerationModel, torch.Tensor, Any], torch.Tensor] = decode_one_token,
    new_cache: CacheFactory | None = None,
) -> list[GenerationResult]:
    """Generate for every row of `inputs`; one GenerationResult per row.

    `new_decoder(skip_special_tokens)` makes a fresh incremental detokenizer (e.g.
    `tokenizer.stream_decoder`).
    `on_text(row, delta)` is called with each new piece of visible text.
    The returned text excludes the eos token and anything from a stop string on.
    """
    batch = inputs["input_ids"].shape[0]
    eos = set(config.eos_token_ids)
    skip = not config.keep_special_tokens
    rows = [_RowText(new_decoder(skip), config.stop_strings, eos) for _ in range(batch)]
    stream = TokenStream(batch)
    tokens_iter = decode_n_tokens(
        model, inputs, config, think_ids=think_ids, pad_token_id=pad_token_id, stream=stream, step_fn=step_fn,
        new_cache=new_cache,
    )
    try:
        for step_tokens in tokens_iter:
            for row, token in enumerate(step_tokens):
                if token is None or rows[row].finish_reason is not None:
                    continue
                delta = rows[row].push(token)
                if delta and on_text is not None:
                    on_text(row, delta)
            if all(r.finish_reason is not None for r in rows):
                break
    finally:
        tokens_iter.close()
    results = []
    for row, state in enumerate(rows):
        tail = state.finish()
        if tail and on_text is not None:
            on_text(row, tail)
        prompt_tokens = inputs["input_ids"].shape[1]
        if inputs.get("attention_mask") is not None:
            prompt_tokens = int(inputs["attention_mask"][row].sum())
        results.append(state.result(prompt_tokens, stream.timing, row))
    _store_answers(model, stream, [state.token_ids for state in rows])
    return results


def stream_generate(
    model: GenerationModel,
    new_decoder: Callable[[bool], TextDecoder],
    inputs: dict[str, Any],
    config: GenerationConfig,
    *,
    think_ids: tuple[Sequence[int], Sequence[int]] | None = None,
    step_fn: Callable[[GenerationModel, torch.Tensor, Any], torch.Tensor] = decode_one_token,
    new_cache: CacheFactory | None = None,
    result_holder: list[GenerationResult] | None = None,
) -> Iterator[str]:
    """Text deltas for a single prompt (batch 1) as they are generated.

    Deltas never split a character and never contain (the start of) a stop string; joined
    they equal `generate(...)[0].text`. If `result_holder` is given, the final
    GenerationResult is appended to it when the stream ends.
    """
    if inputs["input_ids"].shape[0] != 1:
        raise InputError("streaming supports one prompt at a time; use generate() for batches")
    state = _RowText(new_decoder(not config.keep_special_tokens), config.stop_strings, set(config.eos_token_ids))
    stream = TokenStream(1)
    tokens_iter = decode_n_tokens(
        model, inputs, config, think_ids=think_ids, stream=stream, step_fn=step_fn, new_cache=new_cache
    )
    try:
        for (token,) in tokens_iter:
            if token is None:
                break
            delta = state.push(token)
            if delta:
                yield delta
            if state.finish_reason is not None:
                break
    finally:
        tokens_iter.close()
    tail = state.finish()
    _store_answers(model, stream, [state.token_ids])
    if tail:
        yield tail
    if result_holder is not None:
        result_holder.append(state.result(int(inputs["input_ids"].shape[1]), stream.timing))
