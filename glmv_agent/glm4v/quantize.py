"""Weight-only int8 / int4 quantization of the text decoder's linear layers and `lm_head`.

Decode at batch 1 reads every decoder weight once per token, so it is bound by memory
bandwidth: storing the weights in 8 or 4 bits makes each token read 2x / ~4x fewer bytes.
Activations stay in the compute dtype (bf16 by default), except that int8 prompts on CPU
also round them to int8 (below).

- int8: symmetric, one scale per output channel (row): w ~= q * scale, q in [-127, 127].
- int4: asymmetric round-to-nearest in groups of INT4_GROUP_SIZE input features, the
  layout torch's int4 kernels take: w ~= (q - 8) * scale + zero, q in [0, 15], one
  (scale, zero) pair per group and output channel.

Kernels (torch's own; torchao is not needed):

| device | int8 | int4 |
|---|---|---|
| CPU  | `_weight_int8pack_mm` | `_weight_int4pack_mm_for_cpu` (weights packed by `_convert_weight_to_int4pack_for_cpu`) |
| CUDA | `_weight_int8pack_mm` | `_weight_int4pack_mm` (tinygemm, bf16 only; packed by `_convert_weight_to_int4pack`) |

These kernels are matrix-vector kernels: measured on a 2-core AMD EPYC (AVX-512 bf16), they
beat the bf16 matmul 2.6-3x (int8) and 3.3-4.7x (int4) at one row, but are 2-3x *slower* at
prompt length (1216 rows, where the bf16 matmul is compute bound). So inputs with more than
SMALL_BATCH_ROWS rows (prompts) take another path:

- int8, CPU, bf16 activations: the activations are quantized too, to int8 with one scale
  per row (token), and `torch._int_mm` multiplies the int8 codes with the same int8 weight
  codes into int32 (oneDNN's VNNI kernel): ~2x faster than the bf16 matmul here, on the one
  stored copy of the weight (oneDNN's own packed qlinear was no faster and needs a second,
  opaque copy). It adds the activation rounding (~0.5% relative error per layer).
- otherwise (int4, fp32/fp16, CUDA): dequantize the weight, 32 MB of rows at a time, into
  temporary blocks and use the ordinary matmul: ~10% (int8) / ~30% (int4) dearer than bf16.

The vision tower stays in the compute dtype: quantized to int8 (with int8 activations) its
features moved the real-width checkpoint's logits by 0.063-0.075 relative, over the 0.05 bar;
even its best-conditioned parts cost too much (in an experiment whose text decoder alone
gave 0.031: plus the merger's gate/up projections 0.043, the blocks' gate/up 0.039, the whole
merger 0.051), for at most ~0.5 s of a 6.5 s prefill.
Its weights stay memory-mapped and resident only while in use instead (page_release.py).

The CUDA paths are written to torch's documented kernel contracts but have NOT been run on
a GPU by this project yet.

Modules are created empty (`for_linear`) and filled a block of rows at a time
(`quantize_rows`), so a loader can quantize a checkpoint while streaming it, never holding a
full-precision copy of a large matrix (see loading.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

QUANTIZE_MODES = ("int8", "int4")
INT4_GROUP_SIZE = 128
# safetensors metadata of a checkpoint written by `glmv-agent quantize` (its mode, group size)
METADATA_MODE, METADATA_GROUP_SIZE = "glmv_agent.quantize", "glmv_agent.quantize_group_size"
# CPU int4 packing works on blocks of this many output rows (see _unpack_int4_cpu).
INT4_CPU_ROW_BLOCK = 64
# At most this many input rows go through the packed kernels; more (prefill) dequantize.
SMALL_BATCH_ROWS = 32
# ... and dequantize their weight this many bytes of rows at a time (bounds the transient)
DEQUANT_CHUNK_BYTES = 32 << 20
# int8 activations: rounded this many rows at a time (a small fp32 copy), and their int32
# products with the weight held this many bytes at a time (cache-sized: 8 MB measured ~10%
# faster than 32 MB at gate_up's 1215 x 27392 on the AMD EPYC)
ACTIVATION_BLOCK_ROWS = 256
PRODUCT_CHUNK_BYTES = 8 << 20
_COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def resolve_quantize(quantize: str | None) -> str | None:
    """None, "int8" or "int4" (case-insensitive; "none" means None); anything else is an error."""
    if quantize is None:
        return None
    key = str(quantize).lower()
    if key in ("", "none"):
        return None
    if key not in QUANTIZE_MODES:
        raise ConfigError(f"unknown quantize mode {quantize!r}; use None, 'int8' or 'int4'")
    return key


def is_quantized_linear(name: str) -> bool:
    """Which linear layers (module names in Glm4vModel) get quantized: every linear layer of
    the text decoder, and lm_head. The vision tower stays in the compute dtype (it runs once
    per image; int8 there costs too much accuracy, see the module doc)."""
    return name == "lm_head" or name.startswith("model.language_model.layers.")


def check_supported(mode: str, name: str, in_features: int, out_features: int,
                    device: torch.device, dtype: torch.dtype) -> None:
    """Raise ConfigError when `mode` cannot run this layer on device/dtype."""
    where = f"{name} ({out_features}x{in_features})"
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"quantize={mode!r} runs on 'cpu' or 'cuda', not {device.type!r}; "
                          "load without quantize on this device")
    if dtype not in _COMPUTE_DTYPES:
        raise ConfigError(f"quantize={mode!r} needs a float compute dtype, got {dtype}")
    if mode == "int8":
        return
    if device.type == "cuda" and dtype != torch.bfloat16:
        raise ConfigError(f"quantize='int4' on CUDA needs dtype bfloat16 (torch's int4 kernel), "
                          f"got {dtype}; use dtype='bfloat16' or quantize='int8'")
    if in_features % INT4_GROUP_SIZE:
        raise ConfigError(f"quantize='int4' cannot handle {where}: in_features must be a "
                          f"multiple of the group size {INT4_GROUP_SIZE}; use quantize='int8'")
    row_multiple = INT4_CPU_ROW_BLOCK if device.type == "cpu" else 8
    if out_features % row_multiple:
        raise ConfigError(f"quantize='int4' cannot handle {where} on {device.type}: "
                          f"out_features must be a multiple of {row_multiple}; use quantize='int8'")


class _QuantizedBase(nn.Module):
    """What Int8Linear and Int4Linear share: the shape, the bias buffer, the output's tail."""

    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features

    def _register_bias(self, has_bias: bool, device: torch.device, dtype: torch.dtype) -> None:
        self.register_buffer("bias", torch.zeros(self.out_features, dtype=dtype, device=device)
                             if has_bias else None)

    def _finish_output(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out [rows, out_features] + bias, shaped as x with out_features last."""
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


class Int8Linear(_QuantizedBase):
    """y = x @ (q * scale).T + bias, q int8 [out, in], one scale per output row (prompts on
    CPU in bf16 also round x to int8, one scale per row: see the module doc)."""

    qweight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, in_features: int, out_features: int, has_bias: bool,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8,
                                                    device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))
        self._register_bias(has_bias, device, dtype)

    @torch.no_grad()
    def quantize_rows(self, start: int, rows: torch.Tensor) -> None:
        """Quantize full-precision weight rows [n, in] into rows start..start+n."""
        rows = rows.to(self.qweight.device, torch.float32)
        # Round against the scale as stored (bf16 in a bf16 model), which is what multiplies.
        scale = _nonzero((rows.abs().amax(dim=1) / 127).to(self.scales.dtype))
        end = start + rows.shape[0]
        codes = torch.round(rows / scale.float()[:, None]).clamp_(-127, 127)
        self.qweight[start:end] = codes.to(torch.int8)
        self.scales[start:end] = scale

    def finish(self) -> None:
        """Nothing to pack for int8 (the kernels take q and scales as they are)."""

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        scales = self.scales.to(x.dtype)
        if flat.shape[0] <= SMALL_BATCH_ROWS:
            out = torch._weight_int8pack_mm(flat, self.qweight, scales)
        elif flat.device.type == "cpu" and flat.dtype == torch.bfloat16:
            out = _int8_activation_linear(flat, self.qweight, self.scales)
        else:
            # int8 codes are exact in bf16/fp16/fp32; the row scale applies to the output.
            out = _chunked_linear(flat, self.out_features, lambda s, e: self.qweight[s:e].to(x.dtype),
                                  scales)
        return self._finish_output(out, x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int4Linear(_QuantizedBase):
    """y = x @ W.T + bias, W stored as 4-bit codes in groups of INT4_GROUP_SIZE along `in`.

    `qweight` is the kernel's packed layout for the device (CPU: uint8 [out, in/2], packed
    at load, block by block; CUDA: the int32 tensor-core layout, packed by `finish()` from
    plain nibbles). `scales_and_zeros` is [in/group, out, 2] in the compute dtype.
    """

    qweight: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(self, in_features: int, out_features: int, has_bias: bool,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(in_features, out_features)
        self.groups = in_features // INT4_GROUP_SIZE
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2,
                                                    dtype=torch.uint8, device=device))
        self.register_buffer("scales_and_zeros", torch.zeros(self.groups, out_features, 2,
                                                             dtype=dtype, device=device))
        self._register_bias(has_bias, device, dtype)
        self.packed = False

    @torch.no_grad()
    def quantize_rows(self, start: int, rows: torch.Tensor) -> None:
        """Quantize rows [n, in] into rows start..start+n (CPU: n a multiple of 64 or the rest)."""
        device = self.qweight.device
        rows = rows.to(device, torch.float32)
        n = rows.shape[0]
        grouped = rows.view(n, self.groups, INT4_GROUP_SIZE)
        low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
        # zero is the value of code 8 (the kernels compute (q - 8) * scale + zero); both are
        # rounded to the stored dtype first, and the codes are rounded against those.
        stored = self.scales_and_zeros.dtype
        scale = _nonzero(((high - low) / 15).to(stored))
        zero = (low + 8 * scale.float()).to(stored)
        codes = torch.round((grouped - zero.float()[..., None]) / scale.float()[..., None]) + 8
        codes = codes.clamp_(0, 15).to(torch.int32).view(n, self.in_features)
        self.scales_and_zeros[:, start:start + n] = torch.stack([scale, zero], dim=-1).transpose(0, 1)
        if device.type == "cpu":
            # CPU packing is row-block local (64 rows at a time), so blocks pack independently.
            self.qweight[start:start + n] = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        else:
            # Plain nibbles (even column in the high half), packed for tinygemm in finish().
            self.qweight[start:start + n] = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)

    def finish(self) -> None:
        """After every row is quantized: pack for the CUDA kernel (CPU is packed already)."""
        if self.qweight.device.type == "cuda" and not self.packed:
            tiles = 8 if self.in_features % (8 * 16) == 0 else 2
            self.qweight = torch._convert_weight_to_int4pack(self.qweight, tiles)
        self.packed = True

    def load_cpu_packed(self, packed: torch.Tensor) -> None:
        """Take a weight saved in the CPU packed layout (what `glmv-agent quantize` writes)."""
        if self.scales_and_zeros.device.type == "cpu":
            self.qweight, self.packed = packed, True
            return
        codes = _unpack_int4_cpu(packed.to(self.scales_and_zeros.device), self.out_features,
                                 self.in_features).to(torch.int32)
        self.qweight = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
        self.packed = False
        self.finish()

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The full [out, in] weight (CPU layout only): w = q * scale + (zero - 8 * scale)."""
        return _dequantize_int4_cpu(self.qweight, self.scales_and_zeros, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        sz = self.scales_and_zeros.to(x.dtype)
        if flat.device.type == "cuda":
            out = torch._weight_int4pack_mm(flat, self.qweight, INT4_GROUP_SIZE, sz)
        elif flat.shape[0] <= SMALL_BATCH_ROWS:
            out = torch._weight_int4pack_mm_for_cpu(flat, self.qweight, INT4_GROUP_SIZE, sz)
        else:
            out = _chunked_linear(flat, self.out_features, lambda s, e: _dequantize_int4_cpu(
                self.qweight[s:e], self.scales_and_zeros[:, s:e], x.dtype))
        return self._finish_output(out, x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 group {INT4_GROUP_SIZE}")


QuantizedLinear = Int8Linear | Int4Linear


def for_linear(mode: str, name: str, linear: nn.Linear, device: torch.device,
               dtype: torch.dtype, *, on_meta: bool = False) -> QuantizedLinear:
    """An empty quantized replacement for `linear` (whose weight may be on `meta`), checked
    for `device`; with on_meta its buffers are not allocated yet (a loader assigns them)."""
    check_supported(mode, name, linear.in_features, linear.out_features, device, dtype)
    cls = Int8Linear if mode == "int8" else Int4Linear
    return cls(linear.in_features, linear.out_features, linear.bias is not None,
               torch.device("meta") if on_meta else device, dtype)


def summary(model: nn.Module) -> str:
    """e.g. "int8 weights in 15 linear layers (0.41 GB)", or "" when nothing is quantized."""
    layers = [m for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear))]
    if not layers:
        return ""
    modes = sorted({"int8" if isinstance(m, Int8Linear) else "int4" for m in layers})
    size = sum(b.numel() * b.element_size() for m in layers for b in m.buffers())
    return f"{'/'.join(modes)} weights in {len(layers)} linear layers ({size / 1e9:.2f} GB)"


