"""The whole GLM-4.1V model: vision tower + text decoder + LM head (spec §3).

Three entry points share one pipeline (embed -> insert vision features -> 3D positions ->
decoder -> lm_head):
- `forward`: full sequence, no cache, logits [B, L, vocab] (transformers parity);
- `prefill`: same, but fills a preallocated `KVCache` and returns last-position logits;
- `decode_step`: one new token per row against the cache; its tensor-only core
  `decode_forward` has static shapes and no host syncs, so it can be compiled / CUDA-graphed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError
from .caches import (EngineCaches, PrefillStats, PrefixCache, PrefixEntry, PrefixMatch, Span,
                     VisionCache, image_key, placeholder_runs, prefix_key)
from .config import Glm4vConfig
from .cpu_kernels import single_row_matmuls
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
        # Vision-encoder and prefix KV caches used by `prefill` (glm4v/caches.py); the engine
        # sets its own before each generation (several engines may share one model).
        # None = recompute everything (`forward` never uses them).
        self.caches: EngineCaches | None = None

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
        [B, vocab] (or of every position with return_all=True). Use left padding.

        With `self.caches` set, images already encoded come from the vision cache, and a
        batch-1 prompt (return_all=False) reuses the longest stored prefix's keys/values
        and runs only the rest; `cache.prefill_stats` says what was reused."""
        if input_ids.shape[0] != cache.batch_size:
            raise InputError(f"input_ids has batch {input_ids.shape[0]} but the cache was made "
                             f"for batch {cache.batch_size}")
        cache.reset()
        if (not return_all and input_ids.shape[0] > 1 and pixel_values_videos is None
                and self.caches is not None and self.caches.prefix.enabled):
            return self._prefill_rows(input_ids, cache, pixel_values, image_grid_thw,
                                      attention_mask)
        hidden, deltas = self._run(input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                                   video_grid_thw, attention_mask, cache=cache,
                                   reuse_prefix=not return_all)
        cache.rope_deltas.copy_(deltas)
        if return_all:
            return self.lm_head(hidden)
        last = hidden[:, -1]
        # One row per sequence: at batch 1 the head is the decode step's matrix-vector product.
        with single_row_matmuls(last.shape[0], self.dtype, self.device):
            return self.lm_head(last)

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
        # Batch 1 on CPU: the one-row bf16 products on ATen's matrix-vector kernel (twice
        # oneDNN's rate there, see cpu_kernels); compiled steps call extern matmuls, the same.
        with single_row_matmuls(token_ids.shape[0], self.dtype, self.device):
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
                                           attend_cache=True, decoding=True)
        return self.lm_head(hidden[:, -1])

    # ---- pipeline ---------------------------------------------------------------------

    def _run(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
             image_grid_thw: torch.Tensor | None, pixel_values_videos: torch.Tensor | None,
             video_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor | None,
             cache: KVCache | None, reuse_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
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
        if video_grid_thw is not None:
            # Each video row (t, h, w) runs through the tower as t slices of (1, h, w).
            video_grid_thw = video_grid_thw.cpu().long()
            slices = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0)
            slices[:, 0] = 1
        else:
            slices = None
        batch, length = input_ids.shape
        stats = PrefillStats.for_batch(batch, length)
        caches = self.caches if cache is not None else None  # only prefill reuses work
        if caches is not None and not (caches.vision.enabled or caches.prefix.enabled):
            caches = None  # both off: no hashing either
        keys = {IMAGE: self._image_keys(caches, pixel_values, image_grid_thw),
                VIDEO: self._image_keys(caches, pixel_values_videos, slices)}
        # Each row's placeholder runs, found once: spans, the reused images and the counts
        # below all read them.
        runs = None
        if caches is not None:
            real = types if valid is None else types.masked_fill(~valid, TEXT)  # padding is text
            runs = [placeholder_runs(row) for row in real]
        spans = self._spans(runs, keys) if runs is not None else None
        vision = caches.vision if caches is not None else None

        # The longest stored prefix (batch 1, no padding); slots [0, start) are reused.
        match: PrefixMatch | None = None
        prefix_cache = None
        if (caches is not None and cache is not None and spans is not None and reuse_prefix
                and batch == 1 and valid is None and caches.prefix.enabled):
            prefix_cache, row_spans = caches.prefix, spans[0]
            match = prefix_cache.lookup(input_ids[0].cpu(), row_spans, length - 1)
            if match is not None and (match.entry.k.dtype != cache.dtype
                                      or match.entry.k.device != cache.device):
                match = None
        start = match.length if match is not None else 0
        skip = {IMAGE: 0, VIDEO: 0}  # whole images inside the reused prefix, per modality
        if match is not None and runs is not None:
            for _, end, kind in runs[0]:
                if end <= start:  # the reuse never ends inside an image
                    skip[kind] += 1

        embeds = self.model.language_model.embed_tokens(input_ids[:, start:])
        hits: dict[int, list[bool]] = {}
        embeds, hits[IMAGE] = self._insert(embeds, types[:, start:], IMAGE, pixel_values,
                                           image_grid_thw, "pixel_values", "image_grid_thw",
                                           keys[IMAGE], skip[IMAGE], stats, vision)
        embeds, hits[VIDEO] = self._insert(embeds, types[:, start:], VIDEO, pixel_values_videos,
                                           slices, "pixel_values_videos", "video_grid_thw",
                                           keys[VIDEO], skip[VIDEO], stats, vision)
        if runs is not None and spans is not None:
            self._count_reuse(stats, runs, start, skip, hits)

        # Positions of the whole prompt, as a cold run computes them; the reused part's
        # keys were stored with exactly these (they depend on the prefix only).
        positions, deltas = get_rope_index(input_ids, self.config, image_grid_thw, video_grid_thw,
                                           valid, types)
        cos, sin = mrope_cos_sin(positions[:, :, start:], self.model.language_model.inv_freq,
                                 self.config.text.mrope_section, embeds.dtype)
        mask = None if valid is None else _padded_causal_mask(valid)
        slots = None
        attend_cache = False
        if cache is not None:
            slots = cache.begin_prompt(valid if valid is not None
                                       else torch.ones_like(input_ids, dtype=torch.bool))[start:]
            cache.prefill_stats = stats
        if match is not None:
            assert cache is not None
            cache.k[:, 0, :, :start].copy_(match.entry.k[:, :, :start])
            cache.v[:, 0, :, :start].copy_(match.entry.v[:, :, :start])
            # The new tokens see the reused slots and each other causally; the keys are the
            # prompt's `length` slots only (attending to the buffer's unused tail under the
            # mask cost ~2x: 1.16 s vs 0.59 s per layer in bf16 at 937 queries, 5632 slots).
            key_slots = torch.arange(length, device=self.device)
            query_slots = torch.arange(start, length, device=self.device)
            mask = (key_slots[None, :] <= query_slots[:, None])[None, None]
            attend_cache = True
        hidden = self.model.language_model(embeds, cos, sin, mask, cache, slots, attend_cache)
        if cache is not None:
            cache.commit(input_ids.shape[1])
        if prefix_cache is not None:
            assert cache is not None
            ids = input_ids[0].cpu()
            self._store_prefix(prefix_cache, ids, row_spans, cache, match)
            stats.prompts[0] = (ids, tuple(row_spans))  # its answer may be stored after it
        return hidden, deltas

    # ---- reuse (glm4v/caches.py) --------------------------------------------------------

    def _prefill_rows(self, input_ids: torch.Tensor, cache: KVCache,
                      pixel_values: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                      attention_mask: torch.Tensor | None) -> torch.Tensor:
        """A batch with the prefix cache on: each row is prefilled alone (batch 1, reusing
        its own longest stored prefix), and its keys/values go to its slots of the
        left-padded batch cache. Decoding then runs the batch together as usual."""
        batch, length = input_ids.shape
        input_ids = input_ids.to(self.device)
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InputError(f"attention_mask shape {list(attention_mask.shape)} does not match "
                             f"input_ids {list(input_ids.shape)}")
        valid = (attention_mask.to(self.device).bool() if attention_mask is not None
                 else torch.ones_like(input_ids, dtype=torch.bool))
        types = self._token_types(input_ids, pixel_values is not None, False)
        stats = PrefillStats.for_batch(batch, length)
        logits = []
        image, pixel = 0, 0  # the next row's first image and pixel row (images go in order)
        for b in range(batch):
            ids = input_ids[b:b + 1, valid[b]]
            count = sum(kind == IMAGE for _, _, kind in placeholder_runs(types[b, valid[b]]))
            grid = pixels = None
            if count and image_grid_thw is not None and pixel_values is not None:
                grid = image_grid_thw[image:image + count]
                rows = int(grid.cpu().long().prod(-1).sum())
                pixels = pixel_values[pixel:pixel + rows]
                image, pixel = image + count, pixel + rows
            row_cache = self.new_cache(1, ids.shape[1], device=cache.device, dtype=cache.dtype)
            logits.append(self.prefill(ids, row_cache, pixels, grid))
            slots = valid[b].nonzero().squeeze(-1)
            cache.k[:, b].index_copy_(2, slots, row_cache.k[:, 0])
            cache.v[:, b].index_copy_(2, slots, row_cache.v[:, 0])
            cache.rope_deltas[b] = row_cache.rope_deltas[0]
            row = row_cache.prefill_stats
            stats.cached_tokens[b], stats.cached_images[b] = row.cached_tokens[0], row.cached_images[0]
            stats.prompts[b] = row.prompts[0]
            stats.vision_seconds += row.vision_seconds
        if image_grid_thw is not None and image != image_grid_thw.shape[0]:
            raise InputError(f"image_grid_thw has {image_grid_thw.shape[0]} images but the "
                             f"prompts hold {image} runs of image placeholders")
        cache.begin_prompt(valid)
        cache.commit(length)
        cache.prefill_stats = stats
        return torch.cat(logits)

    def _image_keys(self, caches: EngineCaches | None, pixels: torch.Tensor | None,
                    grid: torch.Tensor | None) -> list[bytes] | None:
        """Content key of every grid row's pixels (None without caches or pixels)."""
        if caches is None or pixels is None or grid is None:
            return None
        grid = grid.cpu().long()
        sizes = grid.prod(-1).tolist()
        if pixels.dim() != 2 or pixels.shape[0] != sum(sizes):
            return None  # _insert reports the mismatch
        return [image_key(rows, row) for rows, row in zip(pixels.split(sizes), grid.tolist())]

    def _spans(self, runs: list[list[tuple[int, int, int]]],
               keys: dict[int, list[bytes] | None]) -> list[list[Span]] | None:
        """Per row, each placeholder run with the key of the image filling it (images are
        consumed in order across rows, as get_rope_index does); None on a count mismatch
        (the prompt is then rejected by _insert / get_rope_index)."""
        cursor = {IMAGE: 0, VIDEO: 0}
        rows: list[list[Span]] = []
        for row_runs in runs:
            spans = []
            for start, end, kind in row_runs:
                kind_keys = keys[kind]
                if kind_keys is None or cursor[kind] >= len(kind_keys):
                    return None
                spans.append(Span(start, end, kind_keys[cursor[kind]]))
                cursor[kind] += 1
            rows.append(spans)
        return rows

    def _count_reuse(self, stats: PrefillStats, runs: list[list[tuple[int, int, int]]],
                     start: int, skip: dict[int, int], hits: dict[int, list[bool]]) -> None:
        """Per row: reused prompt tokens, and images not encoded (in the reused prefix or
        found in the vision cache)."""
        stats.cached_tokens[0] += start
        index = {IMAGE: 0, VIDEO: 0}  # image number across the batch, per modality
        for b, row_runs in enumerate(runs):
            for _, _, kind in row_runs:
                i = index[kind]
                index[kind] += 1
                if i < skip[kind] or hits[kind][i - skip[kind]]:
                    stats.cached_images[b] += 1

    def _store_prefix(self, prefix_cache: PrefixCache, ids: torch.Tensor, spans: list[Span],
                      cache: KVCache, match: PrefixMatch | None) -> None:
        """Keep this prompt's keys/values for later prompts sharing its prefix."""
        if match is not None and match.entry.holds(ids, spans):
            return  # the same prompt again (or one that went on from it): already stored
        length = ids.shape[0]
        entry = PrefixEntry(ids=ids.clone(), spans=tuple(spans),
                            k=cache.k[:, 0, :, :length].clone(), v=cache.v[:, 0, :, :length].clone())
        extended = match.entry.key() if match is not None and match.length == match.entry.length else None
        prefix_cache.store(entry, replaces=extended)

    def store_answers(self, cache: KVCache, answers: Sequence[Sequence[int]]) -> None:
        """After generation: keep each row's prompt *and* the answer tokens whose keys/values
        `cache` holds (every one but the last, which was never fed back), so that a next
        prompt repeating the answer verbatim -- a multi-turn chat whose history carries the
        model's own reply -- reuses it as well. The decoded keys sit at the positions a cold
        run gives those tokens (text after the prompt); their values differ from prefilled
        ones by float rounding only (another kernel order; caches.py). Rows whose prompt the
        prefix cache did not see (caches off, videos) are skipped."""
        stats = cache.prefill_stats
        if not isinstance(stats, PrefillStats) or self.caches is None or not self.caches.prefix.enabled:
            return
        decoded = cache.length - stats.prompt_slots  # answer slots written, shared by the rows
        for row, (prompt, answer) in enumerate(zip(stats.prompts, answers)):
            count = min(len(answer), decoded)
            if prompt is None or count <= 0:
                continue
            ids, spans = prompt
            full = torch.cat([ids, torch.tensor(answer[:count], dtype=ids.dtype)])
            if self.caches.prefix.holds(full, spans):
                continue  # the same prompt answered so before (at least this far)
            # The row's real slots in order: its prompt (after any left padding), then answers.
            slots = cache.valid[row, :cache.length].nonzero().squeeze(-1)[:full.shape[0]]
            entry = PrefixEntry(ids=full, spans=spans, k=cache.k[:, row].index_select(2, slots),
                                v=cache.v[:, row].index_select(2, slots))
            self.caches.prefix.store(entry, replaces=prefix_key(ids, spans))

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
                grid_name: str, keys: list[bytes] | None = None, skip: int = 0,
                stats: PrefillStats | None = None, vision: VisionCache | None = None,
                ) -> tuple[torch.Tensor, list[bool]]:
        """Replace placeholder embeddings of one modality by vision features, in order.
        The first `skip` images are not in `types` (a reused prefix holds them). Returns the
        embeddings and, per remaining image, whether it came from the vision cache."""
        where = types == kind
        count = int(where.sum())
        label = "image" if kind == IMAGE else "video"
        if pixels is None:
            if count:
                raise InputError(f"input_ids contain {count} {label} placeholder tokens but "
                                 f"{pixels_name} was not given")
            return embeds, []
        if grid is None:
            raise InputError(f"{pixels_name} was given without {grid_name}")
        grid = grid.cpu().long()
        merge = self.config.vision.spatial_merge_size
        expected_rows = int(grid.prod(-1).sum())
        if pixels.dim() != 2 or pixels.shape[0] != expected_rows \
                or pixels.shape[1] != self.config.vision.patch_dim:
            raise InputError(f"{pixels_name} has shape {list(pixels.shape)} but {grid_name} "
                             f"implies [{expected_rows}, {self.config.vision.patch_dim}]")
        if skip:
            pixels = pixels[int(grid[:skip].prod(-1).sum()):]
            grid, keys = grid[skip:], (keys[skip:] if keys is not None else None)
            if not grid.shape[0]:
                return embeds, []
        features, hits = self._encode(pixels, grid, keys, stats, vision)
        if features.shape[0] != count:
            raise InputError(f"{count} {label} placeholder tokens in input_ids but {grid_name} "
                             f"gives {features.shape[0]} features ({expected_rows} patches / "
                             f"{merge * merge}); the prompt and the pixels do not belong together")
        embeds = embeds.clone()
        embeds[where] = features.to(embeds.dtype)
        return embeds, hits

    def _encode(self, pixels: torch.Tensor, grid: torch.Tensor, keys: list[bytes] | None,
                stats: PrefillStats | None, cached: VisionCache | None,
                ) -> tuple[torch.Tensor, list[bool]]:
        """Vision features of every grid row; rows whose key is in the vision cache are
        taken from it, the others run through the tower together (and are stored)."""
        visual = self.model.visual
        parts: list[torch.Tensor | None] = [None] * len(grid)
        if cached is not None and keys is not None:
            parts = [cached.get(key) for key in keys]
        hits = [part is not None for part in parts]
        missing = [i for i, hit in enumerate(hits) if not hit]
        if missing:
            sizes = grid.prod(-1).tolist()
            todo = pixels if len(missing) == len(parts) else torch.cat(
                [rows for i, rows in enumerate(pixels.split(sizes)) if not hits[i]])
            t0 = time.perf_counter()
            out = visual(todo.to(self.device, visual.dtype), grid[missing])
            if stats is not None:
                if out.device.type == "cuda":
                    torch.cuda.synchronize(out.device)
                stats.vision_seconds += time.perf_counter() - t0
            if cached is None or keys is None:
                return out, hits
            merge2 = self.config.vision.spatial_merge_size ** 2
            for i, features in zip(missing, out.split([sizes[i] // merge2 for i in missing])):
                parts[i] = features
                cached.put(keys[i], features)
        return torch.cat(parts), hits  # type: ignore[arg-type]  # every part is filled now


def _padded_causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, L, L] mask: causal, padding keys hidden. Pad query rows see themselves
    so no row is fully masked (a NaN there would leak through V into real rows)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    mask = causal & valid[:, None, None, :]
    return mask | torch.eye(length, dtype=torch.bool, device=valid.device)
