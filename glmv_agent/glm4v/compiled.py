"""The hot decode step compiled with `torch.compile` (`engine.load(..., compile=True)`).

`Glm4vModel.decode_forward` has static shapes and no host syncs, so it compiles to one graph
(`fullgraph=True`): on CPU with inductor's default mode (fused elementwise C++ kernels around
the same matmul kernels as eager), on CUDA with `mode="reduce-overhead"` (inductor + CUDA
graphs, which removes the per-kernel launch cost that bounds eager decoding at batch 1).

What it costs, and when to use it:
- Compile time, once per process and batch size: at load (a warm-up step) the step is traced
  and compiled; inductor's on-disk cache (gcc-built kernels) makes later processes faster.
  Measured on a shared 2-core AMD EPYC: tiny test checkpoint ~60 s with a cold cache, ~5 s
  warm; real-width 2-layer checkpoint 11-19 s warm (the graph, not the weights, sets it).
- Speed: on CPU, decode is bound by the bf16 matrix-vector products (~92% of the step),
  which the compiled graph calls as extern kernels, the very ones eager runs (batch 1: ATen's
  matrix-vector kernel, `cpu_kernels.single_row_matmuls`); what compiling removes is the
  Python and per-op cost of the glue around them (norms, rope, attention, ~2-4% of a 2-layer
  step, more for 40 layers). So on CPU compiled ~= eager, both near the memory bandwidth
  (see benchmarks/README.md); on a GPU, CUDA graphs are where batch-1 decode speed comes from.
- Recompiles: none per token and none per prompt length. The cache length is rounded up to
  `generation.CACHE_LENGTH_BUCKET` and its slot dimension is marked dynamic; a new batch size
  compiles once more. On CUDA a new cache length re-records the CUDA graph (cheap, no
  recompile); the step keeps the last cache and reuses it while the shape fits.
- Memory: the reused KV cache stays allocated between calls (on CUDA the graph also keeps
  its own pool for intermediate tensors).
- Exactness: prefill is not compiled (it stays exact against transformers); compiled decode
  rounds to the model dtype where eager does (`emulate_precision_casts`), so its logits differ
  from eager by the summation order of fused reductions only, and greedy tokens are the same
  in the tests, fp32 and bf16 (without the emulation bf16 tokens drifted after 6 steps).
Use it for long generations and servers, where the compile pays back; skip it for one-off
short answers, or when the first answer must come fast.

The CUDA path (`reduce-overhead`, static cache addresses) is written for GPUs but was not
run on one when it was written; the CPU path is tested.
"""

from __future__ import annotations

import logging
import time

import torch

from ..errors import ConfigError
from .cpu_kernels import single_row_matmuls
from .generation import CACHE_LENGTH_BUCKET
from .kv_cache import KVCache
from .model import Glm4vModel

logger = logging.getLogger(__name__)


class CompiledDecodeStep:
    """A generation `step_fn` (model, token_ids [B, 1], cache) -> logits [B, V] running the
    compiled `model.decode_forward`, plus `new_cache`, a cache factory that reuses its last
    cache (so CUDA graphs keep their static addresses)."""

    def __init__(self, model: Glm4vModel, *, mode: str | None = None) -> None:
        self.model = model
        self.cuda = model.device.type == "cuda"
        if model.device.type not in ("cpu", "cuda"):
            raise ConfigError(f"compile=True supports CPU and CUDA devices, not {model.device}; "
                              "load without compile")
        # CUDA graphs are what makes batch-1 decoding fast on a GPU; CPU has no launch cost to
        # remove, so inductor's default mode.
        self.mode = mode if mode is not None else ("reduce-overhead" if self.cuda else "default")
        # The mode's inductor options, plus rounding to bf16/fp16 wherever eager rounds: without
        # it fused kernels keep fp32 between ops, and greedy bf16 tokens drift from eager's.
        options = {**torch._inductor.list_mode_options(self.mode), "emulate_precision_casts": True}
        self._forward = torch.compile(model.decode_forward, fullgraph=True, options=options)
        self._cache: KVCache | None = None
        self.compile_seconds = 0.0

    def __call__(self, model: Glm4vModel, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if model is not self.model:
            raise ConfigError("this compiled decode step belongs to another model")
        self._prepare(cache)
        if self.cuda:
            # Each call is a new CUDA-graph step; the previous step's outputs are consumed.
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            logits = model.decode_step(token_ids, cache, check_ids=False, forward=self._forward)
        # A CUDA graph's output lives in its pool and is overwritten by the next replay.
        return logits.clone() if self.cuda else logits

    def new_cache(self, batch_size: int, max_length: int,
                  device: torch.device | str | None = None) -> KVCache:
        """A cache of this shape: the last one again (emptied by prefill) when it matches."""
        old = self._cache
        if old is not None and old.batch_size == batch_size and old.max_length == max_length:
            return old
        self._cache = old = None  # free the old buffers before allocating the new ones
        self._cache = self.model.new_cache(batch_size, max_length, device=device)
        return self._cache

    def warm_up(self, batch_size: int = 1) -> float:
        """Compile now (one step on a scratch cache); returns the seconds it took."""
        t0 = time.perf_counter()
        # Inference tensors, as in generation (a plain tensor would compile another graph).
        with torch.inference_mode():
            cache = self.new_cache(batch_size, CACHE_LENGTH_BUCKET)
            self._prepare(cache)
            token = torch.zeros(batch_size, 1, dtype=torch.long, device=self.model.device)
            # Under the kernel choice decode_step makes, so the graph is traced as it will run.
            with single_row_matmuls(batch_size, self.model.dtype, self.model.device):
                self._forward(token, cache)
                self._forward(token, cache)  # CUDA graphs record on a later call than the compile
            cache.reset()
        self.compile_seconds = time.perf_counter() - t0
        logger.info("compiled the decode step (%s, batch %d) in %.1f s", self.mode, batch_size,
                    self.compile_seconds)
        return self.compile_seconds

    def _prepare(self, cache: KVCache) -> None:
        """Mark a cache's buffers once: slot dimension dynamic (no recompile when the prompt
        length changes the cache length), addresses static for CUDA graphs."""
        if getattr(cache, "_compiled_step_ready", False):
            return
        for buffer in (cache.k, cache.v):
            torch._dynamo.mark_dynamic(buffer, 3)
        torch._dynamo.mark_dynamic(cache.valid, 1)
        if self.cuda:
            for tensor in cache.tensors():
                torch._dynamo.mark_static_address(tensor)
        cache._compiled_step_ready = True  # type: ignore[attr-defined]
