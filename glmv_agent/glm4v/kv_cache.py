"""Preallocated key/value cache for the text decoder (gpt-fast style).

One K and one V buffer of shape [layers, B, kv_heads, max_length, head_dim], written in place
(`index_copy_` at the given slots, never torch.cat). The cache also carries what decoding needs
besides K/V, all as tensors of fixed shape so a decode step is graph-capturable:
which slots hold real tokens (`valid`, False for left padding and the unused tail), the next
free slot (`next_pos`), the real-token count per row and the mRoPE deltas.

Host-side bookkeeping (`length`, the overflow check) lives in plain Python ints, updated by
the eager code around a step, never inside it.
"""

from __future__ import annotations

from typing import Any

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
        # The slot the next decoded token goes to ([1], on the device: no host->device copy
        # per token); equals `length` between steps.
        self.next_pos = torch.zeros(1, dtype=torch.long, device=device)
        self.length = 0  # filled slots (same for every row), host-side mirror of next_pos
        # What the last prefill reused (caches.PrefillStats), set by the model's prefill.
        self.prefill_stats: Any = None

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every buffer a decode step reads or writes in place (for CUDA-graph static marking)."""
        return (self.k, self.v, self.valid, self.rope_deltas, self.token_counts, self.next_pos)

    def reset(self) -> None:
        self.length = 0
        self.valid.zero_()
        self.rope_deltas.zero_()
        self.token_counts.zero_()
        self.next_pos.zero_()

    def reserve(self, num_new: int) -> None:
        """Check that num_new more slots fit (host-side, before a step runs)."""
        if self.length + num_new > self.max_length:
            raise InputError(f"KV cache is full: {self.length} + {num_new} tokens exceed "
                             f"max_length={self.max_length}; create the cache with a larger "
                             "max_length (prompt length + max new tokens)")

    def begin_prompt(self, valid: torch.Tensor) -> torch.Tensor:
        """Start an empty cache with a prompt; valid [B, L] marks real tokens. Returns the
        slots the prompt's keys go to ([L])."""
        length = valid.shape[1]
        self.reserve(length)
        self.valid[:, :length] = valid
        self.token_counts += valid.sum(-1)
        self.next_pos.fill_(length)
        return torch.arange(length, device=self.device)

    def begin_token(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor-only half of a one-token decode step (no host sync, fixed shapes): take the
        next slot for every row and mark it valid. Returns (slot [1], the new token's rope
        position [B] = real tokens before it + the row's mRoPE delta, spec §7.4)."""
        slot = self.next_pos.clone()
        rope_pos = self.token_counts + self.rope_deltas
        self.valid.index_fill_(1, slot, True)
        self.token_counts += 1
        self.next_pos += 1
        return slot, rope_pos

    def update(self, layer: int, input_pos: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, kvh, n, hd] for `layer` at slots input_pos [n]; return the whole
        buffers [B, kvh, max_length, hd] (attend to them with `key_mask`)."""
        # One index_put_ on the whole buffer (layer and slots as index tensors), not a write
        # into the view self.k[layer]: under torch.compile a view's in-place write copies the
        # layer's entire buffer several times per step (functionalization), this writes n slots.
        layers = torch.full_like(input_pos, layer)
        self.k[layers, :, :, input_pos] = k.permute(2, 0, 1, 3)
        self.v[layers, :, :, input_pos] = v.permute(2, 0, 1, 3)
        return self.k[layer], self.v[layer]

    def commit(self, num_new: int) -> None:
        """Host-side: num_new slots were written by the step that just ran."""
        self.length += num_new

    def key_mask(self) -> torch.Tensor:
        """Boolean [B, 1, 1, max_length] mask of attendable slots for a one-token query:
        real tokens written so far (unused slots are still False), the same shape every step."""
        return self.valid[:, None, None, :]
