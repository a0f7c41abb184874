"""Text-side multimodal RoPE: 3D position ids (`get_rope_index`) and the rotation itself.

Spec §7. Positions have three axes (t, h, w); frequency index i of the rotary half uses the
axis chosen by `mrope_section`. The rotation pairs adjacent dims (2i, 2i+1) of the first
`rotary_dim` dims only; the rest pass through.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .config import Glm4vConfig, TextConfig

TEXT, IMAGE, VIDEO = 0, 1, 2


def text_inv_freq(config: TextConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies [rotary_dim/2], always fp32 (pitfall 2)."""
    dim = config.rotary_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
    return 1.0 / (config.rope_theta ** exponents)


def mrope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, section: tuple[int, ...],
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, L, rotary_dim] for 3D positions [3, B, L]; computed in fp32, cast to dtype."""
    freqs = positions[..., None].float() * inv_freq.float()  # [3, B, L, rd/2]
    # Frequency index i takes its angle from the axis that owns it: consecutive runs of
    # `section` sizes (plain slices, so no index tensor is made per call: decode stays
    # free of host->device copies).
    runs, start = [], 0
    for axis, size in enumerate(section):
        runs.append(freqs[axis, ..., start:start + size])
        start += size
    angles = torch.cat(runs, dim=-1)
    angles = angles.repeat_interleave(2, dim=-1)  # pair (2i, 2i+1) shares angle i
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_text_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the first cos.shape[-1] dims of x [B, H, L, D]."""
    rd = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rot, rest = x[..., :rd], x[..., rd:]
    pairs = rot.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((rot * cos + rotated * sin, rest), dim=-1)


def token_types(input_ids: torch.Tensor, config: Glm4vConfig) -> torch.Tensor:
    """0 text / 1 image / 2 video for every token of input_ids [B, L].

    Images and video frames share the `<|image|>` id; a placeholder between
    `<|begin_of_video|>` and `<|end_of_video|>` belongs to a video.
    """
    starts = (input_ids == config.video_start_token_id).long().cumsum(-1)
    ends = (input_ids == config.video_end_token_id).long().cumsum(-1)
    inside_video = starts > ends
    placeholder = input_ids == config.image_token_id
    types = torch.zeros_like(input_ids, dtype=torch.long)
    types[placeholder & ~inside_video] = IMAGE
    types[placeholder & inside_video] = VIDEO
    return types


def get_rope_index(input_ids: torch.Tensor, config: Glm4vConfig,
                   image_grid_thw: torch.Tensor | None = None,
                   video_grid_thw: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None,
                   types: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """3D positions [3, B, L] (pad slots 0) and rope deltas [B] (spec §7.3).

    Grids are consumed in order across the batch: images from image_grid_thw, video
    frame-slices from video_grid_thw (each (t, h, w) row split into t rows of (1, h, w)).
    """
    merge = config.vision.spatial_merge_size
    if types is None:
        types = token_types(input_ids, config)
    batch, length = input_ids.shape
    grids = {IMAGE: _grid_rows(image_grid_thw, split_time=False),
             VIDEO: _grid_rows(video_grid_thw, split_time=True)}
    cursor = {IMAGE: 0, VIDEO: 0}
    positions = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, dtype=torch.long)
    mask = (attention_mask.bool().cpu() if attention_mask is not None
            else torch.ones(batch, length, dtype=torch.bool))
    types_cpu = types.cpu()
    for b in range(batch):
        row_types = types_cpu[b][mask[b]].tolist()
        pieces: list[torch.Tensor] = []
        current = 0
        start = 0
        while start < len(row_types):
            kind = row_types[start]
            end = start
            while end < len(row_types) and row_types[end] == kind:
                end += 1
            if kind == TEXT:
                n = end - start
                pieces.append(torch.arange(current, current + n).expand(3, n))
                current += n
            else:
                rows = grids[kind]
                if cursor[kind] >= len(rows):
                    name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
                    raise InputError(f"more {('image', 'video')[kind - 1]} placeholder runs in "
                                     f"input_ids than rows in {name}")
                _, h, w = rows[cursor[kind]]
                cursor[kind] += 1
                gh, gw = h // merge, w // merge
                if gh * gw != end - start:
                    raise InputError(f"a run of {end - start} <|image|> placeholders does not match "
                                     f"its grid (1, {h}, {w}) = {gh * gw} tokens; expand the prompt "
                                     "with the processor that produced the grid")
                hh = torch.arange(gh).repeat_interleave(gw)
                ww = torch.arange(gw).repeat(gh)
                pieces.append(torch.stack((torch.zeros_like(hh), hh, ww)) + current)
                current += max(gh, gw)
            start = end
        row = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        positions[:, b, mask[b]] = row
        deltas[b] = (int(row.max()) + 1 if row.numel() else 0) - len(row_types)
    return positions.to(input_ids.device), deltas.to(input_ids.device)


def _grid_rows(grid_thw: torch.Tensor | None, *, split_time: bool) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    rows: list[tuple[int, int, int]] = []
    for t, h, w in grid_thw.tolist():
        rows.extend([(1, h, w)] * t if split_time else [(t, h, w)])
    return rows
