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
"""

from __future__ import annotations

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
