"""GLM-4.1V vision tower (spec §4): patch embed, 2D RoPE blocks, 2x2 merge, merger MLP.

Input rows are patches already in 2x2 merge-block order (the processor's patchify);
output is one row per LLM `<|image|>` token. Names mirror the keys under `model.visual.`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig
from .cpu_kernels import block_attention, conv_as_linear
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


# Patches rotated at a time: the fp32 temporaries of one block stay a few MB.
ROPE_BLOCK_ROWS = 1024


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin computed in fp32, returned in x's dtype, for x
    [N, heads, head_dim] and cos/sin [N, 1, head_dim]. Elementwise, so it is done
    ROPE_BLOCK_ROWS patches at a time, each into two fp32 buffers (a fresh fp32 copy of x
    and the rotated half) that round exactly as the out-of-place expression does: a 4784-patch
    screenshot holds ~12 MB of fp32 temporaries instead of five 29 MB ones."""
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], ROPE_BLOCK_ROWS):
        end = start + ROPE_BLOCK_ROWS
        x32 = x[start:end].to(torch.float32, copy=True)
        turned = rotate_half(x32).mul_(sin[start:end])
        out[start:end] = x32.mul_(cos[start:end]).add_(turned)
    return out


class ItemConv3d(nn.Conv3d):
    """A Conv3d whose stride equals its kernel, applied to kernel-sized items [N, C, *kernel]
    -> [N, out_channels]: one matmul (cpu_kernels.conv_as_linear); same parameters and keys."""

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return conv_as_linear(self, items)


class ItemConv2d(nn.Conv2d):
    """The same for a Conv2d (the 2x2 merge): items [N, C, k, k] -> [N, out_channels]."""

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return conv_as_linear(self, items)


class PatchEmbed(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = ItemConv3d(config.in_channels, config.hidden_size, kernel, stride=kernel)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = pixels.view(-1, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size)
        # The Conv3d (stride = kernel) as one matmul, bias fused (pitfall 1); inputs are cast
        # to the weight dtype first.
        return self.proj(x.to(self.proj.weight.dtype))


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
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [H, N, D]
        # Full attention inside each image / frame-slice, none across them.
        out = block_attention(q, k, v, lengths, scale=self.head_dim ** -0.5)
        return self.proj(out.transpose(0, 1).reshape(n, -1))


class VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # silu(gate) * up written into silu's output, the gate projection freed before the up
        # projection is made: the same values, two [rows, hidden] buffers at a time, not four.
        return self.down_proj(F.silu(self.gate_proj(x)).mul_(self.up_proj(x)))


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
        return self.down_proj(F.silu(self.gate_proj(x)).mul_(self.up_proj(x)))  # as VisionMLP


class VisionTower(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.post_conv_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.embeddings = PositionEmbedding(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.post_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        merge = config.spatial_merge_size
        self.downsample = ItemConv2d(config.hidden_size, config.out_hidden_size, merge, stride=merge)
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
        # Each merge block's rows -> [C, m, m] (the conv's layout), then the 2x2 Conv2d as one matmul.
        blocks = x.view(-1, merge, merge, x.shape[-1]).permute(0, 3, 1, 2)
        return self.merger(self.downsample(blocks))
