"""Load a GLM-4.1V checkpoint directory into a `Glm4vModel`.

Everything is checked before any weight is read: files exist, shard sizes agree with their
safetensors headers, and the tensor names and shapes match the model the config describes.
The model is built on the `meta` device, then each parameter gets its tensor in one of two ways:

- zero-copy (CPU target, stored dtype == requested dtype, the default): the parameter is a view
  of a private memory map of its shard (`torch.from_file(shared=False)`, i.e. MAP_PRIVATE).
  Nothing is read while loading; pages come from the page cache on first use and count as
  clean, reclaimable file pages. A stray in-place write would only touch a private copy of
  that page, never the file. Like transformers, the shard files must not be truncated or
  rewritten in place while the model is alive.
- copy (dtype conversion, GPU, or `mmap=False`): each tensor is copied once, straight into a
  buffer of the target device and dtype. The shard is re-opened for every chunk of at most
  CHUNK_BYTES, so its mapping (and the file pages it pins in our RSS) never outlives one
  chunk: peak memory stays one copy of the weights plus a chunk.

With `quantize="int8"|"int4"` the text decoder's linear layers and lm_head (quantize.py) are
streamed instead: QUANTIZE_BLOCK_BYTES of rows at a time are read with plain file reads (the
page cache holds them, not our address space), quantized into the final int8/int4 buffers
and dropped. Peak memory is the quantized model plus one block; no full-precision copy of a
quantized matrix ever exists. Everything else loads as above (zero-copy where it can).
A checkpoint written by `glmv-agent quantize` (quantized_checkpoint.py) already holds the
int8/int4 buffers: they load like any other tensor, zero-copy on CPU, in seconds.

Quantized loads are the memory-lean choice, so there (CPU, zero-copy, Linux) the vision
tower's mapped bf16 weights stay resident only while they are computed with (page_release.py):
0.53 GB on the real-width checkpoint, ~1.8 GB for GLM-4.1V-9B's tower, of which one 32 MB
block or one layer is resident at a time, and none while the text decoder runs.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from . import require_torch
from .config import Glm4vConfig
from .model import Glm4vModel
from .page_release import release_vision_pages
from .quantize import (METADATA_GROUP_SIZE, METADATA_MODE, INT4_GROUP_SIZE, Int4Linear, QuantizedLinear,
                       for_linear, is_quantized_linear, resolve_quantize, rows_per_block)
from .rope import text_inv_freq

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PROGRESS_THRESHOLD_BYTES = 1 << 30
CHUNK_BYTES = 64 << 20  # largest piece of a tensor copied at once
QUANTIZE_BLOCK_BYTES = 8 << 20  # fp32 rows quantized at once (their temporaries are ~4x this)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
# safetensors dtype tag -> bytes per element
_ELEMENT_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                 "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# safetensors dtype tag -> torch dtype, for the tags a zero-copy load can use as they are
_TORCH_DTYPE = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
# ... and for the integer buffers of a saved quantized checkpoint
_STORED_DTYPE = {**_TORCH_DTYPE, "I8": torch.int8, "U8": torch.uint8}


class TensorEntry(NamedTuple):
    """Where one checkpoint tensor lives: shard, shape, byte size, dtype tag, file offset."""
    file: Path
    shape: list[int]
    nbytes: int
    dtype: str
    offset: int  # absolute byte offset of the tensor's data in `file`


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'")
    return _DTYPES[key]


def resolve_device(device: torch.device | str) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; "
                          "use device='cpu' or 'auto'")
    return resolved


def read_safetensors_header(file: Path) -> dict[str, dict[str, Any]]:
    """Tensor entries of a safetensors file, after checking the file is complete."""
    return _read_header(file)[0]


def read_safetensors_metadata(file: Path) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file (empty when it has none)."""
    return _read_header(file)[2]


