"""Weight-only int8 / int4 quantization (glmv_agent.glm4v.quantize) on real safetensors files.

The quantized engine is checked against an independent fake-quantized reference: the same
rounding rule applied to an unquantized model's weights in plain fp32 PyTorch. That pins
down the packing, the kernels (one row: torch's int8/int4 kernels; many rows: the
dequantized matmul, or int8 activations for int8 in bf16 on CPU) and the streaming loader,
not only "the error looks small".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from glmv_agent.cli import build_parser
from glmv_agent.errors import ConfigError
from glmv_agent.glm4v import quantize as Q
from glmv_agent.glm4v.engine import load
from glmv_agent.glm4v.loading import load_model
from glmv_agent.glm4v.tiny import write_tiny_checkpoint
from glmv_agent.messages import message
from mapped_memory import mapped_rss

# Bounds on the relative logit error vs the unquantized model over all positions.
INT8_ERROR_BOUND = 0.05  # the bar; ~0.02-0.03 measured on these random weights
INT4_ERROR_BOUND = 0.45  # random weights are the worst case for 4 bits (~0.32 measured)


@pytest.fixture(scope="module")
def tiny128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Widths int4 can take (in_features multiples of 128, out_features of 64), fp32."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny128"), text_hidden=128,
                                 intermediate=256, dtype="float32", seed=3)


def _prompt(vocab: int, length: int = 48, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab - 300, (1, length), generator=generator)  # below the specials


def _fake_quantized(w: torch.Tensor, mode: str) -> torch.Tensor:
    """`w` rounded with the documented rule, in plain fp32."""
    w = w.detach().float()
    if mode == "int8":
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        return (w / scale).round().clamp(-127, 127) * scale
    g = w.view(w.shape[0], -1, Q.INT4_GROUP_SIZE)
    low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = (high - low) / 15
    return (((g - low) / scale).round().clamp(0, 15) * scale + low).view_as(w)


def _fake_quantize_(model: nn.Module, mode: str) -> None:
    """Replace every weight quantize.py selects by its rounded value, in place."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and Q.is_quantized_linear(name):
            module.weight.data = _fake_quantized(module.weight, mode).to(module.weight.dtype)


def _rounding_step(w: torch.Tensor, mode: str) -> torch.Tensor:
    """The quantization step each weight was rounded to (per row, or per row and group)."""
    if mode == "int8":
        return (w.abs().amax(1, keepdim=True) / 127).expand_as(w)
    g = w.view(w.shape[0], -1, Q.INT4_GROUP_SIZE)
    return ((g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15).expand_as(g).reshape_as(w)


def _relative_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.norm(logits.float() - reference.float()) / torch.linalg.norm(reference.float()))


# ---- kernels and layouts -------------------------------------------------------------


