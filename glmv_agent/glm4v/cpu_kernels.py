"""Kernel choices for the GLM-4.1V forward pass: the spec's operations in the form that runs
fastest, kept here so the model files read as the math.

Each function computes exactly what its docstring names (up to float rounding), whatever the
device; only the *how* differs:

- `conv_as_linear`: a convolution whose stride equals its kernel, applied to inputs of exactly
  one kernel each (the vision patch embedding, the 2x2 merge), is a linear map of each
  flattened input. oneDNN runs such a conv as one tiny 1x1-output image per row (~10 GFLOP/s
  on CPU); as one matmul it runs at the matmul rate on every CPU and GPU.
- `block_attention` (vision) and `causal_attention` (text prefill): on CPU in bf16, torch's
  flash-attention kernel (`_scaled_dot_product_flash_attention_for_cpu`) reaches well under
  the bf16 matmul rate (AMD EPYC, 2 cores: ~2x slower at the vision tower's 12 heads x 4784
  patches). There we run attention as two matmuls per head and chunk of query rows, with the
  softmax computed in fp32 (what transformers' eager attention does; memory stays bounded by
  the chunk). fp32 on CPU and every other device keep `F.scaled_dot_product_attention`,
  which is the faster one there. `causal_attention` is not used by the text decoder yet
  (`text.py` keeps SDPA for prefill): it measured 0.069 s vs SDPA's 0.111 s per layer on a
  quiet 2-core AMD EPYC but was sometimes slower under load, and its bf16 error is eager
  attention's (0.021 vs SDPA's 0.013 against fp32), so wiring it needs a parity decision.
- `continuation_attention` (the rest of a prompt after a reused prefix, every device): SDPA
  in chunks of query rows, each over the keys it may see, instead of one masked SDPA over
  the whole rectangle (which does twice a causal prefill's work when the prefix is short).
- `decode_attention` (text decode, every device): one query row per sequence against the KV
  cache as two grouped fp32 matmuls, not SDPA, which is launch-bound at one query row.
- `single_row_matmuls` (text decode and the prompt's lm_head at batch 1, CPU, bf16): the
  one-row matrix products run on ATen's own matrix-vector kernel (fp32 accumulation) instead
  of oneDNN's matmul, which reads the weights at about half the rate there (AMD EPYC, 2
  cores: the whole real-width decode step 60 ms instead of 117 ms, i.e. memory bandwidth
  instead of half of it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# Query rows per matmul chunk: scores of one chunk are QUERY_CHUNK x keys per head (bf16),
# e.g. 1024 x 4784 x 2 bytes ~ 10 MB for a 1280x720 screenshot. 1024 and 2048 measured
# fastest on the AMD EPYC (512 and whole-image rows were slower).
QUERY_CHUNK = 1024
# Text prefill: positions per chunk; each chunk is one matmul for all query heads sharing a
# kv head (16 at real width, so 4096 rows). 256 beat 64 and SDPA at 1215 tokens.
CAUSAL_CHUNK = 256


def conv_as_linear(conv: nn.Conv2d | nn.Conv3d, items: torch.Tensor) -> torch.Tensor:
    """`conv(items)` flattened to [N, out_channels], for items [N, in_channels, *kernel] (one
    kernel-sized input each, in the conv's own layout), computed as one matmul.

    The conv weight [out, in, *kernel] flattens in the same (in, *kernel) order as each item,
    so the weight's flat view is the matrix: no copy, nothing to cache or keep in sync.
    """
    weight = conv.weight
    kernel = tuple(weight.shape[2:])
    if (tuple(conv.stride) != kernel or any(conv.padding) or any(d != 1 for d in conv.dilation)
            or conv.groups != 1):
        raise ValueError(f"conv_as_linear needs stride == kernel {kernel}, no padding, dilation 1 "
                         f"and groups 1; got stride {conv.stride}, padding {conv.padding}, "
                         f"dilation {conv.dilation}, groups {conv.groups}")
    if tuple(items.shape[1:]) != tuple(weight.shape[1:]):
        raise ValueError(f"conv_as_linear: items must be [N, {', '.join(map(str, weight.shape[1:]))}], "
                         f"got {list(items.shape)}")
    return F.linear(items.reshape(items.shape[0], -1), weight.view(weight.shape[0], -1), conv.bias)


def _matmul_attention_pays(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype == torch.bfloat16


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, out: torch.Tensor,
            last_seen: int | None = None) -> None:
    """out [M, D] = softmax(q @ k^T * scale) @ v for q [M, D], k/v [S, D]. With last_seen=c
    the rows are `group` heads times M / group consecutive positions, and row r of each head
    sees only keys <= c + r (causal)."""
    # addmm's alpha scales inside the matmul, before the one rounding to q's dtype.
    scores = torch.addmm(q.new_zeros(()).expand(q.shape[0], k.shape[0]), q, k.t(),
                         beta=0, alpha=scale)
    if last_seen is not None:
        hidden = torch.ones(k.shape[0] - last_seen, k.shape[0] - last_seen, dtype=torch.bool,
                            device=q.device).triu(1)
        per_head = scores.view(-1, hidden.shape[0], k.shape[0])
        per_head[..., last_seen:].masked_fill_(hidden, float("-inf"))
    # = softmax(dtype=fp32).to(bf16), as transformers' eager attention: the CPU bf16 softmax
    # computes in fp32 internally and rounds once.
    torch.mm(torch.softmax(scores, dim=-1), v, out=out)


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int],
                    scale: float) -> torch.Tensor:
    """Bidirectional attention inside each consecutive block of `lengths` rows, none across
    blocks (the vision tower's per-image attention). q, k, v [heads, N, head_dim] -> same."""
    if not _matmul_attention_pays(q):
        # [1, H, n, D] per block: the very call transformers' sdpa path makes.
        outs = [F.scaled_dot_product_attention(qs[None], ks[None], vs[None], scale=scale)[0]
                for qs, ks, vs in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))]
        return torch.cat(outs, dim=1)
    out = torch.empty_like(q)
    start = 0
    for length in lengths:
        end = start + length
        for head in range(q.shape[0]):
            keys, values = k[head, start:end], v[head, start:end]
            for row in range(start, end, QUERY_CHUNK):
                stop = min(row + QUERY_CHUNK, end)
                _attend(q[head, row:stop], keys, values, scale, out[head, row:stop])
        start = end
    return out


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Causal grouped-query attention with no padding: q [B, Hq, L, D], k/v [B, Hkv, S, D]
    with S >= L, the queries being the last L of the S positions; each query sees the keys up
    to its own position. Equals `F.scaled_dot_product_attention(q, k, v, is_causal=True,
    scale=scale, enable_gqa=True)` when S == L (the text prefill)."""
    batch, heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    if not _matmul_attention_pays(q):
        if keys == length:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                  enable_gqa=True)
        visible = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril(keys - length)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale,
                                              enable_gqa=True)
    group = heads // kv_heads
    out = torch.empty_like(q)
    rows = CAUSAL_CHUNK
    for b in range(batch):
        for g in range(kv_heads):
            qg, og = q[b, g * group:(g + 1) * group], out[b, g * group:(g + 1) * group]
            for row in range(0, length, rows):
                stop = min(row + rows, length)
                first = keys - length + row  # the last key the chunk's first row sees
                seen = first + stop - row  # keys visible to its last row
                chunk = torch.empty(group * (stop - row), dim, dtype=q.dtype, device=q.device)
                _attend(qg[:, row:stop].reshape(-1, dim), k[b, g, :seen], v[b, g, :seen], scale,
                        chunk, last_seen=first)
                og[:, row:stop] = chunk.view(group, stop - row, dim)
    return out


# Query rows per SDPA call in `continuation_attention` (256 beat 512 at 4780 and 3821 rows).
CONTINUATION_CHUNK = 256


def continuation_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                           scale: float) -> torch.Tensor:
    """The rest of a prompt after a reused prefix (caches.py): q [B, H, L, D] are the last L
    of the S positions of k/v [B, KVH, S, D], under `mask` [B, 1, L, S], which hides from
    query i at least every key after S - L + i (causal). = one masked SDPA, run in chunks of
    CONTINUATION_CHUNK query rows, each over only the keys its last row may see: one SDPA
    call computes the whole [L, S] rectangle, twice a causal prefill's work when the reused
    prefix is short (bf16, 2-core AMD EPYC, per layer: 2.25 s at L=4780, S=4785 against
    1.30 s chunked and 1.19 s for the cold causal prefill; L=3821, S=5191: 1.95 / 1.37 s)."""
    length, keys = q.shape[2], k.shape[2]
    outs = []
    for row in range(0, length, CONTINUATION_CHUNK):
        stop = min(row + CONTINUATION_CHUNK, length)
        seen = keys - length + stop  # keys visible to the chunk's last row
        outs.append(F.scaled_dot_product_attention(
            q[:, :, row:stop], k[:, :, :seen], v[:, :, :seen], attn_mask=mask[..., row:stop, :seen],
            scale=scale, enable_gqa=True))
    return torch.cat(outs, dim=2)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """One query per row against the whole cache: q [B, H, 1, D], k/v [B, KVH, S, D], mask
    [B, 1, 1, S] (True = attend) -> [B, H, 1, D]; masked slots get weight exactly 0.

    Two grouped matmuls in fp32 (each KV head serves its H / KVH query heads as the rows of one
    matrix), not SDPA: at one query row CPU SDPA is launch-bound, and in bf16 it took ~5-20 ms
    per layer at 1280 slots on a 2-core AMD EPYC against ~0.4 ms for this."""
    batch, heads, _, dim = q.shape
    kv_heads = k.shape[1]
    grouped = q.reshape(batch, kv_heads, heads // kv_heads, dim).float()
    scores = torch.matmul(grouped, k.float().transpose(-1, -2)) * scale  # [B, KVH, G, S]
    scores = scores.masked_fill(~mask.view(batch, 1, 1, -1), float("-inf"))
    out = torch.matmul(scores.softmax(dim=-1), v.float())  # [B, KVH, G, D]
    return out.reshape(batch, heads, 1, dim).to(q.dtype)


# oneDNN's on/off switch is process-wide (torch.backends.mkldnn.enabled), so concurrent decode
# steps (two engines in two threads) share one "off" period: the first to enter turns it off,
# the last to leave restores what it was.
_one_row_lock = threading.Lock()
_one_row_steps = 0
_one_row_saved = True


@contextmanager
def single_row_matmuls(rows: int, dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Inside, `F.linear` / `torch.mm` of a bf16 [1, K] input on CPU runs on ATen's
    matrix-vector kernel (fp32 accumulation, one bf16 rounding: the same math as oneDNN's,
    up to summation order) instead of oneDNN's matmul; elsewhere it does nothing.

    Why: at one row the product only streams the weight matrix once, and oneDNN's bf16 matmul
    streams it at about half the memory bandwidth on CPUs without AMX (2-core AMD EPYC, one
    4096x151552 lm_head: 65-92 ms vs 110-240 ms, the same ratio for the 4096x27392 MLP input).
    Only batch 1: at 2+ rows ATen's fallback is a plain loop, 1.5-6x slower than oneDNN.

    oneDNN is switched off for the whole process while a step runs (torch has no per-thread
    switch): a bf16 matmul that another thread runs meanwhile takes the slow path (the same
    result up to float rounding). In this package every model call holds its engine's lock."""
    global _one_row_steps, _one_row_saved
    if not (rows == 1 and dtype == torch.bfloat16 and device.type == "cpu"):
        yield
        return
    with _one_row_lock:
        if _one_row_steps == 0:
            # torch annotates the flag as its ContextProp descriptor; read and written it is a bool.
            _one_row_saved = bool(torch.backends.mkldnn.enabled)
            torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
        _one_row_steps += 1
    try:
        yield
    finally:
        with _one_row_lock:
            _one_row_steps -= 1
            if _one_row_steps == 0:
                torch.backends.mkldnn.enabled = _one_row_saved  # type: ignore[assignment]
