"""GLM-4.1V vision tower (spec §4): patch embed, 2D RoPE blocks, 2x2 merge, merger MLP.

Input rows are patches already in 2x2 merge-block order (the processor's patchify);
output is one row per LLM `<|image|>` token. Names mirror the keys under `model.visual.`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig
from .text import RMSNorm


def patch_coordinates(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(h, w) patch coordinates [N, 2] in pixel_values row order (merge-block major)."""
    coords = []
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(block).transpose(1, 2).flatten()
        ww = ww.reshape(block).transpose(1, 2).flatten()
        coords.append(torch.stack((hh, ww), dim=-1).repeat(t, 1))
    return torch.cat(coords)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# Both strided convolutions of the tower (patch embedding, 2x2 merge) see one tiny "image" per
# patch / merge block: output 1x1, batch N. oneDNN then runs one M=1 micro-kernel per item
# (~10 GFLOP/s). Laying the N items side by side as ONE wide image (batch 1, width N*kernel)
# gives the same convolution with M=N: 4-8x faster, and -- measured on this CPU, every N from
# 4 to 9000 -- bit-identical to the per-item call transformers makes, because oneDNN keeps the
# same kernel and the same per-output reduction order. That holds only where we checked it:
# CPU; patch embed in fp32 at any width, and both convs in bf16 when the channel counts are
# multiples of 256 (the real widths; tiny widths pick other kernels, not always identical);
# fp32 merge conv never. Elsewhere the plain call is kept (tests/test_glm4v_model.py checks).
# Another CPU may pick other oneDNN kernels, so the first use of each conv shape also probes
# it: the wide form is used only if it reproduces the plain call exactly on this machine.
_WIDE_CHANNELS = 256
_PROBE_SIZES = (7, 64)
_probed: dict[tuple[str, tuple[int, ...], torch.dtype], bool] = {}


def _exact_on_this_cpu(conv: nn.Conv3d | nn.Conv2d, item_shape: tuple[int, ...],
                       wide: Callable[[Any, torch.Tensor], torch.Tensor],
                       plain: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    key = (type(conv).__name__, tuple(conv.weight.shape), conv.weight.dtype)
    if key not in _probed:
        generator = torch.Generator().manual_seed(0)
        same = True
        with torch.inference_mode():
            for n in _PROBE_SIZES:
                items = torch.randn((n, *item_shape), generator=generator).to(conv.weight.dtype)
                same = same and torch.equal(wide(conv, items), plain(items))
        _probed[key] = same
    return _probed[key]


def wide_patch_conv_ok(conv: nn.Conv3d) -> bool:
    """Whether the patch-embedding Conv3d may run as one wide image (exact here)."""
    weight = conv.weight
    if weight.device.type != "cpu":
        return False
    if not (weight.dtype == torch.float32 or (
            weight.dtype == torch.bfloat16 and weight.shape[0] % _WIDE_CHANNELS == 0)):
        return False
    return _exact_on_this_cpu(conv, tuple(weight.shape[1:]), wide_patch_conv,
                              lambda items: conv(items).view(items.shape[0], -1))


def wide_merge_conv_ok(conv: nn.Conv2d) -> bool:
    """Whether the 2x2 merge Conv2d may run as one wide image (exact here)."""
    weight = conv.weight
    if not (weight.device.type == "cpu" and weight.dtype == torch.bfloat16
            and weight.shape[0] % _WIDE_CHANNELS == 0 and weight.shape[1] % _WIDE_CHANNELS == 0):
        return False
    m, c = weight.shape[2], weight.shape[1]
    return _exact_on_this_cpu(conv, (m, m, c), wide_merge_conv,
                              lambda items: conv(items.permute(0, 3, 1, 2)).view(items.shape[0], -1))


def wide_patch_conv(conv: nn.Conv3d, patches: torch.Tensor) -> torch.Tensor:
    """patches [N, C, T, P, P] -> conv(patches) as [N, out], computed on one [1, C, T, P, N*P] image."""
    n, c, t, p, _ = patches.shape
    wide = patches.permute(1, 2, 3, 0, 4).reshape(1, c, t, p, n * p)
    return conv(wide).view(-1, n).t().contiguous()


def wide_merge_conv(conv: nn.Conv2d, blocks: torch.Tensor) -> torch.Tensor:
    """blocks [B, m, m, C] (channels last) -> conv over each m x m block as [B, out],
    computed on one [1, C, m, B*m] image."""
    b, m, _, c = blocks.shape
    wide = blocks.permute(3, 1, 0, 2).reshape(1, c, m, b * m)
    return conv(wide).view(-1, b).t().contiguous()


class PatchEmbed(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel, stride=kernel)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = pixels.view(-1, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size)
        # conv3d keeps the bias fused (pitfall 1); inputs are cast to the weight dtype first.
        x = x.to(self.proj.weight.dtype)
        if wide_patch_conv_ok(self.proj):
            return wide_patch_conv(self.proj, x)
        return self.proj(x).view(-1, c.hidden_size)


class PositionEmbedding(nn.Module):
    """Learned square position table, bicubically resampled to each image's patch grid."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.side = config.image_size // config.patch_size
        self.position_embedding = nn.Embedding(self.side * self.side, config.hidden_size)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """coords [N, 2] patch (h, w); sizes [N, 2] that patch's image grid (h, w)."""
        weight = self.position_embedding.weight
        table = weight.view(self.side, self.side, -1).permute(2, 0, 1).unsqueeze(0).float()
        coords = coords.to(weight.device, torch.float32)
        sizes = sizes.to(weight.device, torch.float32)
        norm = (coords + 0.5) / sizes * 2 - 1  # [N, (h, w)]
        grid = norm.flip(-1).view(1, -1, 1, 2)  # grid_sample wants (x=w, y=h)
        sampled = F.grid_sample(table, grid, mode="bicubic", align_corners=False,
                                padding_mode="border")
        return x + sampled.squeeze(0).squeeze(-1).t().to(weight.dtype)


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                lengths: list[int]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, self.head_dim).unbind(1)
        # RoPE in fp32, then back to the activation dtype (pitfall 3).
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(x.dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(x.dtype)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, N, D]
        # Full attention inside each image / frame-slice, none across them.
        outs = [F.scaled_dot_product_attention(qs, ks, vs, scale=self.head_dim ** -0.5)
                for qs, ks, vs in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))]
        out = torch.cat(outs, dim=2).squeeze(0).transpose(0, 1).reshape(n, -1)
        return self.proj(out)


class VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.norm2 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = VisionAttention(config)
        # The block MLP is out_hidden_size wide, not intermediate_size (pitfall 7).
        self.mlp = VisionMLP(config.hidden_size, config.out_hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                lengths: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, lengths)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, dim: int, context_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(dim)
        self.gate_proj = nn.Linear(dim, context_dim, bias=False)
        self.up_proj = nn.Linear(dim, context_dim, bias=False)
        self.down_proj = nn.Linear(context_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.post_projection_norm(self.proj(x)))  # exact (erf) GELU
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionTower(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.post_conv_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.embeddings = PositionEmbedding(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.post_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        merge = config.spatial_merge_size
        self.downsample = nn.Conv2d(config.hidden_size, config.out_hidden_size, merge, stride=merge)
        self.merger = PatchMerger(config.out_hidden_size, config.intermediate_size)
        quarter = config.head_dim // 2  # h and w each rotate head_dim/4 frequencies
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, quarter, 2, dtype=torch.float32) / quarter))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    def forward(self, pixels: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixels [N, patch_dim], grid_thw [k, 3] -> features [N / merge^2, out_hidden_size]."""
        merge = self.config.spatial_merge_size
        grid_thw = grid_thw.cpu().long()
        coords = patch_coordinates(grid_thw, merge)
        lengths = [h * w for t, h, w in grid_thw.tolist() for _ in range(t)]
        sizes = torch.cat([grid_thw[i, 1:].expand(int(t * h * w), 2)
                           for i, (t, h, w) in enumerate(grid_thw.tolist())])

        x = self.post_conv_layernorm(self.patch_embed(pixels))
        freqs = coords.to(x.device)[..., None].float() * self.inv_freq.float()  # [N, 2, f]
        angles = torch.cat((freqs[:, 0], freqs[:, 1]), dim=-1)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        x = self.embeddings(x, coords, sizes)
        for block in self.blocks:
            x = block(x, cos, sin, lengths)
        x = self.post_layernorm(x)
        x = x.view(-1, merge, merge, x.shape[-1])
        if wide_merge_conv_ok(self.downsample):
            x = wide_merge_conv(self.downsample, x)
        else:
            x = self.downsample(x.permute(0, 3, 1, 2)).view(-1, self.config.out_hidden_size)
        return self.merger(x)
