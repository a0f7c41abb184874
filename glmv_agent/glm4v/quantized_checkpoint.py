"""`glmv-agent quantize SRC DST`: write a checkpoint whose text decoder and lm_head are
already int8 / int4 (quantize.py), so loading it takes seconds instead of quantizing again.

DST gets SRC's config, tokenizer and processor files unchanged and one `model.safetensors`
holding every unquantized tensor as stored, plus for each quantized layer `<name>.qweight`
(int8 codes, or int4 codes in the CPU packed layout), `<name>.scales` (int8) or
`<name>.scales_and_zeros` (int4) and `<name>.bias` where the layer has one. The safetensors
metadata names the mode and group size; `load_model` recognises it.

The tensors are written one by one straight from the loaded model (the unquantized ones are
views of SRC's mapped shards), so no second copy of the checkpoint is built in memory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError
from .loading import INDEX_FILE, SINGLE_FILE, load_model, resolve_dtype
from .quantize import INT4_GROUP_SIZE, METADATA_GROUP_SIZE, METADATA_MODE, resolve_quantize

_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                      torch.int8: "I8", torch.uint8: "U8"}


def write_quantized_checkpoint(src: str | Path, dst: str | Path, quantize: str = "int8",
                               dtype: torch.dtype | str = torch.bfloat16,
                               progress: bool | None = None) -> Path:
    """Quantize SRC (a Hugging Face checkpoint directory) into the new directory DST."""
    mode = resolve_quantize(quantize)
    if mode is None:
        raise ConfigError("quantize must be 'int8' or 'int4'")
    source, target = Path(src), Path(dst)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty directory; pick a new one")
    if target.resolve() == source.resolve():
        raise ConfigError("the destination must differ from the source checkpoint")
    model = load_model(source, device="cpu", dtype=resolve_dtype(dtype), progress=progress,
                       quantize=mode)
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.is_file() and file.suffix != ".safetensors" and file.name != INDEX_FILE:
            shutil.copy2(file, target / file.name)
    # lm_head is always quantized, so a tied head is not stored twice.
    tensors = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {METADATA_MODE: mode, METADATA_GROUP_SIZE: str(INT4_GROUP_SIZE)}
    _write_safetensors(target / SINGLE_FILE, tensors, metadata)
    return target


def _write_safetensors(file: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format (8-byte header length, JSON header, raw little-endian data),
    written tensor by tensor."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _SAFETENSORS_DTYPE:
            raise CheckpointError(f"cannot store {name} ({tensor.dtype}) in safetensors here")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPE[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors does
    with open(file, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for tensor in tensors.values():
            handle.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