def rows_per_block(mode: str, in_features: int, budget_bytes: int) -> int:
    """How many weight rows to quantize at once so one block's fp32 copy stays in budget."""
    rows = max(1, budget_bytes // (4 * in_features))
    if mode == "int4":  # CPU packing needs whole 64-row blocks
        rows = max(INT4_CPU_ROW_BLOCK, rows // INT4_CPU_ROW_BLOCK * INT4_CPU_ROW_BLOCK)
    return rows


def quantize_linear(mode: str, linear: nn.Linear, name: str = "linear",
                    budget_bytes: int = 64 << 20) -> QuantizedLinear:
    """Quantize a loaded nn.Linear (on its own device, in its dtype) block by block."""
    weight = linear.weight.detach()
    module = for_linear(mode, name, linear, weight.device, weight.dtype)
    step = rows_per_block(mode, linear.in_features, budget_bytes)
    for start in range(0, linear.out_features, step):
        module.quantize_rows(start, weight[start:start + step])
    if linear.bias is not None and module.bias is not None:
        module.bias.copy_(linear.bias.detach())
    module.finish()
    return module


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    """Scales of all-zero rows / constant groups (0, or 0 after rounding to fp16) become 1:
    their codes then encode the values exactly instead of dividing by zero."""
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def _chunked_linear(x: torch.Tensor, out_features: int,
                    dequantize_rows: Callable[[int, int], torch.Tensor],
                    row_scales: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T for many rows (prefill), W dequantized DEQUANT_CHUNK_BYTES of output rows at a
    time (a multiple of 64 rows, which the int4 CPU layout needs): the full-precision weight
    never exists whole (peak memory), and every piece is still a large matmul."""
    in_features = x.shape[-1]
    step = DEQUANT_CHUNK_BYTES // (x.element_size() * in_features)
    step = max(INT4_CPU_ROW_BLOCK, step // INT4_CPU_ROW_BLOCK * INT4_CPU_ROW_BLOCK)
    out = x.new_empty(x.shape[0], out_features)
    for start in range(0, out_features, step):
        end = min(start + step, out_features)
        part = F.linear(x, dequantize_rows(start, end))
        out[:, start:end] = part if row_scales is None else part * row_scales[start:end]
    return out


def _int8_activation_linear(x: torch.Tensor, qweight: torch.Tensor,
                            weight_scales: torch.Tensor) -> torch.Tensor:
    """x @ (qweight * weight_scales).T with x itself rounded to int8, one scale per row:
    x ~= codes * token_scale (symmetric, codes in [-127, 127]), so the product is
    (codes @ qweight.T) * token_scale * weight_scale with an exact int32 accumulation.

    The activations are rounded ACTIVATION_BLOCK_ROWS rows at a time (bounded fp32 copy);
    the int32 products come PRODUCT_CHUNK_BYTES of output columns at a time and are scaled
    straight into the output."""
    rows, out_features = x.shape[0], qweight.shape[0]
    codes = torch.empty(x.shape, dtype=torch.int8)
    token_scales = torch.empty(rows, 1)
    for start in range(0, rows, ACTIVATION_BLOCK_ROWS):
        block = x[start:start + ACTIVATION_BLOCK_ROWS].float()
        scale = _nonzero(block.abs().amax(dim=1, keepdim=True) / 127)
        codes[start:start + block.shape[0]] = block.div_(scale).round_()
        token_scales[start:start + block.shape[0]] = scale
    columns = PRODUCT_CHUNK_BYTES // (4 * rows)
    columns = max(INT4_CPU_ROW_BLOCK, columns // INT4_CPU_ROW_BLOCK * INT4_CPU_ROW_BLOCK)
    out = x.new_empty(rows, out_features)
    for start in range(0, out_features, columns):
        end = min(start + columns, out_features)
        products = torch._int_mm(codes, qweight[start:end].t()).float().mul_(token_scales)
        torch.mul(products, weight_scales[start:end].float(), out=out[:, start:end])
    return out


def _dequantize_int4_cpu(packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                         dtype: torch.dtype, blocks_per_step: int = 8) -> torch.Tensor:
    """Inverse of `_convert_weight_to_int4pack_for_cpu(codes, 1)` + the group affine map.

    That layout (torch 2.5+, out_features % 64 == 0): per block of 64 output rows, for each
    input column k, 32 bytes; byte i holds row i of the block in its low nibble and row 32 + i
    in its high nibble (checked against torch's packer in tests/engine/test_glm4v_quantize.py).
    Done `blocks_per_step` blocks at a time so the intermediates stay in cache (about 2x
    faster here than whole-matrix passes).
    """
    groups, out_features, _ = scales_and_zeros.shape
    in_features = groups * INT4_GROUP_SIZE
    nblocks = out_features // INT4_CPU_ROW_BLOCK
    shape = (nblocks, INT4_CPU_ROW_BLOCK, groups, 1)
    scale = scales_and_zeros[..., 0].t().to(dtype)
    low = (scales_and_zeros[..., 1].t().to(dtype) - 8 * scale).reshape(shape)
    scale = scale.reshape(shape)
    blocks = packed.view(nblocks, in_features, 32)
    codes = torch.empty(nblocks, in_features, INT4_CPU_ROW_BLOCK, dtype=torch.uint8)
    out = torch.empty(nblocks, INT4_CPU_ROW_BLOCK, groups, INT4_GROUP_SIZE, dtype=dtype)
    for b in range(0, nblocks, blocks_per_step):
        e = b + blocks_per_step
        torch.bitwise_and(blocks[b:e], 0xF, out=codes[b:e, :, :32])
        torch.bitwise_right_shift(blocks[b:e], 4, out=codes[b:e, :, 32:])
        rows = codes[b:e].transpose(1, 2).unflatten(2, (groups, INT4_GROUP_SIZE))
        torch.addcmul(low[b:e], rows, scale[b:e], out=out[b:e])
    return out.view(out_features, in_features)


def _unpack_int4_cpu(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The 4-bit codes [out, in] of a CPU-packed weight (tests check it inverts the packer)."""
    blocks = packed.view(out_features // INT4_CPU_ROW_BLOCK, in_features, 32)
    both = torch.cat([blocks & 0xF, blocks >> 4], dim=2)  # [blocks, in, 64 rows]
    return both.transpose(1, 2).reshape(out_features, in_features)
