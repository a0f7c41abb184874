"""The one-call API of the in-process GLM-4.1V engine: messages in, text out.

    engine = load("model/GLM-4.1V-9B-Thinking")
    print(engine.chat([message("user", image(screenshot), "Where is the search box?")]))
    for delta in engine.stream(messages, max_new_tokens=256):
        ...

`Glm4vEngine` holds the model and processor; a lock serializes generation, so one engine
can be shared by the threads of an HTTP server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InputError
from ..messages import Message, validate_messages
from .caches import DEFAULT_PREFIX_CACHE_BYTES, DEFAULT_VISION_CACHE_BYTES, EngineCaches
from .generation import GenerationConfig, GenerationResult, decode_one_token, generate, stream_generate
from .loading import load_model, resolve_device
from .quantize import summary as quantize_summary

logger = logging.getLogger(__name__)

# generation_config.json keys we honour, and the GenerationConfig field each one sets.
_GENERATION_FILE_KEYS = {
    "max_new_tokens": "max_new_tokens", "do_sample": "do_sample", "temperature": "temperature",
    "top_p": "top_p", "top_k": "top_k", "repetition_penalty": "repetition_penalty",
}
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def read_generation_defaults(path: str | Path, eos_token_ids: Sequence[int]) -> GenerationConfig:
    """Defaults from the checkpoint's generation_config.json (missing file = greedy)."""
    values: dict[str, Any] = {"eos_token_ids": tuple(eos_token_ids)}
    file = Path(path) / "generation_config.json"
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{file}: not valid JSON ({exc}); fix or delete the file") from exc
        for key, name in _GENERATION_FILE_KEYS.items():
            if data.get(key) is not None:
                values[name] = data[key]
        eos = data.get("eos_token_id")
        if eos is not None:
            values["eos_token_ids"] = tuple(eos if isinstance(eos, list) else [eos])
    try:
        return GenerationConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: unusable generation defaults: {exc}") from exc