def _read_header(file: Path) -> tuple[dict[str, dict[str, Any]], int, dict[str, str]]:
    """(tensor entries, byte offset where the data section starts, metadata), file checked
    complete."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{file}: file is truncated ({size} bytes, no safetensors "
                                      "header); re-download it")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise CheckpointError(f"{file}: file is truncated (header says {header_len} "
                                      f"header bytes, file has {size}); re-download it")
            header = json.loads(handle.read(header_len))
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: corrupt safetensors header ({exc}); re-download it") from exc
    metadata = header.pop("__metadata__", None) or {}
    data_end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{file}: file is truncated ({size} bytes, its header needs "
                              f"{expected}); re-download it")
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        numel = 1
        for dim in entry["shape"]:
            numel *= dim
        if end - start != numel * _ELEMENT_SIZE.get(entry["dtype"], 0):
            raise CheckpointError(f"{file}: tensor {name!r} has inconsistent size in the header")
    return header, 8 + header_len, metadata


def checkpoint_tensors(directory: Path) -> dict[str, TensorEntry]:
    """name -> (shard file, shape, byte size, dtype tag, offset) for every tensor."""
    index = directory / INDEX_FILE
    single = directory / SINGLE_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: cannot read 'weight_map' ({exc})") from exc
        shards = sorted(set(weight_map.values()))
    elif single.is_file():
        weight_map, shards = None, [SINGLE_FILE]
    else:
        found = sorted(p.name for p in directory.glob("*.safetensors")) if directory.is_dir() else []
        raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found"
                              + (f" (found {found})" if found else "")
                              + "; point at a Hugging Face checkpoint directory")
    tensors: dict[str, TensorEntry] = {}
    for shard in shards:
        file = directory / shard
        if not file.is_file():
            raise CheckpointError(f"{index}: refers to shard {shard!r}, which does not exist in "
                                  f"{directory}; the download is incomplete")
        header, data_start, _ = _read_header(file)
        for name, entry in header.items():
            start, end = entry["data_offsets"]
            tensors[name] = TensorEntry(file, list(entry["shape"]), end - start, entry["dtype"],
                                        data_start + start)
    if weight_map is not None:
        for name, shard in weight_map.items():
            if name not in tensors or tensors[name][0].name != shard:
                raise CheckpointError(f"{index}: tensor {name!r} is listed in shard {shard!r} "
                                      "but that file does not contain it")
    return tensors


def check_tensors(model: nn.Module, tensors: dict[str, TensorEntry], directory: Path,
                  buffers: dict[str, QuantizedLinear] | None = None) -> None:
    """Names and shapes match the model's parameters (and the buffers of `buffers`, the
    quantized layers of a saved quantized checkpoint)."""
    expected = {name: list(p.shape) for name, p in model.named_parameters()}
    for prefix, module in (buffers or {}).items():
        expected.update({f"{prefix}.{leaf}": list(b.shape) for leaf, b in module.named_buffers()})
    config = getattr(model, "config", None)
    if config is not None and config.tie_word_embeddings:
        # Tied checkpoints sometimes still store the (identical) head; it is not read.
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{directory}: {len(missing)} tensor(s) missing from the checkpoint: "
                              f"{_preview(missing)}; the files do not match config.json")
    if unexpected:
        raise CheckpointError(f"{directory}: {len(unexpected)} unexpected tensor(s) in the "
                              f"checkpoint: {_preview(unexpected)} (e.g. in "
                              f"{tensors[unexpected[0]][0].name}); is this a GLM-4.1V checkpoint?")
    for name, shape in expected.items():
        file, found = tensors[name].file, tensors[name].shape
        if found != shape:
            raise CheckpointError(f"{file}: tensor {name!r} has shape {found}, expected {shape} "
                                  "from config.json")


def load_model(path: str | Path, device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.bfloat16, progress: bool | None = None,
               mmap: bool = True, quantize: str | None = None) -> Glm4vModel:
    """Load a checkpoint directory; returns the model in eval mode on `device` in `dtype`.

    progress: True/False forces the tqdm bar on/off; None shows it for checkpoints > 1 GB.
    mmap: on CPU, tensors already stored in `dtype` become views of the memory-mapped shards
    (no copy, no load-time RSS); False copies every tensor into private memory instead.
    quantize: None, "int8" or "int4": weight-only quantization of the text decoder's linear
    layers and lm_head, done while streaming the checkpoint (see quantize.py); `dtype`
    stays the compute dtype of activations and of every other weight. A checkpoint written
    by `glmv-agent quantize` loads in its saved mode (quantize None or that same mode).
    """
    require_torch()
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype)
    mode = resolve_quantize(quantize)
    config = Glm4vConfig.from_file(directory)
    tensors = checkpoint_tensors(directory)
    saved = saved_quantization(tensors)
    if saved and mode not in (None, saved):
        raise ConfigError(f"{directory} is already quantized as {saved}; load it with "
                          f"quantize={saved!r} or None, or quantize the original checkpoint")
    mode = mode or saved

    with torch.device("meta"):
        model = Glm4vModel(config)
    # Linear layers are replaced before any weight is read, so an unsupported shape fails fast.
    if saved:  # the quantized buffers are tensors of the checkpoint, loaded like parameters
        quantized = _replace_linears(model, saved, target_device, target_dtype, on_meta=True)
        check_tensors(model, tensors, directory, quantized)
        to_stream: dict[str, QuantizedLinear] = {}
    else:
        check_tensors(model, tensors, directory)
        quantized = to_stream = _replace_linears(model, mode, target_device, target_dtype) if mode else {}

    names = [name for name, _ in model.named_parameters()]
    names += [f"{prefix}.{leaf}" for prefix, m in quantized.items() if saved for leaf, _ in m.named_buffers()]
    total = sum(tensors[name].nbytes for name in names)
    total += sum(_weight_entry(tensors, name, config).nbytes for name in to_stream)
    show = progress if progress is not None else total > PROGRESS_THRESHOLD_BYTES
    bar = _progress_bar(total, show)
    logger.info("loading %s (%.2f GB) to %s as %s%s", directory, total / 1e9, target_device,
                target_dtype, f", {mode} weights" if mode else "")
    maps: dict[Path, torch.Tensor] = {}  # shard -> its whole file as a mapped uint8 tensor
    for name in names:
        entry = tensors[name]
        stored = _STORED_DTYPE.get(entry.dtype)
        # Floats become the target dtype; saved int8/int4 codes stay integers.
        dtype = stored if stored is not None and not stored.is_floating_point else target_dtype
        tensor = None
        if mmap and target_device.type == "cpu":
            tensor = _mapped_tensor(entry, dtype, maps)
        if tensor is None:
            tensor = _read_tensor(entry.file, name, entry.shape, entry.nbytes, target_device, dtype)
        _set_parameter(model, name, tensor)
        if bar is not None:
            bar.update(entry.nbytes)
    if saved:
        for module in quantized.values():
            if isinstance(module, Int4Linear):
                module.load_cpu_packed(module.qweight)  # saved in the CPU layout
            module.finish()
    for name, module in to_stream.items():
        entry = _weight_entry(tensors, name, config)
        _stream_quantized(module, entry, mode or "")
        if module.bias is not None:
            bias = tensors[f"{name}.bias"]
            module.bias.copy_(_read_rows(bias, 0, bias.shape[0]))
        if bar is not None:
            bar.update(entry.nbytes)
    if bar is not None:
        bar.close()
    if config.tie_word_embeddings and "lm_head" not in quantized:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    _init_buffers(model, config, target_device)
    if mode and maps:  # the memory-lean choice: the vision tower holds only what it computes with
        release_vision_pages(model.model.visual, list(maps.values()))
    model.eval()
    return model


def _read_tensor(file: Path, name: str, shape: list[int], nbytes: int, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """Copy one tensor into a fresh buffer on device/dtype, CHUNK_BYTES of rows at a time.

    The shard is opened (memory-mapped) per chunk and closed right after, so the mapped pages
    we touched leave our RSS before the next chunk: the only transient is one chunk.
    """
    from safetensors import safe_open  # optional dependency (extra "local")

    out = torch.empty(shape, dtype=dtype, device=device)
    rows = shape[0] if shape else 1
    step = max(1, CHUNK_BYTES * rows // max(nbytes, 1))
    for start in range(0, rows, step):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            if not shape or step >= rows:
                part = handle.get_tensor(name)
            else:
                part = handle.get_slice(name)[start:start + step]
        target = out if not shape or step >= rows else out[start:start + step]
        target.copy_(part)  # dtype conversion and device transfer happen here, once
        del part
    return out


def _mapped_tensor(entry: TensorEntry, dtype: torch.dtype,
                   maps: dict[Path, torch.Tensor]) -> torch.Tensor | None:
    """A view of the tensor inside its mapped shard, or None when it cannot be used as is
    (stored dtype differs from `dtype`, or the data is not aligned to its element size)."""
    if _STORED_DTYPE.get(entry.dtype) != dtype or entry.offset % _ELEMENT_SIZE[entry.dtype]:
        return None
    if entry.file not in maps:
        size = entry.file.stat().st_size
        # shared=False maps the file MAP_PRIVATE: lazily read, writes never reach the file,
        # and the tensor is writable, so torch has nothing to warn about.
        try:
            maps[entry.file] = torch.from_file(str(entry.file), shared=False, size=size,
                                               dtype=torch.uint8)
        except RuntimeError as exc:
            raise CheckpointError(f"{entry.file}: cannot memory-map ({exc}); pass mmap=False "
                                  "to copy the weights instead") from exc
    raw = maps[entry.file][entry.offset:entry.offset + entry.nbytes]
    return raw.view(dtype).view(entry.shape)


def saved_quantization(tensors: dict[str, TensorEntry]) -> str | None:
    """The mode a `glmv-agent quantize` checkpoint was saved in, None for a plain one."""
    files = sorted({entry.file for entry in tensors.values()})
    metadata = read_safetensors_metadata(files[0]) if files else {}
    mode = metadata.get(METADATA_MODE)
    if mode is None:
        return None
    group = metadata.get(METADATA_GROUP_SIZE)
    if resolve_quantize(mode) is None or (mode == "int4" and group != str(INT4_GROUP_SIZE)):
        raise CheckpointError(f"{files[0]}: quantized as {mode!r} (group size {group}), which this "
                              "version cannot load; quantize the original checkpoint again")
    return mode


def _replace_linears(model: nn.Module, mode: str, device: torch.device, dtype: torch.dtype,
                     on_meta: bool = False) -> dict[str, QuantizedLinear]:
    """Swap every linear layer quantize.py selects for an empty quantized one (buffers not
    allocated with on_meta: a saved quantized checkpoint provides them)."""
    quantized: dict[str, QuantizedLinear] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and is_quantized_linear(name):
            quantized[name] = for_linear(mode, name, module, device, dtype, on_meta=on_meta)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, quantized[name])
    return quantized


def _weight_entry(tensors: dict[str, TensorEntry], name: str, config: Glm4vConfig) -> TensorEntry:
    """The checkpoint tensor a quantized layer's weight comes from (a tied head: the embedding)."""
    if name == "lm_head" and config.tie_word_embeddings:
        return tensors["model.language_model.embed_tokens.weight"]
    return tensors[f"{name}.weight"]


