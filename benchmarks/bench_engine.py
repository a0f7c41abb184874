"""Engine benchmark: our GLM-4.1V engine vs transformers on the same weights (CPU, batch 1).

The 9B weights are not needed: a random checkpoint with the *real widths* (hidden 4096,
vision 1536, vocab 151552) but only a few layers is generated once, so per-layer costs,
the embedding/lm_head cost and the 1280x720 screenshot's vision cost are real.

Each (engine, dtype) runs in its own subprocess so load time and peak RSS are clean.
Measured: load time, peak RSS, preprocessing, prefill (image + prompt -> first logits) and
decode tokens/s (greedy, eos disabled). Medians over --runs. Also: this machine's memory
read bandwidth, and decode speed as a fraction of the bandwidth limit
(bytes of decoder weights read per token / bandwidth).

With --quantize, our engine also runs with int8 / int4 weights (its own subprocess for load
time and peak RSS, and in the interleaved process), compared with transformers bf16, and
the quantized logits are compared with our bf16 logits at every prompt position.

    python benchmarks/bench_engine.py                     # bf16, 2 layers, 3 runs
    python benchmarks/bench_engine.py --dtypes bfloat16 float32 --runs 5 --tokens 32
    python benchmarks/bench_engine.py --quantize int8 int4 --runs 3
    python benchmarks/bench_engine.py --compile --runs 3  # + our compiled decode step

With --compile, the interleaved process also runs our engine loaded with
`load(..., compile=True)` (its decode step compiled, `CompiledDecodeStep`), and reports the
compile time.

With --checkpoint, any GLM-4.1V checkpoint is measured instead of the random one, e.g. the
real GLM-4.1V-9B-Thinking weights: random weights are the worst case for quantization, so
this is how to see what int8 / int4 cost on the model you run (--accuracy-only skips the
timings; the interleaved rows hold both engines at once, so with the 9B on a 24 GB machine
pass `--interleaved-dtypes` with no value):

    python benchmarks/bench_engine.py --checkpoint model/GLM-4.1V-9B-Thinking \
        --quantize int8 int4 --accuracy-only
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "Find the search box and click it."


def screenshot():  # a 1280x720 desktop-like picture with some structure for the vision tower
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (1280, 720), (236, 239, 244))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 1280, 48), fill=(40, 44, 52))
    draw.rectangle((400, 200, 880, 240), fill=(255, 255, 255), outline=(120, 120, 120))
    for i in range(12):
        draw.rectangle((40, 80 + 50 * i, 300, 115 + 50 * i), fill=(200 - 10 * i, 210, 230))
        draw.text((50, 88 + 50 * i), f"Menu item {i}", fill=(0, 0, 0))
    return img


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss
    over fork + exec, so a worker would report at least its parent's peak (this driver's
    1 GiB bandwidth probe), hiding anything smaller."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is the best there is (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def transformers_inputs(tokenizer: Any, image_processor: Any, image: Any, image_token_id: int) -> dict[str, Any]:
    """What transformers' Glm4vProcessor returns for one image + PROMPT, built from its image
    processor and tokenizer (the processor needs torchvision for its video half)."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    pixels = image_processor(images=[image], return_tensors="pt")
    n = int(pixels["image_grid_thw"][0].prod()) // image_processor.merge_size ** 2
    text = text.replace("<|image|>", "<|image|>" * n, 1)
    encoded = tokenizer(text, return_tensors="pt")
    # 1 marks image placeholders (transformers' processor returns this for mRoPE).
    mm_types = (encoded["input_ids"] == image_token_id).long()
    return {**encoded, **pixels, "mm_token_type_ids": mm_types}


# ----------------------------------------------------------------------------- workers


