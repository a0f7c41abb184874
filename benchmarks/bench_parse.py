"""Parse time of hostile answers against their length: it must grow linearly.

A model stuck in a loop writes one fragment over and over (often never closing a call or a
dict) until max_tokens. This parses such answers at 22 kB, 220 kB and 2.2 MB for every
family x platform and prints, per size, the slowest parse (CPU seconds) and its time per kB. Linear
scaling shows as a flat us/kB column (quadratic parsing multiplies it by 10 per row).

    python benchmarks/bench_parse.py                 # all sizes
    python benchmarks/bench_parse.py --sizes 22000 220000
"""

from __future__ import annotations

import argparse
import gc
import time

from glmv_agent.dialects import get_dialect
from glmv_agent.errors import ParseError

COMBOS = [("glm-4.1v", "mobile"), ("glm-4.1v", "pc"), ("glm-4.1v", "web"),
          ("glm-4.5v", "mobile"), ("glm-4.5v", "pc"), ("glm-4.5v", "web"),
          ("autoglm-phone", "mobile")]
# Fragments a looping model repeats (the same list as tests/unit/test_dialects_hostile.py).
FRAGMENTS = [
    "I'll click left_click(start_box='[100,200]', element_info='it's here' ",
    "type(content='Don't stop') key(keys='ctrl+",
    "left_click(", "{", "{\"action_type\": \"click\", \"box_2d\": [[1,2,3,4]], ",
    "do(action=\"Type\", text=\"say \"hi\" ", "do(do(", "((((''''\"\"\"\"\\\\))",
    "Action: Click [x]\n", "Thought: again Action: nothing here ", "Memory_Updated: {\"a\": [",
    "\n\n   \t  ", "<|begin_of_box|>", "Action: {\"action_type\": {\"action_type\": [",
    # A valid action repeated: parses at the first copy.
    "left_click(start_box='[100,200]')\n",
]


def parse_seconds(combo: tuple[str, str], answer: str) -> float:
    dialect = get_dialect(*combo)
    gc.collect()  # garbage of the previous case must not be collected on this one's clock
    started = time.process_time()  # CPU time: the machine may be shared
    try:
        dialect.parse(answer)
    except ParseError:
        pass
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[22_000, 220_000, 2_200_000])
    args = parser.parse_args()
    print(f"{'size':>10} {'slowest (CPU)':>14} {'us/kB':>8}  slowest case")
    for size in args.sizes:
        worst, case = 0.0, ""
        for combo in COMBOS:
            for fragment in FRAGMENTS:
                answer = fragment * (size // len(fragment))
                seconds = parse_seconds(combo, answer)
                if seconds > worst:
                    worst, case = seconds, f"{'/'.join(combo)} x {fragment[:30]!r}"
        print(f"{size:>10} {worst:>13.3f}s {worst / (size / 1000) * 1e6:>8.1f}  {case}")


if __name__ == "__main__":
    main()
