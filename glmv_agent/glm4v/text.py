"""GLM-4 text decoder (spec §6): sandwich-norm blocks, GQA attention, partial mRoPE.

Module and parameter names mirror the checkpoint keys under `model.language_model.`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig
from .cpu_kernels import continuation_attention, decode_attention
from .kv_cache import KVCache
from .rope import apply_text_rope, text_inv_freq


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)  # cast before the weight multiply (pitfall 4)


class TextAttention(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        # q/k/v always carry a bias in GLM-4.1V, o_proj never does.
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None = None, layer: int = 0,
                input_pos: torch.Tensor | None = None, attend_cache: bool = False,
                decoding: bool = False) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_text_rope(q, cos, sin)
        k = apply_text_rope(k, cos, sin)
        causal = mask is None and length > 1
        if cache is not None:
            assert input_pos is not None, "a cached forward needs the slots (input_pos) to write"
            cached_k, cached_v = cache.update(layer, input_pos, k, v)
            if attend_cache:  # decode: the whole fixed-size buffer, unused slots masked out
                k, v = cached_k, cached_v
                if not decoding and mask is not None:  # a prompt's rest after a reused prefix:
                    k, v = k[:, :, :mask.shape[-1]], v[:, :, :mask.shape[-1]]  # its slots only
            # else a prompt into an empty cache: its own keys are exactly what the first slots
            # now hold, and attending to them keeps the uncached forward's kernels (parity).
        if decoding:  # one token per row against the whole buffer, under the slot mask
            assert mask is not None and length == 1, "decoding is one token per row, masked"
            out = decode_attention(q, k, v, mask, self.head_dim ** -0.5)
        elif attend_cache and mask is not None:  # a prompt's rest after a reused prefix
            out = continuation_attention(q, k, v, mask, self.head_dim ** -0.5)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                 scale=self.head_dim ** -0.5, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class TextMLP(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        # silu(gate) * up written into silu's output (the same values, one buffer fewer), and
        # the fused [rows, 2 x intermediate] product freed before down_proj runs.
        hidden = F.silu(gate).mul_(up)
        del gate, up
        return self.down_proj(hidden)


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.self_attn = TextAttention(config)
        self.post_self_attn_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.mlp = TextMLP(config)
        self.post_mlp_layernorm = RMSNorm(config.hidden_size, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None, layer: int,
                input_pos: torch.Tensor | None = None, attend_cache: bool = False,
                decoding: bool = False) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, input_pos,
                           attend_cache, decoding)
        x = x + self.post_self_attn_layernorm(h)
        h = self.mlp(self.post_attention_layernorm(x))
        return x + self.post_mlp_layernorm(h)


class TextModel(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.register_buffer("inv_freq", text_inv_freq(config), persistent=False)

    def forward(self, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None = None,
                input_pos: torch.Tensor | None = None, attend_cache: bool = False,
                decoding: bool = False) -> torch.Tensor:
        """With a cache, this step's keys/values are written at slots input_pos [L]. A prompt
        (attend_cache=False) attends causally to itself; with attend_cache=True the queries
        attend to the cache's first S slots under `mask` [B, 1, L, S] (S = max_length when
        decoding, the whole buffer; the prompt's length after a reused prefix). decoding=True (one
        token per row, attend_cache too) uses `decode_attention` instead of SDPA."""
        x = embeds
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, index, input_pos, attend_cache, decoding)
        return self.norm(x)