class Ours:
    """Our engine: load, preprocess, prefill, decode."""

    def __init__(self, ckpt: Path, dtype: str, quantize: str | None = None,
                 compile: bool = False) -> None:
        from glmv_agent.glm4v.engine import load
        from glmv_agent.messages import image, message

        # Reuse caches off: every run encodes the screenshot and runs the whole prompt.
        # compile=True: the engine's own compiled path (a model of its own; bf16 loads zero-copy).
        self.engine = load(ckpt, device="cpu", dtype=dtype, progress=False, quantize=quantize,
                           cache_bytes=0, prefix_cache_bytes=0, compile=compile)
        self.messages = [message("user", image(screenshot()), PROMPT)]
        # The warm-up step load() ran (compiled.CompiledDecodeStep.compile_seconds).
        self.compile_s = self.engine._step.compile_seconds if compile else 0.0

    def preprocess(self) -> dict[str, Any]:
        return self.engine.prepare(self.messages)

    def prefill(self, inputs: dict[str, Any]) -> float:
        from glmv_agent.glm4v.generation import prefill

        keys = ("attention_mask", "pixel_values", "image_grid_thw")
        cache = self.engine.model.new_cache(1, int(inputs["input_ids"].shape[1]) + 1)
        t0 = time.perf_counter()
        prefill(self.engine.model, inputs["input_ids"], cache, **{k: inputs[k] for k in keys})
        return time.perf_counter() - t0

    def decode_tok_s(self, inputs: dict[str, Any], tokens: int) -> float:
        (result,) = self.engine.generate_inputs(inputs, do_sample=False, max_new_tokens=tokens, eos_token_ids=())
        assert len(result.token_ids) == tokens
        return result.decode_tokens_per_second