def _stream_quantized(module: QuantizedLinear, entry: TensorEntry, mode: str) -> None:
    """Quantize one weight a block of rows at a time, straight from the file."""
    rows = entry.shape[0]
    step = rows_per_block(mode, entry.shape[1], QUANTIZE_BLOCK_BYTES)
    for start in range(0, rows, step):
        module.quantize_rows(start, _read_rows(entry, start, min(step, rows - start)))
    module.finish()


def _read_rows(entry: TensorEntry, start: int, count: int) -> torch.Tensor:
    """Rows start..start+count of a stored tensor, read with a plain file read (no mapping,
    so no file page is charged to our RSS)."""
    dtype = _TORCH_DTYPE.get(entry.dtype)
    if dtype is None:
        raise CheckpointError(f"{entry.file}: a tensor is stored as {entry.dtype}; quantizing "
                              "needs F32, BF16 or F16 weights")
    row_bytes = entry.nbytes // max(entry.shape[0], 1)
    buffer = torch.empty(count * row_bytes, dtype=torch.uint8)
    try:
        with open(entry.file, "rb") as handle:
            handle.seek(entry.offset + start * row_bytes)
            read = handle.readinto(buffer.numpy().data)
    except OSError as exc:
        raise CheckpointError(f"{entry.file}: cannot read ({exc})") from exc
    if read != buffer.numel():
        raise CheckpointError(f"{entry.file}: file is truncated; re-download it")
    return buffer.view(dtype).view(count, *entry.shape[1:])


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._buffers:  # a quantized layer's codes, scales, bias
        setattr(module, leaf, tensor)
    else:
        setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))


def _init_buffers(model: Glm4vModel, config: Glm4vConfig, device: torch.device) -> None:
    # Not in the checkpoint; computed here and kept fp32 (pitfall 2).
    model.model.language_model.inv_freq = text_inv_freq(config.text, device=device)
    v = config.vision
    quarter = v.head_dim // 2
    exponents = torch.arange(0, quarter, 2, dtype=torch.float32, device=device) / quarter
    model.model.visual.inv_freq = 1.0 / (v.rope_theta ** exponents)


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        logger.info("install tqdm for a loading progress bar")
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="loading weights")


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
