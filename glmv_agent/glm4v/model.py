"""The whole GLM-4.1V model: vision tower + text decoder + LM head (spec §3).

Three entry points share one pipeline (embed -> insert vision features -> 3D positions ->
decoder -> lm_head):
- `forward`: full sequence, no cache, logits [B, L, vocab] (transformers parity);
- `prefill`: same, but fills a preallocated `KVCache` and returns last-position logits;
- `decode_step`: one new token per row against the cache; its tensor-only core
  `decode_forward` has static shapes and no host syncs, so it can be compiled / CUDA-graphed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from .config import Glm4vConfig
from .kv_cache import KVCache
from .rope import IMAGE, TEXT, VIDEO, get_rope_index, mrope_cos_sin, token_types
from .text import TextModel
from .vision import VisionTower


class Glm4vBackbone(nn.Module):
    """Holds the two towers under the names the checkpoint uses (`model.visual`, ...)."""

    def __init__(self, config: Glm4vConfig) -> None:
        super().__init__()
        self.visual = VisionTower(config.vision)
        self.language_model = TextModel(config.text)


class Glm4vModel(nn.Module):
    def __init__(self, config: Glm4vConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Glm4vBackbone(config)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight

    # From the embedding: it always holds the compute dtype (lm_head may be quantized).
    @property
    def device(self) -> torch.device:
        return self.model.language_model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.language_model.embed_tokens.weight.dtype

    # ---- public API -------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None,
                video_grid_thw: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, L, vocab] for every position (no cache)."""
        hidden, _ = self._run(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                              video_grid_thw, attention_mask, cache=None)
        return self.lm_head(hidden)

    def new_cache(self, batch_size: int, max_length: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        t = self.config.text
        return KVCache(t.num_layers, batch_size, t.num_kv_heads, t.head_dim, max_length,
                       device=device or self.device, dtype=dtype or self.dtype)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, cache: KVCache,
                pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None,
                video_grid_thw: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                return_all: bool = False) -> torch.Tensor:
        """Run the prompt, fill `cache` from slot 0, return logits of the last position
        [B, vocab] (or of every position with return_all=True). Use left padding."""
        if input_ids.shape[0] != cache.batch_size:
            raise InputError(f"input_ids has batch {input_ids.shape[0]} but the cache was made "
                             f"for batch {cache.batch_size}")
        cache.reset()
        hidden, deltas = self._run(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                                   video_grid_thw, attention_mask, cache=cache)
        cache.rope_deltas.copy_(deltas)
        return self.lm_head(hidden if return_all else hidden[:, -1])

    @torch.no_grad()
    def decode_step(self, token_ids: torch.Tensor, cache: KVCache, *, check_ids: bool = True,
                    forward: Callable[[torch.Tensor, KVCache], torch.Tensor] | None = None,
                    ) -> torch.Tensor:
        """Append one token per row [B, 1]; return next-token logits [B, vocab].

        check_ids=False skips the id range check, which reads the ids on the host (a device
        sync per token): generation passes ids it sampled from this model's own logits.
        `forward` replaces `decode_forward` (e.g. by its compiled version)."""
        if token_ids.dim() != 2 or token_ids.shape != (cache.batch_size, 1):
            raise InputError(f"decode_step expects token_ids of shape [{cache.batch_size}, 1], "
                             f"got {list(token_ids.shape)}")
        if cache.length == 0:
            raise InputError("decode_step needs a cache filled by prefill() first")
        cache.reserve(1)
        token_ids = token_ids.to(self.device)
        if check_ids:
            self._check_ids(token_ids)
        logits = (forward or self.decode_forward)(token_ids, cache)
        cache.commit(1)
        return logits

    @torch.no_grad()
    def decode_forward(self, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The hot step, tensors only: ids [B, 1] on the device -> logits [B, vocab].

        Static shapes and no host syncs (graph-capturable): the slot to write and the rope
        position come from the cache's device tensors, keys/values are written in place and
        attention runs over the whole fixed-size buffer under the valid-slot mask (masked
        slots contribute exactly 0). Call it through `decode_step`, which checks the inputs
        and keeps the host-side length."""
        slot, rope_pos = cache.begin_token()
        embeds = self.model.language_model.embed_tokens(token_ids)
        cos, sin = mrope_cos_sin(rope_pos.view(1, -1, 1).expand(3, -1, 1),
                                 self.model.language_model.inv_freq,
                                 self.config.text.mrope_section, embeds.dtype)
        hidden = self.model.language_model(embeds, cos, sin, cache.key_mask(), cache, slot,
                                           attend_cache=True)
        return self.lm_head(hidden[:, -1])

    # ---- pipeline ---------------------------------------------------------------------

    def _run(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
             image_grid_thw: torch.Tensor | None, pixel_values_videos: torch.Tensor | None,
             video_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor | None,
             cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must be [batch, length], got shape {list(input_ids.shape)}")
        input_ids = input_ids.to(self.device)
        self._check_ids(input_ids)
        valid = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise InputError(f"attention_mask shape {list(attention_mask.shape)} does not match "
                                 f"input_ids {list(input_ids.shape)}")
            valid = attention_mask.to(self.device).bool()
            if valid.all():
                valid = None

        types = self._token_types(input_ids, pixel_values is not None,
                                  pixel_values_videos is not None)
        embeds = self.model.language_model.embed_tokens(input_ids)
        embeds = self._insert(embeds, types, IMAGE, pixel_values, image_grid_thw, "pixel_values",
                              "image_grid_thw")
        if video_grid_thw is not None:
            # Each video row (t, h, w) runs through the tower as t slices of (1, h, w).
            video_grid_thw = video_grid_thw.cpu().long()
            slices = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0)
            slices[:, 0] = 1
        else:
            slices = None
        embeds = self._insert(embeds, types, VIDEO, pixel_values_videos, slices,
                              "pixel_values_videos", "video_grid_thw")

        positions, deltas = get_rope_index(input_ids, self.config, image_grid_thw, video_grid_thw,
                                           valid, types)
        cos, sin = mrope_cos_sin(positions, self.model.language_model.inv_freq,
                                 self.config.text.mrope_section, embeds.dtype)
        mask = None if valid is None else _padded_causal_mask(valid)
        slots = None
        if cache is not None:
            slots = cache.begin_prompt(valid if valid is not None
                                       else torch.ones_like(input_ids, dtype=torch.bool))
        hidden = self.model.language_model(embeds, cos, sin, mask, cache, slots)
        if cache is not None:
            cache.commit(input_ids.shape[1])
        return hidden, deltas

    def _check_ids(self, ids: torch.Tensor) -> None:
        vocab = self.config.text.vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise InputError(f"token ids must be in [0, {vocab}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]; was the prompt encoded with "
                             "this checkpoint's tokenizer?")

    def _token_types(self, input_ids: torch.Tensor, has_images: bool,
                     has_videos: bool) -> torch.Tensor:
        types = token_types(input_ids, self.config)
        # With a single modality every placeholder belongs to it (as in transformers),
        # so prompts without video span markers still work; mixing needs the markers.
        if has_images != has_videos:
            placeholder = types != TEXT
            types[placeholder] = IMAGE if has_images else VIDEO
        return types

    def _insert(self, embeds: torch.Tensor, types: torch.Tensor, kind: int,
                pixels: torch.Tensor | None, grid: torch.Tensor | None, pixels_name: str,
                grid_name: str) -> torch.Tensor:
        """Replace placeholder embeddings of one modality by vision features, in order."""
        where = types == kind
        count = int(where.sum())
        label = "image" if kind == IMAGE else "video"
        if pixels is None:
            if count:
                raise InputError(f"input_ids contain {count} {label} placeholder tokens but "
                                 f"{pixels_name} was not given")
            return embeds
        if grid is None:
            raise InputError(f"{pixels_name} was given without {grid_name}")
        grid = grid.cpu().long()
        merge = self.config.vision.spatial_merge_size
        expected_rows = int(grid.prod(-1).sum())
        if pixels.dim() != 2 or pixels.shape[0] != expected_rows \
                or pixels.shape[1] != self.config.vision.patch_dim:
            raise InputError(f"{pixels_name} has shape {list(pixels.shape)} but {grid_name} "
                             f"implies [{expected_rows}, {self.config.vision.patch_dim}]")
        features = self.model.visual(pixels.to(self.device, self.model.visual.dtype), grid)
        if features.shape[0] != count:
            raise InputError(f"{count} {label} placeholder tokens in input_ids but {grid_name} "
                             f"gives {features.shape[0]} features ({expected_rows} patches / "
                             f"{merge * merge}); the prompt and the pixels do not belong together")
        embeds = embeds.clone()
        embeds[where] = features.to(embeds.dtype)
        return embeds


def _padded_causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, L, L] mask: causal, padding keys hidden. Pad query rows see themselves
    so no row is fully masked (a NaN there would leak through V into real rows)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    mask = causal & valid[:, None, None, :]
    return mask | torch.eye(length, dtype=torch.bool, device=valid.device)
