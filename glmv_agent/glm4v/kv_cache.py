"""Preallocated key/value cache for the text decoder (gpt-fast style).

One K and one V buffer of shape [layers, B, kv_heads, max_length, head_dim], written in place
(slice assignment, never torch.cat). The cache also carries what decoding needs besides K/V:
how many slots are filled, which slots are real tokens (left padding), and the mRoPE deltas.
"""

from __future__ import annotations

import torch

from ..errors import InputError


class KVCache:
    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_length: int, *, device: torch.device | str, dtype: torch.dtype) -> None:
        if batch_size < 1 or max_length < 1:
            raise InputError(f"KV cache needs batch_size >= 1 and max_length >= 1, got "
                             f"batch_size={batch_size}, max_length={max_length}")
        shape = (num_layers, batch_size, num_kv_heads, max_length, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.batch_size = batch_size
        # Slots holding a real token (False for left padding and unused tail).
        self.valid = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)
        self.rope_deltas = torch.zeros(batch_size, dtype=torch.long, device=device)
        # Number of real tokens per row so far; the next token's rope index (spec §7.4).
        self.token_counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.length = 0  # filled slots (same for every row)
        self.has_padding = False
        self._pending = 0  # slots being written by the current forward pass

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def reset(self) -> None:
        self.length = 0
        self._pending = 0
        self.valid.zero_()
        self.rope_deltas.zero_()
        self.token_counts.zero_()
        self.has_padding = False

    def begin(self, num_new: int, valid: torch.Tensor) -> None:
        """Reserve num_new slots for this step; valid [B, num_new] marks real tokens."""
        if self.length + num_new > self.max_length:
            raise InputError(f"KV cache is full: {self.length} + {num_new} tokens exceed "
                             f"max_length={self.max_length}; create the cache with a larger "
                             "max_length (prompt length + max new tokens)")
        self.valid[:, self.length:self.length + num_new] = valid
        self.token_counts += valid.sum(-1)
        self.has_padding = self.has_padding or not bool(valid.all())
        self._pending = num_new

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k/v [B, kvh, n, hd] for `layer`; return views over all filled slots."""
        start, end = self.length, self.length + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def commit(self) -> None:
        """Finish the step begun with begin(): the reserved slots become part of the prefix."""
        self.length += self._pending
        self._pending = 0

    def key_mask(self, num_new: int) -> torch.Tensor:
        """Boolean [B, 1, 1, length + num_new] mask of attendable slots (decode with padding)."""
        return self.valid[:, None, None, :self.length + num_new]