class Glm4vEngine:
    """Model + processor + generation defaults, ready to answer chat messages."""

    def __init__(self, model: Any, processor: Any, defaults: GenerationConfig, *,
                 path: str | Path | None = None, step_fn: Any = decode_one_token,
                 new_cache: Any = None, cache_bytes: int = DEFAULT_VISION_CACHE_BYTES,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        self.model = model
        # Vision-encoder and prefix KV caches (glm4v/caches.py); the model's prefill uses them.
        self.caches = EngineCaches(cache_bytes, prefix_cache_bytes)
        model.caches = self.caches
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.defaults = defaults
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.think_ids = (self.tokenizer.encode(_THINK_OPEN), self.tokenizer.encode(_THINK_CLOSE))
        pad = model.config.pad_token_id
        self.pad_token_id = int(pad if pad is not None else defaults.eos_token_ids[0])
        # The hot decode step; pass a compiled / CUDA-graphed variant of decode_one_token here
        # (compiled.CompiledDecodeStep), and its cache factory as new_cache (None: the model's).
        self._step = step_fn
        self._new_cache = new_cache

    @property
    def device(self) -> torch.device:
        return self.model.device

    def clear_caches(self) -> None:
        """Forget every cached image encoding and prompt prefix (e.g. to free memory)."""
        self.caches.clear()

    # ---- options ----------------------------------------------------------------------

    def generation_config(self, **options: Any) -> GenerationConfig:
        """Defaults updated with per-call options (GenerationConfig fields; `stop` is an alias
        of `stop_strings`). Passing a temperature > 0 turns sampling on, 0 means greedy."""
        options = {k: v for k, v in options.items() if v is not None}
        if "stop" in options:
            options["stop_strings"] = tuple(options.pop("stop"))
        if "temperature" in options and "do_sample" not in options:
            options["do_sample"] = options["temperature"] > 0
        for key in ("stop_strings", "eos_token_ids"):
            if key in options and isinstance(options[key], (list, str)):
                options[key] = (options[key],) if isinstance(options[key], str) else tuple(options[key])
        return self.defaults.updated(**options)

    # ---- inputs -----------------------------------------------------------------------

    def prepare(self, messages: list[Message], *, enable_thinking: bool | None = None) -> dict[str, Any]:
        """Processor tensors for one conversation, on the model's device."""
        validate_messages(messages)
        inputs = self.processor(messages, add_generation_prompt=True, enable_thinking=enable_thinking)
        return self._to_device(inputs)

    def prepare_batch(self, conversations: Sequence[list[Message]], *,
                      enable_thinking: bool | None = None) -> dict[str, Any]:
        """Several conversations left-padded into one batch (images concatenated in order)."""
        if not conversations:
            raise InputError("generate_batch needs at least one conversation")
        for conversation in conversations:
            validate_messages(conversation)
        inputs = self.processor(list(conversations), add_generation_prompt=True,
                                enable_thinking=enable_thinking, padding_side="left")
        return self._to_device(inputs)

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
            out[key] = value
        return out

    # ---- generation -------------------------------------------------------------------

    def text_decoder(self, skip_special_tokens: bool) -> Any:
        """A fresh incremental detokenizer (what generation uses to stream text)."""
        return self.tokenizer.stream_decoder(skip_special_tokens=skip_special_tokens)

    def generate_inputs(self, inputs: dict[str, Any], *, on_text: Callable[[int, str], None] | None = None,
                        **options: Any) -> list[GenerationResult]:
        """Generate from ready processor tensors (e.g. a prompt you extended by hand).
        `on_text(row, delta)` gets each new piece of a row's text as it is generated; an
        exception raised from it stops the whole generation (the server cancels that way)."""
        config = self.generation_config(**options)
        inputs = self._to_device(inputs)
        with self._lock:
            self.model.caches = self.caches  # this engine's (the model may be shared)
            return generate(self.model, self.text_decoder, inputs, config, think_ids=self.think_ids,
                            pad_token_id=self.pad_token_id, on_text=on_text, step_fn=self._step,
                            new_cache=self._new_cache)

    def generate(self, messages: list[Message], *, enable_thinking: bool | None = None,
                 **options: Any) -> GenerationResult:
        """Full result (text, token ids, finish reason, timings) for one conversation."""
        return self.generate_batch([messages], enable_thinking=enable_thinking, **options)[0]

    def generate_batch(self, conversations: Sequence[list[Message]], *,
                       enable_thinking: bool | None = None,
                       on_text: Callable[[int, str], None] | None = None,
                       **options: Any) -> list[GenerationResult]:
        """One result per conversation, generated together (left padding); `on_text` as in
        `generate_inputs`."""
        self.generation_config(**options)  # bad options fail before preprocessing
        inputs = self.prepare_batch(conversations, enable_thinking=enable_thinking)
        return self.generate_inputs(inputs, on_text=on_text, **options)

    def chat(self, messages: list[Message], *, enable_thinking: bool | None = None, **options: Any) -> str:
        """The answer text (special tokens kept, eos and stop strings removed)."""
        return self.generate(messages, enable_thinking=enable_thinking, **options).text

    def stream(self, messages: list[Message], *, enable_thinking: bool | None = None,
               result_holder: list[GenerationResult] | None = None, **options: Any) -> Iterator[str]:
        """Text deltas as they are generated. The engine stays locked until the iterator is
        exhausted or closed, so close abandoned streams (or use them in a for loop)."""
        # Options and inputs are checked here, so bad ones fail at the call, not mid-stream.
        config = self.generation_config(**options)
        inputs = self.prepare(messages, enable_thinking=enable_thinking)
        return self._locked_stream(inputs, config, result_holder)

    def _locked_stream(self, inputs: dict[str, Any], config: GenerationConfig,
                       result_holder: list[GenerationResult] | None) -> Iterator[str]:
        with self._lock:
            self.model.caches = self.caches
            yield from stream_generate(self.model, self.text_decoder, inputs, config,
                                       think_ids=self.think_ids, step_fn=self._step,
                                       new_cache=self._new_cache, result_holder=result_holder)


def load(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         *, progress: bool | None = None, compile: bool = False,
         quantize: str | None = None, cache_bytes: int = DEFAULT_VISION_CACHE_BYTES,
         prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> Glm4vEngine:
    """Load a checkpoint directory into an engine.

    device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
    dtype: None = bfloat16 (the real checkpoints' dtype; a 9B model needs ~20 GB in bf16,
    twice that in float32), or "bfloat16" / "float16" / "float32".
    compile: compile the decode step with torch.compile (CPU: inductor, CUDA: CUDA graphs),
    at load; costs compile time once per process, see glm4v/compiled.py for when it pays.
    quantize: None, "int8" or "int4": weight-only quantization of the text decoder and
    lm_head while loading (glm4v/quantize.py); decode reads 2x / ~4x fewer bytes per token.
    cache_bytes / prefix_cache_bytes: bounds of the vision-encoder cache and the prefix KV
    cache (glm4v/caches.py; 0 turns one off; `engine.clear_caches()` empties both).
    """
    from .processor import load_processor  # lazy: keeps `import engine` light

    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{directory}: no config.json; expected a Hugging Face checkpoint directory "
            "(see model/README.md for how to download GLM-4.1V-9B-Thinking)"
        )
    target = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16
    model = load_model(directory, device=target, dtype=dtype, progress=progress, quantize=quantize)
    processor = load_processor(directory)
    defaults = read_generation_defaults(directory, model.config.eos_token_ids)
    logger.info("engine ready: %s on %s (%s%s)", directory, target, model.dtype,
                f", {quantize_summary(model)}" if quantize else "")
    step: dict[str, Any] = {}
    if compile:
        from .compiled import CompiledDecodeStep  # lazy: torch.compile machinery only when asked

        compiled = CompiledDecodeStep(model)
        compiled.warm_up()
        step = {"step_fn": compiled, "new_cache": compiled.new_cache}
    return Glm4vEngine(model, processor, defaults, path=directory, cache_bytes=cache_bytes,
                       prefix_cache_bytes=prefix_cache_bytes, **step)


# ---- module-level convenience: one cached engine per (path, device, dtype) -------------

_ENGINES: dict[tuple[str, str, str], Glm4vEngine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(path: str | Path, device: str | torch.device, dtype: str | torch.dtype | None) -> Glm4vEngine:
    key = (str(Path(path).resolve()), str(device), str(dtype))
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = load(path, device=device, dtype=dtype)
        return _ENGINES[key]


def chat(path: str | Path, messages: list[Message], *, device: str = "auto",
         dtype: str | torch.dtype | None = None, **options: Any) -> str:
    """`load(path).chat(messages, **options)`, loading each checkpoint once per process."""
    return _engine_for(path, device, dtype).chat(messages, **options)


def stream(path: str | Path, messages: list[Message], *, device: str = "auto",
           dtype: str | torch.dtype | None = None, **options: Any) -> Iterator[str]:
    """`load(path).stream(messages, **options)`, loading each checkpoint once per process."""
    return _engine_for(path, device, dtype).stream(messages, **options)


__all__ = ["Glm4vEngine", "load", "chat", "stream", "read_generation_defaults"]