class Theirs:
    """transformers' Glm4vForConditionalGeneration on the same checkpoint."""

    def __init__(self, ckpt: Path, dtype: str) -> None:
        import torch
        from transformers import AutoTokenizer, Glm4vForConditionalGeneration, Glm4vImageProcessorPil

        self.model = Glm4vForConditionalGeneration.from_pretrained(ckpt, dtype=getattr(torch, dtype)).eval()
        # transformers' Glm4vProcessor needs torchvision for its video half; build the same
        # inputs from its image processor + tokenizer, exactly as the processor does.
        self.image_processor = Glm4vImageProcessorPil.from_pretrained(ckpt)
        self.tokenizer = AutoTokenizer.from_pretrained(ckpt)
        self.shot = screenshot()

    def preprocess(self) -> dict[str, Any]:
        return transformers_inputs(self.tokenizer, self.image_processor, self.shot,
                                   self.model.config.image_token_id)

    def prefill(self, inputs: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(**inputs, use_cache=True, logits_to_keep=1)
            return time.perf_counter() - t0

    def decode_tok_s(self, inputs: dict[str, Any], tokens: int) -> float:
        import transformers

        stamps: list[float] = []

        def timing_processor(input_ids: Any, scores: Any) -> Any:  # once per generated token
            stamps.append(time.perf_counter())
            return scores

        out = self.model.generate(**inputs, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens,
                                  top_k=None, top_p=None, eos_token_id=None,
                                  logits_processor=transformers.LogitsProcessorList([timing_processor]))
        assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
        # Between the first and the last stamp lie tokens - 1 decode forwards.
        return (tokens - 1) / (stamps[-1] - stamps[0])


def measure(impl: Any, runs: int, tokens: int) -> dict[str, Any]:
    pre, pf, tps = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        inputs = impl.preprocess()
        pre.append(time.perf_counter() - t0)
    for _ in range(runs):
        pf.append(impl.prefill(inputs))
    for _ in range(runs):
        tps.append(impl.decode_tok_s(inputs, tokens))
    return {"preprocess_s": statistics.median(pre), "prefill_s": statistics.median(pf),
            "decode_tok_s": statistics.median(tps), "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "runs": {"preprocess_s": pre, "prefill_s": pf, "decode_tok_s": tps}}


def worker_alone(kind: str, ckpt: Path, dtype: str, runs: int, tokens: int,
                 quantize: str | None = None) -> dict[str, Any]:
    """One engine in a fresh process: load time and peak RSS are its own."""
    t0 = time.perf_counter()
    impl = Ours(ckpt, dtype, quantize) if kind == "ours" else Theirs(ckpt, dtype)
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    stats = measure(impl, runs, tokens)
    return {"load_s": load_s, "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(), **stats}


def worker_interleaved(ckpt: Path, dtype: str, runs: int, tokens: int,
                       quantize: list[str], compile: bool = False) -> dict[str, Any]:
    """Both engines (and ours quantized / compiled) in one process, runs alternating, so a busy
    shared machine slows all alike: the fairest speed ratio here."""
    impls: dict[str, Any] = {"ours": Ours(ckpt, dtype), "theirs": Theirs(ckpt, dtype)}
    if compile:
        impls["ours compiled"] = Ours(ckpt, dtype, compile=True)
    impls.update({f"ours {mode}": Ours(ckpt, dtype, mode) for mode in quantize})
    inputs = {name: impl.preprocess() for name, impl in impls.items()}
    out: dict[str, dict[str, Any]] = {name: {"prefill_s": [], "decode_tok_s": []} for name in impls}
    if compile:
        out["ours compiled"]["compile_s"] = impls["ours compiled"].compile_s
    for _ in range(runs):
        for name, impl in impls.items():
            out[name]["prefill_s"].append(impl.prefill(inputs[name]))
            out[name]["decode_tok_s"].append(impl.decode_tok_s(inputs[name], tokens))
    return out


def worker_accuracy(ckpt: Path, dtype: str, quantize: list[str]) -> dict[str, Any]:
    """Quantized logits vs ours unquantized at every position of the screenshot prompt:
    relative error ||q - ref|| / ||ref|| (Frobenius, over all positions) and the share of
    positions whose top-1 token agrees."""
    import torch

    reference = Ours(ckpt, dtype)
    inputs = reference.preprocess()
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")
    ref = reference.engine.model(**{k: inputs[k] for k in keys}).float()
    del reference
    out: dict[str, Any] = {"positions": int(ref.shape[1])}
    for mode in quantize:
        logits = Ours(ckpt, dtype, mode).engine.model(**{k: inputs[k] for k in keys}).float()
        out[mode] = {"relative_logit_error": float(torch.linalg.norm(logits - ref) / torch.linalg.norm(ref)),
                     "top1_agreement": float((logits.argmax(-1) == ref.argmax(-1)).float().mean())}
        del logits
    return out


# ----------------------------------------------------------------------------- driver


def ensure_checkpoint(layers: int) -> Path:
    ckpt = RESULTS / f"ckpt-realwidth-{layers}layers"
    if not (ckpt / "config.json").is_file():
        print(f"writing random real-width checkpoint ({layers} layers) to {ckpt} ...", flush=True)
        subprocess.run([sys.executable, "-m", "glmv_agent.glm4v.tiny", str(ckpt), "--real-width",
                        "--layers", str(layers), "--dtype", "bfloat16"], check=True, cwd=ROOT)
    return ckpt


def memory_bandwidth_gbs(runs: int = 7) -> float:
    """Read bandwidth over 1 GiB (far larger than any cache): the faster of a plain sum and
    a bf16 matrix-vector product (the decode access pattern); median of `runs` each."""
    import torch

    nbytes = 1 << 30
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    w = torch.ones(nbytes // 2, dtype=torch.bfloat16).view(-1, 4096)
    v = torch.ones(4096, dtype=torch.bfloat16)
    best = 0.0
    for kernel in (x.sum, lambda: w @ v):
        kernel()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            kernel()
            times.append(time.perf_counter() - t0)
        best = max(best, nbytes / statistics.median(times) / 1e9)
    return best


def decoder_bytes_per_token(ckpt: Path, dtype: str) -> int:
    """Weights one decode step reads: every text-decoder layer, the final norm, lm_head
    (the embedding contributes one row only)."""
    import torch

    from glmv_agent.glm4v.loading import checkpoint_tensors

    size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    total = 0
    for name, entry in checkpoint_tensors(ckpt).items():
        shape = entry.shape
        if name.startswith(("model.language_model.layers.", "model.language_model.norm", "lm_head")):
            n = 1
            for d in shape:
                n *= d
            total += n * size
    return total


def cpu_model() -> str:
    """`lscpu`'s model name (results differ by CPU kind: AMX, AVX-512 bf16, VNNI ...)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def run_worker(impl: str, ckpt: Path, dtype: str, runs: int, tokens: int,
               quantize: list[str] | None = None, compile: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, "--ckpt", str(ckpt), "--dtypes", dtype,
           "--runs", str(runs), "--tokens", str(tokens), "--quantize", *(quantize or [])]
    cmd += ["--compile"] if compile else []
    print(f"  {impl:6s} {dtype} {' '.join(quantize or [])} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best(values: list[float], higher_is_better: bool) -> float:
    return max(values) if higher_is_better else min(values)


def table(results: dict[str, Any]) -> str:
    """Median and best-of-runs (the machine may be shared: best is the least disturbed run)."""
    rows = [("preprocess s", "preprocess_s", 3, False), ("prefill s", "prefill_s", 2, False),
            ("decode tok/s", "decode_tok_s", 2, True)]
    lines = []
    if results["by_dtype"]:  # an --accuracy-only run has no timings
        lines += ["| dtype | metric | ours | transformers | ours/theirs | ours best | theirs best | best ratio |",
                  "|---|---|---|---|---|---|---|---|"]
    for dtype, pair in results["by_dtype"].items():
        ours, theirs = pair["ours"], pair["theirs"]
        for label, key in (("load s", "load_s"), ("peak RSS MB", "peak_rss_mb")):
            a, b = ours[key], theirs[key]
            lines.append(f"| {dtype} | {label} | {a:.2f} | {b:.2f} | {a / b:.2f} | | | |")
        for label, key, digits, higher in rows:
            a, b = ours[key], theirs[key]
            ab, bb = _best(ours["runs"][key], higher), _best(theirs["runs"][key], higher)
            lines.append(f"| {dtype} | {label} | {a:.{digits}f} | {b:.{digits}f} | {a / b:.2f} | "
                         f"{ab:.{digits}f} | {bb:.{digits}f} | {ab / bb:.2f} |")
        bw = pair["bandwidth"]
        lines.append(f"| {dtype} | bandwidth-limit tok/s ({bw['bytes_per_token'] / 1e9:.2f} GB/token) | "
                     f"{bw['limit_tok_s']:.2f} | | median: ours {bw['ours_fraction']:.0%}, theirs "
                     f"{bw['theirs_fraction']:.0%} | best: ours {bw['ours_best_fraction']:.0%}, theirs "
                     f"{bw['theirs_best_fraction']:.0%} | | |")
    for mode, (ours, dtype) in results.get("quantized", {}).items():
        theirs = results["by_dtype"][dtype]["theirs"]  # transformers, unquantized
        for label, key in (("load s", "load_s"), ("peak RSS MB", "peak_rss_mb")):
            a, b = ours[key], theirs[key]
            lines.append(f"| {mode} (vs {dtype}) | {label} | {a:.2f} | {b:.2f} | {a / b:.2f} | | | |")
        for label, key, digits, higher in rows[1:]:
            a, b = ours[key], theirs[key]
            ab, bb = _best(ours["runs"][key], higher), _best(theirs["runs"][key], higher)
            lines.append(f"| {mode} (vs {dtype}) | {label} | {a:.{digits}f} | {b:.{digits}f} | {a / b:.2f} | "
                         f"{ab:.{digits}f} | {bb:.{digits}f} | {ab / bb:.2f} |")
    for dtype, both in results.get("interleaved", {}).items():
        for name in (n for n in both if n != "theirs"):
            tag = dtype if name == "ours" else f"{name.split()[1]} (vs {dtype})"
            for label, key, higher in (("prefill s", "prefill_s", False), ("decode tok/s", "decode_tok_s", True)):
                a, b = statistics.median(both[name][key]), statistics.median(both["theirs"][key])
                ab, bb = _best(both[name][key], higher), _best(both["theirs"][key], higher)
                lines.append(f"| {tag} interleaved | {label} | {a:.2f} | {b:.2f} | {a / b:.2f} | "
                             f"{ab:.2f} | {bb:.2f} | {ab / bb:.2f} |")
            if "compile_s" in both[name]:
                lines.append(f"| {tag} interleaved | compile s (at load) | {both[name]['compile_s']:.1f} "
                             "| | | | | |")
    accuracy = results.get("accuracy")
    if accuracy:
        lines += ["", f"Accuracy vs our unquantized logits, all {accuracy['positions']} prompt positions:", "",
                  "| weights | relative logit error | top-1 agreement |", "|---|---|---|"]
        lines += [f"| {mode} | {value['relative_logit_error']:.4f} | {value['top1_agreement']:.3f} |"
                  for mode, value in accuracy.items() if mode != "positions"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="text layers = vision blocks of the random checkpoint")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float32"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per decode run")
    parser.add_argument("--interleaved-dtypes", nargs="*", default=["bfloat16"],
                        help="dtypes to also run with both engines in one process, alternating "
                             "(needs memory for both; fairest speed ratio on a shared machine)")
    parser.add_argument("--quantize", nargs="*", default=[], choices=["int8", "int4"],
                        help="also run our engine with these weight-only quantizations (against "
                             "transformers in the first --dtypes), and measure their accuracy")
    parser.add_argument("--compile", action="store_true",
                        help="also run our engine with its decode step compiled (interleaved)")
    parser.add_argument("--checkpoint", type=Path,
                        help="measure this GLM-4.1V checkpoint (e.g. the real 9B weights) instead of "
                             "a random real-width one with --layers layers")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="only compare the --quantize modes' logits with the unquantized ones")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"folder for the JSON report (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--worker", choices=["ours", "theirs", "interleaved", "accuracy"], help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "interleaved":
        print(json.dumps(worker_interleaved(args.ckpt, args.dtypes[0], args.runs, args.tokens, args.quantize,
                                            args.compile)))
        return
    if args.worker == "accuracy":
        print(json.dumps(worker_accuracy(args.ckpt, args.dtypes[0], args.quantize)))
        return
    if args.worker:
        mode = args.quantize[0] if args.quantize else None
        print(json.dumps(worker_alone(args.worker, args.ckpt, args.dtypes[0], args.runs, args.tokens, mode)))
        return

    if args.accuracy_only and not args.quantize:
        parser.error("--accuracy-only compares quantized logits: name the modes with --quantize int8 int4")
    if args.checkpoint is not None and not (args.checkpoint / "config.json").is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no config.json there; pass a GLM-4.1V "
                     "checkpoint directory")

    import torch

    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}", flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or ensure_checkpoint(args.layers)
    if args.accuracy_only:
        accuracy = run_worker("accuracy", ckpt, args.dtypes[0], args.runs, args.tokens, args.quantize)
        report({"machine": {"platform": platform.platform(), "cpu": cpu_model()},
                "settings": {"checkpoint": str(ckpt), "dtype": args.dtypes[0], "screenshot": "1280x720"},
                "by_dtype": {}, "accuracy": accuracy}, args.results)
        return
    bandwidth = memory_bandwidth_gbs()
    print(f"memory read bandwidth: {bandwidth:.1f} GB/s", flush=True)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu": cpu_model(),
                    "torch_threads": torch.get_num_threads(), "bandwidth_gbs": bandwidth},
        "settings": {"layers": args.layers, "runs": args.runs, "tokens": args.tokens,
                     "screenshot": "1280x720", "checkpoint": str(ckpt)},
        "by_dtype": {},
    }
    pairs = {dtype: {impl: run_worker(impl, ckpt, dtype, args.runs, args.tokens) for impl in ("ours", "theirs")}
             for dtype in args.dtypes}
    quant_dtype = args.dtypes[0]
    results["quantized"] = {mode: (run_worker("ours", ckpt, quant_dtype, args.runs, args.tokens, [mode]), quant_dtype)
                            for mode in args.quantize}
    interleaved = {dtype: run_worker("interleaved", ckpt, dtype, args.runs, args.tokens,
                                     args.quantize if dtype == quant_dtype else [], args.compile)
                   for dtype in args.interleaved_dtypes}
    results["interleaved"] = interleaved
    if args.quantize:
        results["accuracy"] = run_worker("accuracy", ckpt, quant_dtype, args.runs, args.tokens, args.quantize)
    # The machine may be shared: measure again afterwards and keep the better (truer) figure.
    bandwidth = max(bandwidth, memory_bandwidth_gbs())
    results["machine"]["bandwidth_gbs"] = bandwidth
    print(f"memory read bandwidth (best of before/after): {bandwidth:.1f} GB/s", flush=True)
    for dtype, pair in pairs.items():
        per_token = decoder_bytes_per_token(ckpt, dtype)
        limit = bandwidth * 1e9 / per_token
        pair["bandwidth"] = {"bytes_per_token": per_token, "limit_tok_s": limit,
                             "ours_fraction": pair["ours"]["decode_tok_s"] / limit,
                             "theirs_fraction": pair["theirs"]["decode_tok_s"] / limit,
                             "ours_best_fraction": max(pair["ours"]["runs"]["decode_tok_s"]) / limit,
                             "theirs_best_fraction": max(pair["theirs"]["runs"]["decode_tok_s"]) / limit}
        results["by_dtype"][dtype] = pair
    report(results, args.results)


def report(results: dict[str, Any], folder: Path) -> None:
    """Print the table and write everything to a timestamped JSON file in `folder`."""
    text = table(results)
    print(text)
    out = folder / f"bench_engine_{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.write_text(json.dumps({**results, "table": text}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
