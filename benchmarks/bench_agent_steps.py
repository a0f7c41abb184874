"""Prefill per agent step with the engine's caches on vs off (glm4v/caches.py).

    flock /tmp/heavy.lock python benchmarks/bench_agent_steps.py            # real-width ckpt
    python benchmarks/bench_agent_steps.py --checkpoint DIR --dtype float32  # any checkpoint

Three sequences, their prompts built by the project's own dialects (tests/support/agent_episodes.py):
a 5-step GLM-4.1V PC episode (1280x720 screenshots, up to 4 half-size history ones), a
5-turn AutoGLM-Phone episode (540x1200 screenshots) and PageAgent's act / query / assert on
one 1280x720 page (GLM-4.1V web prompt); and a 4-turn chat as a server client sends it
(1280x720 screenshots in turns 1 and 3, each turn carrying the model's previous answer
verbatim, at the token level: `TokenChat`), which reuses the stored answers. One engine,
one process; every step runs with the caches off (an EngineCaches of 0 bytes swapped in),
then on (the sequence's own caches, empty at its start), so both modes see the same machine
load; `--repeats N` keeps the fastest of N runs per step.
Per step: prompt tokens, prefill seconds, vision-tower seconds, cached tokens and images,
whether both modes gave the same tokens, and the caches' bytes against their bounds. One
new token per agent step (prefill is what the caches change), ANSWER_TOKENS per chat turn.
Prints a Markdown table and writes benchmarks/results/bench_agent_steps_<timestamp>.json
(git-ignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from agent_episodes import (TokenChat, chat_turns, page_sequence, pc_episode,  # noqa: E402
                            phone_episode, screen)

from glmv_agent.glm4v.caches import EngineCaches  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CHAT = "chat (server)"
NAMES = ("glm-4.1v pc", "autoglm-phone", "page agent", CHAT)
ANSWER_TOKENS = 16  # per chat turn: the answer the next turn carries


def sequences() -> dict[str, list[tuple[str, Any]]]:
    """Per sequence, its steps: (name, messages), or for the chat (name, user-turn parts)."""
    desktop = partial(screen, size=(1280, 720))
    phone = partial(screen, size=(540, 1200))
    return dict(zip(NAMES, (
        [(f"step {i + 1}", m) for i, m in enumerate(pc_episode(desktop))],
        [(f"turn {i + 1}", m) for i, m in enumerate(phone_episode(phone))],
        page_sequence(lambda _: desktop(0)),
        [(f"turn {i + 1}", parts) for i, parts in enumerate(chat_turns(desktop))])))


def run_step(engine: Any, name: str, prompt: Any, caches: EngineCaches,
             new_tokens: int) -> tuple[dict[str, Any], list[int]]:
    """One generation (messages, or ready inputs for the chat) with `caches` swapped in."""
    engine.caches = engine.model.caches = caches
    options = {"max_new_tokens": new_tokens, "do_sample": False}
    result = (engine.generate_inputs(prompt, **options)[0] if isinstance(prompt, dict)
              else engine.generate(prompt, **options))
    row = {"step": name, "prompt_tokens": result.prompt_tokens,
           "prefill_s": result.prefill_seconds, "vision_s": result.vision_seconds,
           "cached_tokens": result.cached_tokens, "cached_images": result.cached_images,
           "vision_cache_bytes": caches.vision.nbytes, "prefix_cache_bytes": caches.prefix.nbytes}
    assert caches.vision.nbytes <= caches.vision.max_bytes
    assert caches.prefix.nbytes <= caches.prefix.max_bytes
    return row, result.token_ids


def run_sequence(engine: Any, label: str, steps: list[tuple[str, Any]], bounds: dict[str, int],
                 repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Caches off and on interleaved step by step (the machine's load drifts; both modes see
    the same drift); each repeat starts with empty caches; per step the fastest repeat."""
    best: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    new_tokens = ANSWER_TOKENS if label == CHAT else 1
    for repeat in range(repeats):
        warm = EngineCaches(**bounds)
        chat = TokenChat(engine) if label == CHAT else None
        for index, (name, prompt) in enumerate(steps):
            if chat is not None:
                prompt = chat.ask(*prompt)
            tokens = {}
            for mode in ("off", "on"):
                row, tokens[mode] = run_step(engine, name, prompt,
                                             EngineCaches(0, 0) if mode == "off" else warm, new_tokens)
                row["same_tokens"] = mode == "off" or tokens["on"] == tokens["off"]
                print(f"  {mode} {name}: {row}", flush=True)
                if repeat == 0:
                    best[mode].append(row)
                elif row["prefill_s"] < best[mode][index]["prefill_s"]:
                    best[mode][index] = row
            if chat is not None:
                chat.answer(tokens["on"])  # the next turn carries this answer verbatim
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=RESULTS / "ckpt-realwidth-2layers")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cache-bytes", type=int, default=None, help="vision cache bound")
    parser.add_argument("--prefix-cache-bytes", type=int, default=None, help="prefix cache bound")
    parser.add_argument("--repeats", type=int, default=1, help="runs per sequence (fastest kept)")
    parser.add_argument("--only", action="append", default=None, choices=NAMES,
                        help="run only this sequence (repeatable)")
    args = parser.parse_args()

    import torch

    from glmv_agent.glm4v.engine import load

    if not (args.checkpoint / "config.json").is_file():
        print(f"no checkpoint at {args.checkpoint}; write it with benchmarks/bench_engine.py first")
        return 2
    t0 = time.perf_counter()
    engine = load(args.checkpoint, device="cpu", dtype=args.dtype, progress=False)
    print(f"loaded {args.checkpoint.name} ({args.dtype}) in {time.perf_counter() - t0:.1f} s", flush=True)
    bounds = {k: v for k, v in (("cache_bytes", args.cache_bytes),
                                ("prefix_cache_bytes", args.prefix_cache_bytes)) if v is not None}
    engine.generate([{"role": "user", "content": "warm up"}], max_new_tokens=1, do_sample=False)
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label, steps in sequences().items():
        if args.only and label not in args.only:
            continue
        print(label, flush=True)
        table[label] = run_sequence(engine, label, steps, bounds, args.repeats)
    lines = ["| sequence | step | prompt tokens | cached tokens | cached images | prefill off (s) | "
             "prefill on (s) | on/off | vision off (s) | vision on (s) | same tokens | caches (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, modes in table.items():
        for off, on in zip(modes["off"], modes["on"]):
            vision = f"{on['vision_s']:.2f}" if off["vision_s"] else "-"
            lines.append(
                f"| {label} | {on['step']} | {on['prompt_tokens']} | {on['cached_tokens']} | "
                f"{on['cached_images']} | {off['prefill_s']:.2f} | {on['prefill_s']:.2f} | "
                f"{on['prefill_s'] / off['prefill_s']:.2f} | {off['vision_s']:.2f} | {vision} | "
                f"{'yes' if on['same_tokens'] else 'NO'} | "
                f"{(on['vision_cache_bytes'] + on['prefix_cache_bytes']) / 2**20:.0f} |")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_agent_steps_{time.strftime('%Y%m%d-%H%M%S')}.json"
    bounds_used = EngineCaches(**bounds)
    out.write_text(json.dumps({
        "checkpoint": str(args.checkpoint), "dtype": args.dtype, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "bounds": {"vision": bounds_used.vision.max_bytes, "prefix": bounds_used.prefix.max_bytes},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "repeats": args.repeats, "table": table, "markdown": lines}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
