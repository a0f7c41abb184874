"""GPU benchmark: our GLM-4.1V engine vs transformers at the full GLM-4.1V-9B shape.

Random weights with the real 9B shape (40 text layers, 24 vision blocks, real widths; the
config is what `python -m glmv_agent.glm4v.tiny --real-width` writes) are made directly in
GPU memory, so no 20 GB checkpoint is needed. Both engines use the same weights: ours are
initialised from a fixed seed (rebuilt from it whenever a row needs fresh bf16 weights) and
transformers' Glm4vForConditionalGeneration gets a copy of our state dict.

Measured per row, same process: TTFT (preprocessing of one 1920x1080 screenshot + an
instruction, vision tower, prompt prefill, first token) and decode tokens/s over
`--tokens` greedy tokens (eos disabled), peak GPU memory. Rows:

    ours bf16 eager | ours bf16 compiled (engine's CompiledDecodeStep: CUDA graphs)
    transformers bf16 (dynamic cache) | transformers bf16 static cache (generate's own
    torch.compile, reduce-overhead, on CUDA) | ours int4 / int8 compiled | ours int4 / int8 eager
(in that order: most telling first, should the time budget end the run early).

A row whose API is missing or fails is recorded with the reason and skipped. The table is
rewritten after every row (benchmarks/results/bench_gpu_<time>.md + .json), so a timeout
still leaves figures; rows not started when --budget-s has passed are skipped.

    python benchmarks/bench_gpu.py                        # CUDA, full 9B shape, ~8 min
    python benchmarks/bench_gpu.py --tiny --device cpu    # the same pipeline, tiny shapes
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "Find the search box and click it."
SEED = 0
# `python -m glmv_agent.glm4v.tiny --real-width` widths, with the 9B model's depth.
FULL_SHAPE = {"text_hidden": 4096, "heads": 32, "kv_heads": 2, "intermediate": 13696,
              "vision_hidden": 1536, "vision_heads": 12, "vision_intermediate": 13696,
              "vocab_size": 151552, "image_size": 336, "text_layers": 40, "vision_depth": 24}
# Tiny, but wide enough for int4 (in_features a multiple of its group of 128).
TINY_SHAPE = {"text_hidden": 128, "heads": 4, "kv_heads": 2, "intermediate": 256,
              "text_layers": 2, "vision_depth": 2}


@dataclass
class Row:
    name: str
    ttft_s: float | None = None
    decode_tok_s: float | None = None
    peak_gb: float | None = None
    weights_gb: float | None = None
    setup_s: float | None = None  # build / quantize / compile time before the measurement
    prompt_tokens: int | None = None
    note: str = ""


# ----------------------------------------------------------------------------- setup


def screenshot(width: int, height: int):
    """A desktop-like picture with some structure for the vision tower."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (236, 239, 244))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 20), fill=(40, 44, 52))
    draw.rectangle((width // 3, height // 4, 2 * width // 3, height // 4 + 40), fill=(255, 255, 255),
                   outline=(120, 120, 120))
    for i in range(12):
        top = height // 10 + i * height // 14
        draw.rectangle((40, top, width // 5, top + height // 20), fill=(200 - 10 * i, 210, 230))
        draw.text((50, top + 8), f"Menu item {i}", fill=(0, 0, 0))
    return img


def write_config_dir(directory: Path, tiny: bool) -> Path:
    """config.json, tokenizer and preprocessor files of the benchmark shape, without weights
    (they are made on the device instead)."""
    from glmv_agent.glm4v import tiny as tiny_module

    shape = TINY_SHAPE if tiny else FULL_SHAPE
    with mock.patch.object(tiny_module, "_write_weights", lambda *args, **kwargs: None):
        return tiny_module.write_tiny_checkpoint(directory, dtype="bfloat16", **shape)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_gb(module: torch.nn.Module) -> float:
    tensors = {t.data_ptr(): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 1e9


def build_ours(config: Any, device: torch.device) -> Any:
    """Our model with seeded random weights, made on the device: the same weights each time."""
    from glmv_agent.glm4v.model import Glm4vModel

    torch.manual_seed(SEED)
    with torch.device(device):
        model = Glm4vModel(config)
    return model.to(torch.bfloat16).eval()


def quantize_in_place(model: Any, mode: str) -> None:
    """Swap the linear layers quantize.py selects for int8 / int4 ones, as load(quantize=) does."""
    from glmv_agent.glm4v.quantize import is_quantized_linear, quantize_linear

    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and is_quantized_linear(name):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, quantize_linear(mode, module, name))


def free() -> None:
    """Release what the last row left: compiled graphs, cached GPU blocks."""
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- engines


class Ours:
    """Our engine around a model already on the device (optionally a compiled step)."""

    def __init__(self, model: Any, directory: Path, image: Any, compile: bool) -> None:
        from glmv_agent.glm4v.engine import Glm4vEngine, read_generation_defaults
        from glmv_agent.glm4v.processor import load_processor
        from glmv_agent.messages import image as image_part
        from glmv_agent.messages import message

        options: dict[str, Any] = {}
        if compile:
            from glmv_agent.glm4v.compiled import CompiledDecodeStep

            step = CompiledDecodeStep(model)
            step.warm_up()
            options = {"step_fn": step, "new_cache": step.new_cache}
        defaults = read_generation_defaults(directory, model.config.eos_token_ids)
        # No vision / prefix caches: every TTFT run must encode the screenshot again.
        self.engine = Glm4vEngine(model, load_processor(directory), defaults, cache_bytes=0,
                                  prefix_cache_bytes=0, **options)
        self.messages = [message("user", image_part(image), PROMPT)]

    def ttft(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        (result,) = self.engine.generate_batch([self.messages], do_sample=False, max_new_tokens=1,
                                               eos_token_ids=())
        return time.perf_counter() - t0, result.prompt_tokens

    def decode_tok_s(self, tokens: int) -> float:
        (result,) = self.engine.generate_batch([self.messages], do_sample=False,
                                               max_new_tokens=tokens, eos_token_ids=())
        assert len(result.token_ids) == tokens, len(result.token_ids)
        return result.decode_tokens_per_second


class Theirs:
    """transformers' Glm4vForConditionalGeneration with our weights."""

    def __init__(self, state: dict[str, torch.Tensor], directory: Path, image: Any,
                 device: torch.device, static: bool) -> None:
        from transformers import (AutoConfig, AutoTokenizer, Glm4vForConditionalGeneration,
                                  Glm4vImageProcessorPil)

        config = AutoConfig.from_pretrained(directory)
        with torch.device(device):
            model = Glm4vForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"state dict does not fit transformers' model: {result}")
        self.model = model.eval()
        self.device = device
        self.static = static
        # transformers' Glm4vProcessor needs torchvision for its video half; build the same
        # inputs from its image processor + tokenizer (bench_engine.transformers_inputs).
        self.image_processor = Glm4vImageProcessorPil.from_pretrained(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.image = image

    def inputs(self) -> dict[str, Any]:
        from bench_engine import transformers_inputs  # this script's folder is on sys.path

        inputs = transformers_inputs(self.tokenizer, self.image_processor, self.image,
                                     self.model.config.image_token_id)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _generate(self, inputs: dict[str, Any], tokens: int, processors: list[Any]) -> Any:
        import transformers

        options: dict[str, Any] = {"cache_implementation": "static"} if self.static else {}
        return self.model.generate(**inputs, do_sample=False, max_new_tokens=tokens,
                                   min_new_tokens=tokens, top_k=None, top_p=None,
                                   eos_token_id=None, pad_token_id=0,
                                   logits_processor=transformers.LogitsProcessorList(processors),
                                   **options)

    def ttft(self) -> tuple[float, int]:
        t0 = time.perf_counter()
        inputs = self.inputs()
        with torch.inference_mode():
            self._generate(inputs, 1, [])
        sync(self.device)
        return time.perf_counter() - t0, int(inputs["input_ids"].shape[1])

    def decode_tok_s(self, tokens: int) -> float:
        stamps: list[float] = []

        def timing_processor(input_ids: Any, scores: Any) -> Any:  # once per generated token
            sync(self.device)
            stamps.append(time.perf_counter())
            return scores

        inputs = self.inputs()
        with torch.inference_mode():
            out = self._generate(inputs, tokens, [timing_processor])
        assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
        return (tokens - 1) / (stamps[-1] - stamps[0])


# ----------------------------------------------------------------------------- measuring


def measure(name: str, make: Callable[[], Any], device: torch.device, tokens: int, runs: int,
            weights_of: Callable[[Any], float]) -> Row:
    """Set an engine up, then TTFT (median of `runs` after a warm-up) and one decode run."""
    t0 = time.perf_counter()
    impl = make()
    setup_s = time.perf_counter() - t0
    if device.type == "cuda":  # after setup (its fp32 init / state-dict copy are transient)
        torch.cuda.reset_peak_memory_stats(device)
    impl.ttft()  # warm-up: kernel selection, allocator, (transformers) compile of prefill
    ttfts = []
    for _ in range(runs):
        seconds, prompt_tokens = impl.ttft()
        ttfts.append(seconds)
    # Warm-up at the measured length: a static cache of another length would compile again.
    impl.decode_tok_s(tokens)
    tok_s = impl.decode_tok_s(tokens)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    row = Row(name, statistics.median(ttfts), tok_s, peak, weights_of(impl), setup_s, prompt_tokens)
    del impl
    return row


def table(rows: list[Row], header: str) -> str:
    def fmt(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    lines = [header, "",
             "| row | TTFT s | decode tok/s | peak GPU GB | weights GB | setup s | prompt tokens | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {fmt(r.ttft_s, 3)} | {fmt(r.decode_tok_s, 1)} | "
                     f"{fmt(r.peak_gb, 2)} | {fmt(r.weights_gb, 2)} | {fmt(r.setup_s, 1)} | "
                     f"{r.prompt_tokens or ''} | {r.note} |")
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and a small screenshot "
                        "(checks the pipeline, e.g. on CPU)")
    parser.add_argument("--tokens", type=int, default=256, help="decode tokens per row")
    parser.add_argument("--runs", type=int, default=3, help="TTFT runs per row (median)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="start no new row after this many seconds (default 330: a compiled "
                        "row started then still ends within 8 minutes)")
    parser.add_argument("--rows", nargs="*", help="only these rows (names as in the table)")
    parser.add_argument("--out", type=Path, help="table file (default benchmarks/results/bench_gpu_<time>.md)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu (and --tiny)", file=sys.stderr)
        return 2
    out = args.out or RESULTS / f"bench_gpu_{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    name = device_name(device)
    print(f"device: {name}", flush=True)
    shape = "tiny widths, 2 layers" if args.tiny else "GLM-4.1V-9B shape (40 text layers, 24 vision blocks)"
    image = screenshot(448, 252) if args.tiny else screenshot(1920, 1080)
    header = (f"# bench_gpu: {name}\n\n{shape}, random bf16 weights, {image.width}x{image.height} "
              f"screenshot, {args.tokens} decode tokens, torch {torch.__version__}")
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        print(f"{row.name}: ttft {row.ttft_s} s, decode {row.decode_tok_s} tok/s, peak "
              f"{row.peak_gb} GB {row.note}", flush=True)
        out.write_text(table(rows, header), encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n",
                                            encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        from glmv_agent.glm4v.config import Glm4vConfig

        directory = write_config_dir(Path(tmp), args.tiny)
        config = Glm4vConfig.from_dict(json.loads((directory / "config.json").read_text()),
                                       source=str(directory / "config.json"))

        def ours_row(mode: str | None, compile: bool) -> Callable[[], Any]:
            def make() -> Any:
                model = build_ours(config, device)
                if mode:
                    quantize_in_place(model, mode)
                return Ours(model, directory, image, compile)
            return make

        def theirs_row(static: bool) -> Callable[[], Any]:
            def make() -> Any:
                ours = build_ours(config, device)  # the weights, copied into transformers'
                state = ours.state_dict()
                del ours
                return Theirs(state, directory, image, device, static)
            return make

        plan: list[tuple[str, Callable[[], Any], Callable[[Any], float]]] = [
            ("ours bf16 eager", ours_row(None, False), lambda i: tensor_gb(i.engine.model)),
            ("ours bf16 compiled", ours_row(None, True), lambda i: tensor_gb(i.engine.model)),
            ("transformers bf16", theirs_row(False), lambda i: tensor_gb(i.model)),
            ("transformers bf16 static cache", theirs_row(True), lambda i: tensor_gb(i.model)),
            ("ours int4 compiled", ours_row("int4", True), lambda i: tensor_gb(i.engine.model)),
            ("ours int8 compiled", ours_row("int8", True), lambda i: tensor_gb(i.engine.model)),
            ("ours int4 eager", ours_row("int4", False), lambda i: tensor_gb(i.engine.model)),
            ("ours int8 eager", ours_row("int8", False), lambda i: tensor_gb(i.engine.model)),
        ]
        for row_name, make, weights_of in plan:
            if args.rows and row_name not in args.rows:
                continue
            if time.perf_counter() - started > args.budget_s:
                record(Row(row_name, note=f"skipped: past the {args.budget_s:.0f} s budget"))
                continue
            try:
                record(measure(row_name, make, device, args.tokens, args.runs, weights_of))
            except (ImportError, AttributeError) as exc:  # an engine API not there (yet)
                record(Row(row_name, note=f"skipped: API missing ({type(exc).__name__}: {exc})"))
            except Exception as exc:  # noqa: BLE001 - one failed row must not lose the others
                traceback.print_exc()
                record(Row(row_name, note=f"failed: {type(exc).__name__}: {str(exc)[:160]}"))
            finally:
                free()
    print(f"\n{table(rows, header)}\nwritten to {out} in {time.perf_counter() - started:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
