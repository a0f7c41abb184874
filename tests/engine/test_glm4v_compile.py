"""The static-shape decode step and `load(..., compile=True)` on the tiny fp32 and bf16 checkpoints.

Compiling runs inductor for real (C++ kernels built with gcc), once per module and dtype: the
compiled engine must give the eager engine's greedy tokens, without recompiling per token or
per prompt length.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch._dynamo.utils import counters

from glmv_agent.errors import ConfigError, InputError
from glmv_agent.glm4v.compiled import CompiledDecodeStep
from glmv_agent.glm4v.engine import Glm4vEngine, load
from glmv_agent.glm4v.generation import CACHE_LENGTH_BUCKET, cache_length
from glmv_agent.messages import image, message

TEXT_CHAT = [message("user", "Open the settings and turn on dark mode.")]
IMAGE_CHAT = [message("user", image(Image.new("RGB", (224, 160), (30, 120, 200))), "Click the blue button.")]
# Long enough to need a larger cache bucket than the chats above.
LONG_CHAT = [message("user", "Open the settings and turn on dark mode. " * 30)]
GREEDY = {"max_new_tokens": 20, "eos_token_ids": (), "do_sample": False}


def graphs_compiled() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def eager(tiny_checkpoint: Path) -> Glm4vEngine:
    return load(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def compiled(tiny_checkpoint: Path) -> Glm4vEngine:
    t0 = time.perf_counter()
    engine = load(tiny_checkpoint, device="cpu", dtype="float32", compile=True)
    print(f"load(compile=True) on the tiny checkpoint: {time.perf_counter() - t0:.1f} s")
    return engine


def test_compiled_greedy_equals_eager_without_recompiling(eager: Glm4vEngine, compiled: Glm4vEngine):
    assert isinstance(compiled._step, CompiledDecodeStep)
    before = graphs_compiled()
    lengths = set()
    for chat in (TEXT_CHAT, IMAGE_CHAT, LONG_CHAT):
        want, got = eager.generate(chat, **GREEDY), compiled.generate(chat, **GREEDY)
        assert got.token_ids == want.token_ids
        assert got.text == want.text
        lengths.add(cache_length(got.prompt_tokens, GREEDY["max_new_tokens"]))
    # Streaming goes through the same compiled step.
    assert "".join(compiled.stream(TEXT_CHAT, **GREEDY)) == eager.generate(TEXT_CHAT, **GREEDY).text
    assert len(lengths) >= 2  # the prompts really used different cache shapes
    assert graphs_compiled() == before  # all compiled at load: none per token or per length


def test_compiled_bf16_greedy_equals_eager_without_recompiling(tiny_checkpoint_bf16: Path):
    # bf16 at batch 1 is where decode_step runs its one-row products off oneDNN
    # (cpu_kernels.single_row_matmuls): the compiled graph's extern matmuls must follow it.
    eager_bf16 = load(tiny_checkpoint_bf16, device="cpu", dtype="bfloat16")
    compiled_bf16 = load(tiny_checkpoint_bf16, device="cpu", dtype="bfloat16", compile=True)
    before = graphs_compiled()
    for chat in (TEXT_CHAT, IMAGE_CHAT, LONG_CHAT):
        assert compiled_bf16.generate(chat, **GREEDY).token_ids == eager_bf16.generate(chat, **GREEDY).token_ids
    assert graphs_compiled() == before
    assert torch.backends.mkldnn.enabled  # switched back on after every step


def test_bf16_one_row_products_run_off_onednn_at_batch_1_only(tiny_checkpoint_bf16: Path):
    # Reuse caches off: a batch-2 prefill is then one forward (with them, one per row).
    model = load(tiny_checkpoint_bf16, device="cpu", dtype="bfloat16", cache_bytes=0,
                 prefix_cache_bytes=0).model
    seen: list[tuple[str, int, bool]] = []  # (layer, rows, oneDNN on) per call
    hooks = [layer.register_forward_hook(
        lambda module, args, out, name=name: seen.append(
            (name, args[0].reshape(-1, args[0].shape[-1]).shape[0], torch.backends.mkldnn.enabled)))
        for name, layer in (("mlp", model.model.language_model.layers[0].mlp.gate_up_proj),
                            ("head", model.lm_head))]
    try:
        with torch.inference_mode():
            for batch in (1, 2):
                ids = torch.arange(3, 3 + 7 * batch).view(batch, 7)
                cache = model.new_cache(batch, 16)
                token = model.prefill(ids, cache).argmax(-1, keepdim=True)
                model.decode_step(token, cache)
    finally:
        for hook in hooks:
            hook.remove()
    # The prompt's layers keep oneDNN (many rows); the one-row products (the prefill's head
    # and the decode step at batch 1) run without it, and at batch 2 with it.
    assert seen == [("mlp", 7, True), ("head", 1, False), ("mlp", 1, False), ("head", 1, False),
                    ("mlp", 14, True), ("head", 2, True), ("mlp", 2, True), ("head", 2, True)]


def test_compiled_sampling_with_a_seed_equals_eager(eager: Glm4vEngine, compiled: Glm4vEngine):
    sample = {**GREEDY, "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 5}
    assert compiled.generate(IMAGE_CHAT, **sample).token_ids == eager.generate(IMAGE_CHAT, **sample).token_ids


def test_decode_over_the_whole_buffer_matches_an_exactly_sized_cache(eager: Glm4vEngine):
    # Masked slots contribute exactly 0: a cache with hundreds of unused slots gives the
    # logits of one sized to the tokens, step by step.
    model = eager.model
    inputs = eager.prepare(IMAGE_CHAT)
    ids = inputs["input_ids"]
    extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw")}
    steps = 12
    exact = model.new_cache(1, ids.shape[1] + steps)
    roomy = model.new_cache(1, 4 * CACHE_LENGTH_BUCKET)
    with torch.inference_mode():
        a, b = model.prefill(ids, exact, **extra), model.prefill(ids, roomy, **extra)
        for _ in range(steps):
            assert torch.equal(a.argmax(-1), b.argmax(-1))
            assert (a - b).abs().max().item() <= 1e-5
            token = a.argmax(-1, keepdim=True)
            a, b = model.decode_step(token, exact), model.decode_step(token, roomy)
    assert exact.length == roomy.length == ids.shape[1] + steps


def test_decode_step_checks_ids_given_by_hand(eager: Glm4vEngine):
    model = eager.model
    cache = model.new_cache(1, 32)
    model.prefill(eager.prepare(TEXT_CHAT)["input_ids"], cache)
    with pytest.raises(InputError, match="token ids must be in"):
        model.decode_step(torch.tensor([[model.config.text.vocab_size]]), cache)
    assert cache.length == cache.valid.sum().item()  # the bad step reserved nothing


def test_a_compiled_step_only_serves_its_own_model(eager: Glm4vEngine, compiled: Glm4vEngine):
    cache = eager.model.new_cache(1, 32)
    with pytest.raises(ConfigError, match="another model"):
        compiled._step(eager.model, torch.tensor([[1]]), cache)


@pytest.mark.parametrize("argv", [
    ["run", "--env", "web", "--model", "{ckpt}", "--compile", "open the settings"],
    ["assistant", "--model", "{ckpt}", "--compile"],
    ["demo", "--model", "{ckpt}", "--compile"],
    ["mcp", "--model", "{ckpt}", "--compile"],
])
def test_every_local_engine_command_passes_compile_to_the_backend(argv: list[str], tiny_checkpoint: Path):
    from glmv_agent.cli import build_parser, resolve_model

    args = build_parser().parse_args([a.format(ckpt=tiny_checkpoint) for a in argv])
    _, kwargs = resolve_model(args)
    assert kwargs["backend_options"]["compile"] is True
    assert build_parser().parse_args(["serve", "--model", str(tiny_checkpoint), "--compile"]).compile


def test_local_backend_compiles_when_asked(tiny_checkpoint: Path, eager: Glm4vEngine):
    from glmv_agent.backends.local import LocalBackend

    backend = LocalBackend(tiny_checkpoint, device="cpu", dtype="float32", compile=True,
                           temperature=0, max_new_tokens=8)
    assert isinstance(backend.engine._step, CompiledDecodeStep)
    assert backend.complete(TEXT_CHAT) == eager.chat(TEXT_CHAT, do_sample=False, max_new_tokens=8)


def test_doctor_compiles_the_decode_step_when_asked(tiny_checkpoint: Path):
    from glmv_agent.doctor import run_checks

    checks = {c.name: c for c in run_checks(model=str(tiny_checkpoint), compile=True)}
    assert checks["compile"].status == "ok", checks["compile"].detail
    assert "compiled in" in checks["compile"].detail
    assert "compile" not in {c.name for c in run_checks(model=str(tiny_checkpoint))}