def test_cpu_int4_layout_inverts_torchs_packer_and_packs_per_row_block() -> None:
    codes = torch.randint(0, 16, (192, 256), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    assert torch.equal(Q._unpack_int4_cpu(packed, 192, 256).to(torch.int32), codes)
    # The streaming loader packs 64-row blocks one at a time: that must equal packing at once.
    blocks = torch.cat([torch._convert_weight_to_int4pack_for_cpu(c.contiguous(), 1) for c in codes.split(64)])
    assert torch.equal(blocks, packed)


@pytest.mark.parametrize("mode", Q.QUANTIZE_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_and_dequantized_paths_compute_the_rounded_weight(mode: str, dtype: torch.dtype,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 192, bias=True).to(dtype)
    module = Q.quantize_linear(mode, linear)
    w, deq = linear.weight.detach().float(), module.dequantized(torch.float32)
    if dtype == torch.float32:  # the documented rule exactly
        assert torch.allclose(deq, _fake_quantized(w, mode), rtol=0, atol=1e-6)
    # Rounding to nearest: no weight moves by more than half a step (+ the stored bf16
    # scale's own rounding).
    slack = 1.0001 if dtype == torch.float32 else 1.05
    assert ((w - deq).abs() <= _rounding_step(w, mode) / 2 * slack).all()
    # Both paths compute x @ deq.T + bias: many rows (the dequantized matmul) and single
    # rows (torch's packed kernels).
    x = torch.randn(Q.SMALL_BATCH_ROWS + 8, 256).to(dtype)
    expected = x.float() @ deq.t() + linear.bias.detach().float()
    many = module(x)
    few = torch.cat([module(x[i:i + 1]) for i in range(4)])
    tol = (1e-5 if dtype == torch.float32 else 2e-2) * expected.abs().max()
    assert (many.float() - expected).abs().max() <= tol
    assert (few.float() - expected[:4]).abs().max() <= tol
    assert many.dtype == dtype and few.shape == (4, 192)
    monkeypatch.setattr(Q, "DEQUANT_CHUNK_BYTES", 1)  # prefill in 64-row pieces: 3 here
    assert (module(x).float() - expected).abs().max() <= tol


def test_int8_bf16_prompts_round_the_activations_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many rows on CPU in bf16: x is rounded to int8 per row (symmetric, scale max|x| / 127)
    and multiplied with the int8 codes in int32; the pieces (row blocks, column chunks) do
    not change the result."""
    torch.manual_seed(1)
    linear = nn.Linear(256, 320, bias=True).to(torch.bfloat16)
    module = Q.quantize_linear("int8", linear)
    x = torch.randn(Q.SMALL_BATCH_ROWS + 40, 256).to(torch.bfloat16)
    x[3] = 0
    xf = x.float()
    token_scale = (xf.abs().amax(1, keepdim=True) / 127).clamp_min(1e-30)
    codes = (xf / token_scale).round()
    # The same products in exact float64 integer arithmetic, scaled and rounded as documented.
    products = (codes.double() @ module.qweight.double().t()).float()
    expected = (products * token_scale * module.scales.float()).to(torch.bfloat16) + module.bias
    deq, bias = module.dequantized(torch.float32), linear.bias.detach().float()
    weight_only = xf @ deq.t() + bias
    out = module(x)
    assert out.dtype == torch.bfloat16 and out.shape == (x.shape[0], 320)
    assert _relative_error(out, expected) < 1e-3  # bf16 rounding of the bias sum only
    assert torch.equal(out[3], module.bias)  # an all-zero row stays zero (before the bias)
    # Rounding x is a real change from the weight-only product, but a small one.
    moved = _relative_error(out, weight_only)
    assert 4e-3 < moved < 2e-2, moved
    monkeypatch.setattr(Q, "ACTIVATION_BLOCK_ROWS", 7)
    monkeypatch.setattr(Q, "PRODUCT_CHUNK_BYTES", 1)  # 64-column chunks: 5 here
    assert torch.equal(module(x), out)
    # fp32 keeps the exact dequantized product (no activation rounding).
    exact = Q.quantize_linear("int8", linear.float())
    assert _relative_error(exact(xf), xf @ exact.dequantized(torch.float32).t() + bias) < 1e-6


@pytest.mark.parametrize("mode", Q.QUANTIZE_MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zero_rows_and_constant_groups_stay_exact(mode: str, dtype: torch.dtype) -> None:
    linear = nn.Linear(256, 64, bias=False).to(dtype)
    with torch.no_grad():
        linear.weight[0] = 0
        linear.weight[1] = 1e-7  # underflows to 0 as an fp16 scale
        linear.weight[2, :128] = 0.5  # one constant group
    deq = Q.quantize_linear(mode, linear).dequantized(torch.float32)
    assert torch.isfinite(deq).all()
    assert torch.equal(deq[0], torch.zeros(256))
    assert torch.equal(deq[2, :128], torch.full((128,), 0.5)) or mode == "int8"


def test_unsupported_shapes_modes_and_devices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="multiple of the group size 128"):
        Q.quantize_linear("int4", nn.Linear(100, 64))
    with pytest.raises(ConfigError, match="multiple of 64"):
        Q.quantize_linear("int4", nn.Linear(128, 96))
    with pytest.raises(ConfigError, match="unknown quantize mode 'int3'"):
        Q.resolve_quantize("int3")
    with pytest.raises(ConfigError, match="'cpu' or 'cuda', not 'meta'"):
        Q.check_supported("int8", "x", 128, 64, torch.device("meta"), torch.bfloat16)
    with pytest.raises(ConfigError, match="int4' on CUDA needs dtype bfloat16"):
        Q.check_supported("int4", "x", 128, 64, torch.device("cuda"), torch.float16)
    assert Q.resolve_quantize("INT8") == "int8" and Q.resolve_quantize(None) is None


def test_int4_on_a_checkpoint_too_narrow_fails_before_reading(tiny_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"q_proj \(64x64\).*use quantize='int8'"):
        load_model(tiny_checkpoint, dtype="float32", quantize="int4")


# ---- the loaded model ----------------------------------------------------------------


@pytest.mark.parametrize("mode", Q.QUANTIZE_MODES)
def test_quantized_model_matches_fake_quantized_weights(tiny128: Path, mode: str) -> None:
    """Every position (prefill path) and a decode step (kernel path), fp32 compute."""
    quantized = load_model(tiny128, dtype="float32", quantize=mode)
    reference = load_model(tiny128, dtype="float32", mmap=False)
    exact = load_model(tiny128, dtype="float32")
    _fake_quantize_(reference, mode)
    layers = dict(quantized.named_modules())
    assert isinstance(layers["lm_head"], Q.Int8Linear if mode == "int8" else Q.Int4Linear)
    assert isinstance(layers["model.language_model.layers.1.mlp.down_proj"], nn.Module)
    assert type(layers["model.visual.blocks.0.mlp.down_proj"]) is nn.Linear  # vision untouched
    ids = _prompt(quantized.config.text.vocab_size)
    logits, fake = quantized(ids), reference(ids)
    assert _relative_error(logits, fake) < 1e-4
    # Against the unquantized model: the error the rounding itself costs.
    error = _relative_error(logits, exact(ids))
    assert 0 < error < (INT8_ERROR_BOUND if mode == "int8" else INT4_ERROR_BOUND), error

    caches = [m.new_cache(1, ids.shape[1] + 2) for m in (quantized, reference)]
    quantized.prefill(ids, caches[0])
    reference.prefill(ids, caches[1])
    token = torch.tensor([[7]])
    step, fake_step = quantized.decode_step(token, caches[0]), reference.decode_step(token, caches[1])
    assert _relative_error(step, fake_step) < 1e-4


def test_int8_bf16_logit_error_within_the_stated_bound(tiny_checkpoint_bf16: Path) -> None:
    exact = load_model(tiny_checkpoint_bf16, dtype="bfloat16")
    quantized = load_model(tiny_checkpoint_bf16, dtype="bfloat16", quantize="int8")
    ids = _prompt(exact.config.text.vocab_size, length=64)
    reference, logits = exact(ids).float(), quantized(ids).float()
    assert _relative_error(logits, reference) < INT8_ERROR_BOUND
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8


@pytest.mark.parametrize("mode", Q.QUANTIZE_MODES)
def test_quantized_engine_generates(tiny128: Path, mode: str) -> None:
    engine = load(tiny128, device="cpu", dtype="bfloat16", quantize=mode)
    assert engine.model.dtype == torch.bfloat16
    result = engine.generate([message("user", "Hello there")], do_sample=False,
                             max_new_tokens=6, eos_token_ids=())
    assert len(result.token_ids) == 6 and result.text
    again = engine.generate([message("user", "Hello there")], do_sample=False,
                            max_new_tokens=6, eos_token_ids=())
    assert again.token_ids == result.token_ids


# Peak RSS is VmHWM: getrusage's ru_maxrss survives fork + exec, so a child started from
# this (large) pytest process would report pytest's peak.
_RSS_SCRIPT = """
import json, sys, torch
from glmv_agent.glm4v.loading import load_model
def peak():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
torch.ones(1) @ torch.ones(1)  # torch's own start-up memory is not ours to count
before = peak()
model = load_model(sys.argv[1], dtype="float32", quantize=sys.argv[2] or None)
held = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if not n.endswith("inv_freq"))
print(json.dumps({"growth": peak() - before, "quantized_bytes": held}))
"""


def _load_growth(ckpt: Path, quantize: str) -> dict[str, int]:
    # glibc raises its mmap threshold after the first big free, so later blocks come from the
    # heap, and how much of it stays resident after free depends on thread timing (seen: the
    # same load 28 MB apart in two runs). A fixed threshold hands freed blocks back at once,
    # so the peak measures what the loader holds, not what malloc keeps cached.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    script = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(ckpt), quantize],
                            capture_output=True, text=True, timeout=300, env=env)
    assert script.returncode == 0, script.stderr[-2000:]
    return json.loads(script.stdout.strip().splitlines()[-1])


def test_quantize_loading_peak_rss_stays_near_the_quantized_size(tmp_path: Path) -> None:
    """A checkpoint whose quantized matrices take 390 MB in fp32: loading them as int8 may
    grow the peak RSS by what a plain (zero-copy, nothing read) load costs, plus the int8
    size, plus a few streaming blocks; never by a full-precision copy."""
    from glmv_agent.glm4v.loading import QUANTIZE_BLOCK_BYTES

    ckpt = write_tiny_checkpoint(tmp_path / "wide", text_hidden=1024, heads=8, kv_heads=2,
                                 intermediate=4096, vocab_size=65536, dtype="float32", shards=2)
    fp32_bytes = sum(int(torch.tensor(shape).prod()) * 4 for name, shape in _shapes(ckpt).items()
                     if name == "lm_head.weight" or ".language_model.layers." in name)
    plain, int8 = _load_growth(ckpt, ""), _load_growth(ckpt, "int8")
    extra = int8["growth"] - plain["growth"]
    bound = int8["quantized_bytes"] + 8 * QUANTIZE_BLOCK_BYTES
    # the bound is a real one: even a bf16 copy of the quantized matrices would break it
    assert fp32_bytes > 380e6 and bound < int8["quantized_bytes"] + fp32_bytes / 2
    assert 0.9 * int8["quantized_bytes"] < extra < bound, (plain, int8, fp32_bytes)


def _shapes(ckpt: Path) -> dict[str, list[int]]:
    from glmv_agent.glm4v.loading import checkpoint_tensors

    return {name: entry.shape for name, entry in checkpoint_tensors(ckpt).items()}


# ---- saved quantized checkpoints (`glmv-agent quantize`) ------------------------------


@pytest.mark.parametrize("mode", Q.QUANTIZE_MODES)
def test_a_saved_quantized_checkpoint_loads_as_quantized(tiny128: Path, tmp_path: Path, mode: str) -> None:
    from safetensors import safe_open

    from glmv_agent.glm4v.quantized_checkpoint import write_quantized_checkpoint

    dst = write_quantized_checkpoint(tiny128, tmp_path / "q", mode, dtype="float32")
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {f.name for f in dst.iterdir()}
    with safe_open(str(dst / "model.safetensors"), framework="pt") as handle:  # a valid file
        assert handle.metadata()[Q.METADATA_MODE] == mode
        assert handle.get_tensor("lm_head.qweight").dtype == (torch.int8 if mode == "int8" else torch.uint8)
    on_the_fly = load_model(tiny128, dtype="float32", quantize=mode)
    saved = load_model(dst, dtype="float32")  # the mode comes from the file
    ids = _prompt(saved.config.text.vocab_size)
    assert torch.equal(saved(ids), on_the_fly(ids))
    assert isinstance(saved.lm_head, Q.Int8Linear if mode == "int8" else Q.Int4Linear)
    other = "int4" if mode == "int8" else "int8"
    with pytest.raises(ConfigError, match=f"already quantized as {mode}"):
        load_model(dst, quantize=other)
    with pytest.raises(ConfigError, match="not an empty directory"):
        write_quantized_checkpoint(tiny128, dst, mode)


def test_quantize_command_then_run_the_engine_on_its_output(tiny_checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "int8"
    result = subprocess.run([sys.executable, "-m", "glmv_agent.cli", "quantize", str(tiny_checkpoint),
                             str(dst)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and f"--model {dst}" in result.stdout, result.stdout + result.stderr
    engine = load(dst, device="cpu", dtype="float32")
    assert isinstance(engine.model.lm_head, Q.Int8Linear)
    reference = load(tiny_checkpoint, device="cpu", dtype="float32", quantize="int8")
    question = [message("user", "Hello there")]
    assert engine.generate(question, do_sample=False, max_new_tokens=5).token_ids == \
        reference.generate(question, do_sample=False, max_new_tokens=5).token_ids


# ---- CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["run", "a task", "--env", "web", "--model", "m"],
    ["serve", "--model", "m"],
    ["mcp", "--model", "m"],
    ["assistant", "--model", "m"],
    ["demo"],
    ["doctor"],
])
def test_every_model_command_takes_quantize(argv: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args([*argv, "--quantize", "int4"]).quantize == "int4"
    assert parser.parse_args(argv).quantize is None
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--quantize", "int3"])


def test_cli_model_options_reach_the_local_backend(tiny_checkpoint: Path) -> None:
    from glmv_agent.backends import make_backend
    from glmv_agent.cli import resolve_model

    args = build_parser().parse_args(["run", "t", "--env", "web", "--model", str(tiny_checkpoint),
                                      "--device", "cpu", "--dtype", "float32", "--quantize", "int8"])
    model, kwargs = resolve_model(args)
    backend = make_backend(model, **kwargs["backend_options"])
    assert isinstance(backend.engine.model.lm_head, Q.Int8Linear)
    assert backend.complete([message("user", "hi")], max_new_tokens=3)


def test_doctor_loads_the_model_quantized(tiny_checkpoint: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "glmv_agent.cli", "doctor", "--model",
                             str(tiny_checkpoint), "--quantize", "int8"],
                            capture_output=True, text=True, timeout=300)
    assert "[ok  ] weights" in result.stdout and "loaded with int8 weights" in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout
    broken = subprocess.run([sys.executable, "-m", "glmv_agent.cli", "doctor", "--model",
                             str(tiny_checkpoint), "--quantize", "int4"],
                            capture_output=True, text=True, timeout=300)
    assert "[FAIL] weights" in broken.stdout and "multiple of the group size" in broken.stdout
    assert broken.returncode != 0


# ---- the vision tower's mapped weights -------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise release is Linux-only")
def test_quantized_load_drops_each_vision_layers_pages_once_it_has_run(tmp_path: Path) -> None:
    """Zero-copy bf16 vision weights count in our RSS once read; a quantized (memory-lean)
    load hands each layer's back as soon as that layer has run, so during the forward only
    the running layer's weights are resident, and the next image reads them again."""
    from glmv_agent.glm4v.loading import checkpoint_tensors

    ckpt = write_tiny_checkpoint(tmp_path / "wide_vision", vision_hidden=512, vision_depth=4,
                                 vision_intermediate=2048, dtype="bfloat16", seed=5)
    vision_bytes = sum(entry.nbytes for name, entry in checkpoint_tensors(ckpt).items()
                       if name.startswith("model.visual."))
    assert vision_bytes > 11e6
    resident, during, features = {}, {}, {}
    for mode in ("", "int8"):
        model = load_model(ckpt, dtype="bfloat16", quantize=mode or None)
        visual = model.model.visual
        seen: list[int] = []  # mapped RSS as each layer starts
        for layer in visual.modules():
            if next(layer.parameters(recurse=False), None) is not None:
                layer.register_forward_pre_hook(lambda *_: seen.append(mapped_rss(ckpt)))
        v = model.config.vision
        grid = torch.tensor([[1, 8, 8]])
        pixels = torch.randn(64, v.patch_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            first = visual(pixels, grid)
            second = visual(pixels, grid)
        assert torch.equal(first, second)  # the re-read weights are the same weights
        resident[mode], during[mode], features[mode] = mapped_rss(ckpt), max(seen), first
        # The most that may stay while a layer runs: that layer (the largest, at worst).
        largest = max(sum(p.numel() * p.element_size() for p in layer.parameters(recurse=False))
                      for layer in visual.modules())
        del model
    assert resident[""] > 0.8 * vision_bytes, resident  # the measurement sees them
    assert during[""] > 0.6 * vision_bytes, during
    assert resident["int8"] < 0.2 * vision_bytes, resident
    # A fault may map up to a large folio (2 MB) of neighbouring file pages along with it.
    assert during["int8"] < largest + (2 << 20) + 0.05 * vision_bytes < 0.5 * vision_bytes, (
        during, largest)
    assert torch.equal(features[""], features["int8"])  # the vision tower is not quantized
