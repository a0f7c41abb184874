"""Server benchmark: total decode throughput of 4 concurrent clients vs 1, through HTTP.

`glmv-agent serve`'s scheduler decodes waiting requests with the same settings as one
batch. Decoding is memory-bound (every token reads all weights, the 151552x4096 lm_head
included), so a batch of 4 should cost little more than 1. Measured end to end with the
`openai` client against the real FastAPI + uvicorn app on 127.0.0.1, over the real-width
random checkpoint (hidden 4096, vocab 151552, 2 text layers), text prompts, greedy.

    flock /tmp/heavy.lock python benchmarks/bench_server.py            # 2 runs, 32 tokens
    python benchmarks/bench_server.py --tokens 64 --runs 3 --clients 4

Rows are interleaved (1 client, then N clients, per run) so drift hits both; medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
RESULTS = ROOT / "benchmarks" / "results"
QUESTIONS = ["Where is the search box?", "Which button submits the form?",
             "What does the top menu contain?", "Is there a login link on this page?",
             "Describe the layout.", "Which item is selected?", "Where is the help icon?",
             "What is the page title?"]


def ask(client: Any, model: str, question: str, tokens: int) -> int:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                           max_tokens=tokens, temperature=0)
    return int(reply.usage.completion_tokens)


def run_clients(base_url: str, model: str, clients: int, tokens: int) -> dict[str, float]:
    """`clients` threads, each asking one question at the same moment; total tokens/s."""
    import openai

    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def one(i: int) -> None:
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=3600) as client:
            barrier.wait()
            counts[i] = ask(client, model, QUESTIONS[i % len(QUESTIONS)], tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {"clients": clients, "tokens": sum(counts), "seconds": seconds, "tokens_per_s": sum(counts) / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=RESULTS / "ckpt-realwidth-2layers")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per request")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    from glmv_agent.glm4v.engine import load
    from glmv_agent.server import ServerConfig, bind_socket, create_app, uvicorn_server

    if not (args.checkpoint / "config.json").is_file():
        print(f"no checkpoint at {args.checkpoint}; write it with benchmarks/bench_engine.py first")
        return 2
    t0 = time.perf_counter()
    engine = load(args.checkpoint, device="cpu", dtype=args.dtype)
    print(f"loaded {args.checkpoint.name} ({args.dtype}) in {time.perf_counter() - t0:.1f} s")
    config = ServerConfig(model_name="bench", max_batch=args.clients, max_queue=max(8, args.clients))
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(engine, config)
    server = uvicorn_server(app, config, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    scheduler = app.state.scheduler

    run_clients(base_url, "bench", 1, 2)  # warm-up
    rows: dict[int, list[dict[str, float]]] = {1: [], args.clients: []}
    for run in range(args.runs):
        for clients in (1, args.clients):
            before = len(scheduler.batch_sizes)
            row = run_clients(base_url, "bench", clients, args.tokens)
            row["batches"] = list(scheduler.batch_sizes)[before:]
            rows[clients].append(row)
            print(f"run {run + 1}: {clients} client(s): {row['tokens']} tokens in {row['seconds']:.1f} s = "
                  f"{row['tokens_per_s']:.2f} tok/s (batches {row['batches']})")
    server.should_exit = True
    thread.join(60)

    single = statistics.median(r["tokens_per_s"] for r in rows[1])
    many = statistics.median(r["tokens_per_s"] for r in rows[args.clients])
    print(f"\nmedian total tokens/s: 1 client {single:.2f}, {args.clients} clients {many:.2f} "
          f"-> {many / single:.2f}x (goal >= 2.5x)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_server_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                               "single_tokens_per_s": single, "concurrent_tokens_per_s": many,
                               "speedup": many / single}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
