"""The kernel choices in glmv_agent.glm4v.cpu_kernels compute what their plain torch
counterparts compute: strided convolutions as matmuls, attention as chunked matmuls, decode
attention over the cache as two grouped matmuls, one-row bf16 products off oneDNN.

The full-model parity tests (tests/engine/test_glm4v_model.py) cover them at tiny widths; these
check the real GLM-4.1V widths and the edges (chunk boundaries, several images, causal
offsets) against F.conv3d / F.conv2d / F.scaled_dot_product_attention.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from glmv_agent.glm4v import cpu_kernels
from glmv_agent.glm4v.cpu_kernels import (block_attention, causal_attention, conv_as_linear,
                                          decode_attention, single_row_matmuls)

CPU = torch.device("cpu")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- strided convolutions as matmuls -------------------------------------------------------

@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_patch_embed_conv3d_as_linear(dtype: torch.dtype, tol: float):
    # Real patch embedding: 3 x 2 x 14 x 14 pixels -> 1536, bias on.
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 1536, (2, 14, 14), stride=(2, 14, 14))
    items = randn(37, 3, 2, 14, 14, seed=1)
    with torch.no_grad():
        ref = F.conv3d(items, conv.weight, conv.bias, stride=conv.stride).view(37, 1536)
        got = conv_as_linear(conv.to(dtype), items.to(dtype))
    assert got.shape == (37, 1536) and got.dtype == dtype
    assert max_diff(got, ref) <= tol * ref.abs().max().item()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_merge_conv2d_as_linear_with_channels_last_blocks(dtype: torch.dtype, tol: float):
    # Real 2x2 merge: blocks arrive channels last [B, 2, 2, 1536]; the conv wants [B, C, 2, 2].
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1536, 4096, 2, stride=2)
    blocks = randn(9, 2, 2, 1536, seed=2)
    with torch.no_grad():
        ref = F.conv2d(blocks.permute(0, 3, 1, 2), conv.weight, conv.bias, stride=2).view(9, 4096)
        got = conv_as_linear(conv.to(dtype), blocks.to(dtype).permute(0, 3, 1, 2))
    assert max_diff(got, ref) <= tol * ref.abs().max().item()
    # Rows are the blocks: a row depends on its own block only.
    with torch.no_grad():
        other = blocks.clone()
        other[4] += 1
        moved = conv_as_linear(conv, other.to(dtype).permute(0, 3, 1, 2))
    assert torch.equal(moved[:4], got[:4]) and not torch.equal(moved[4], got[4])


def test_conv_as_linear_refuses_overlapping_or_misshapen_input():
    overlapping = torch.nn.Conv2d(8, 4, 3, stride=1)
    with pytest.raises(ValueError, match="stride == kernel"):
        conv_as_linear(overlapping, torch.zeros(2, 8, 3, 3))
    padded = torch.nn.Conv2d(8, 4, 2, stride=2, padding=1)
    with pytest.raises(ValueError, match="no padding"):
        conv_as_linear(padded, torch.zeros(2, 8, 2, 2))
    merge = torch.nn.Conv2d(8, 4, 2, stride=2)
    with pytest.raises(ValueError, match=r"items must be \[N, 8, 2, 2\]"):
        conv_as_linear(merge, torch.zeros(2, 2, 2, 8))  # channels last: wrong layout


# ---- vision attention: bidirectional within each image ----------------------------------------

def blockwise_reference(q, k, v, lengths, scale):
    outs = [F.scaled_dot_product_attention(a[None], b[None], c[None], scale=scale)[0]
            for a, b, c in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_attention_matches_sdpa_per_image(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch):
    # Small chunks so images span several chunks and chunk edges fall inside images.
    monkeypatch.setattr(cpu_kernels, "QUERY_CHUNK", 48)
    lengths = [100, 7, 130]
    q, k, v = (randn(3, sum(lengths), 128, seed=s) for s in (3, 4, 5))
    scale = 128 ** -0.5
    ref = blockwise_reference(q, k, v, lengths, scale)
    got = block_attention(q.to(dtype), k.to(dtype), v.to(dtype), lengths, scale)
    assert got.dtype == dtype
    if dtype == torch.float32:  # SDPA itself runs there, the very call transformers makes
        assert torch.equal(got, ref)
    else:  # as close as torch's own bf16 SDPA is to fp32 (measured: 0.0039 vs 0.0020)
        own = blockwise_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), lengths, scale)
        assert max_diff(got, ref) <= 3 * max(max_diff(own, ref), 2 ** -8)
    # No attention across images: changing the third image leaves the first two alone.
    k2 = k.clone()
    k2[:, 107:] = 0
    again = block_attention(q.to(dtype), k2.to(dtype), v.to(dtype), lengths, scale)
    assert torch.equal(again[:, :107], got[:, :107]) and not torch.equal(again[:, 107:], got[:, 107:])


# ---- text prefill attention: causal, grouped-query --------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_attention_matches_sdpa(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cpu_kernels, "CAUSAL_CHUNK", 8)  # chunk edges inside the 45 rows
    q = randn(2, 8, 45, 64, seed=6)
    k, v = randn(2, 2, 45, 64, seed=7), randn(2, 2, 45, 64, seed=8)
    scale = 64 ** -0.5
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    got = causal_attention(q.to(dtype), k.to(dtype), v.to(dtype), scale)
    own = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True,
                                         scale=scale, enable_gqa=True)
    if dtype == torch.float32:
        assert torch.equal(got, ref)
    else:
        assert max_diff(got, ref) <= 3 * max(max_diff(own, ref), 2 ** -8)
    # Queries that are the last 10 of 45 positions (a cached prefix) see their own prefix.
    tail = causal_attention(q[:, :, -10:].to(dtype), k.to(dtype), v.to(dtype), scale)
    assert max_diff(tail, ref[:, :, -10:]) <= 3 * max(max_diff(own, ref), 2 ** -8)
    # Causal: the future does not leak into earlier rows.
    k2 = k.clone()
    k2[:, :, 30:] = 5
    moved = causal_attention(q.to(dtype), k2.to(dtype), v.to(dtype), scale)
    assert torch.equal(moved[:, :, :30], got[:, :, :30])


# ---- text decode: one query row against the cache, one-row matmuls -------------------------

@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.02)])
def test_decode_attention_matches_sdpa_under_the_slot_mask(dtype: torch.dtype, tol: float):
    q = randn(2, 8, 1, 64, seed=9)
    k, v = randn(2, 2, 40, 64, seed=10), randn(2, 2, 40, 64, seed=11)
    mask = torch.zeros(2, 1, 1, 40, dtype=torch.bool)
    mask[0, ..., :25] = True  # a row with an unused tail
    mask[1, ..., 5:33] = True  # left padding and a tail
    scale = 64 ** -0.5
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    got = decode_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, scale)
    assert got.dtype == dtype and max_diff(got, ref) <= tol
    # Masked slots weigh exactly 0: whatever they hold changes nothing.
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 25:], v2[1, :, :5] = 100.0, -100.0
    again = decode_attention(q.to(dtype), k2.to(dtype), v2.to(dtype), mask, scale)
    assert torch.equal(again, got)


def test_single_row_matmuls_turn_onednn_off_for_one_bf16_cpu_row_only():
    assert torch.backends.mkldnn.enabled
    with single_row_matmuls(1, torch.bfloat16, CPU):
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled
    for rows, dtype in ((2, torch.bfloat16), (1, torch.float32), (1, torch.float16)):
        with single_row_matmuls(rows, dtype, CPU):
            assert torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError, match="inside"), single_row_matmuls(1, torch.bfloat16, CPU):
        raise RuntimeError("inside")
    assert torch.backends.mkldnn.enabled  # restored on an error too


def test_overlapping_single_row_matmuls_restore_onednn_when_the_last_one_ends():
    # Two decode steps in two threads, ending in the other order than they began: the switch
    # stays off until both are done, then comes back (a save/restore per step would leave it
    # off for good).
    entered, first_left, seen = threading.Event(), threading.Event(), []

    def second() -> None:
        with single_row_matmuls(1, torch.bfloat16, CPU):
            entered.set()
            first_left.wait(10)
            seen.append(torch.backends.mkldnn.enabled)

    thread = threading.Thread(target=second)
    with single_row_matmuls(1, torch.bfloat16, CPU):
        thread.start()
        assert entered.wait(10)
    first_left.set()
    thread.join(10)
    assert seen == [False] and torch.backends.mkldnn.enabled


def test_one_row_bf16_product_without_onednn_is_the_product():
    w, x = randn(3000, 512, seed=12).bfloat16(), randn(1, 512, seed=13).bfloat16()
    exact = x.double() @ w.double().t()
    with single_row_matmuls(1, torch.bfloat16, CPU):
        got = F.linear(x, w)
    # fp32 accumulation and one bf16 rounding: within half a bf16 ulp (2^-9 relative) plus
    # a margin for the fp32 summation error.
    bound = exact.abs() * 2 ** -8 + 1e-3
    assert got.dtype == torch.bfloat16 and bool(((got.double() - exact).abs() <= bound).all())
