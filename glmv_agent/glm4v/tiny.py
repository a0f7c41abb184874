"""Write small random GLM-4.1V checkpoints with the real file layout and key names.

Used by the tests (and the speed benchmark with `--real-width`): config.json in the nested
(transformers 5.x) or flat (4.53-era) shape, sharded safetensors with an index,
generation_config.json, and the tokenizer/preprocessor assets when the processor package
provides them. transformers' `Glm4vForConditionalGeneration.from_pretrained` loads the result.

    python -m glmv_agent.glm4v.tiny OUT_DIR [--real-width] [--layers N] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from .config import Glm4vConfig
from .loading import INDEX_FILE, SINGLE_FILE, resolve_dtype
from .model import Glm4vModel

logger = logging.getLogger(__name__)

# GLM-4.1V special tokens; the tiny tokenizer keeps them as the last 223 ids of its vocab.
REAL_SPECIAL_IDS = {
    "<|endoftext|>": 151329, "[gMASK]": 151331, "<sop>": 151333, "<|system|>": 151335,
    "<|user|>": 151336, "<|assistant|>": 151337, "<|observation|>": 151338,
    "<|begin_of_image|>": 151339, "<|end_of_image|>": 151340, "<|begin_of_video|>": 151341,
    "<|end_of_video|>": 151342, "<|image|>": 151343, "<|video|>": 151344,
}
_FIRST_SPECIAL = 151329
_NUM_SPECIAL = 223


def special_token_ids(vocab_size: int) -> dict[str, int]:
    """Where the GLM-4.1V special tokens sit in a vocab of this size."""
    base = vocab_size - _NUM_SPECIAL
    return {tok: base + real - _FIRST_SPECIAL for tok, real in REAL_SPECIAL_IDS.items()}


def write_tiny_checkpoint(directory: str | Path, *, text_hidden: int = 64, text_layers: int = 2,
                          heads: int = 4, kv_heads: int = 2, intermediate: int = 128,
                          vision_hidden: int = 32, vision_depth: int = 2,
                          vision_heads: int | None = None, vision_intermediate: int | None = None,
                          vocab_size: int = 2048, embedding_rows: int | None = None,
                          image_size: int = 56,
                          dtype: torch.dtype | str = torch.float32, shards: int = 2, seed: int = 0,
                          config_format: str = "nested") -> Path:
    """Write a random checkpoint to `directory` and return the directory.

    vocab_size: tokens of the tokenizer. embedding_rows: rows of the embedding and LM head
    (config.json's vocab_size; default vocab_size); more leaves padding ids that no token
    has, as the real GLM-4.1V checkpoint does (151552 rows).
    """
    if config_format not in ("nested", "flat"):
        raise ValueError(f"config_format must be 'nested' or 'flat', got {config_format!r}")
    if vocab_size <= _NUM_SPECIAL:
        raise ValueError(f"vocab_size must exceed {_NUM_SPECIAL} (the special tokens)")
    rows = vocab_size if embedding_rows is None else embedding_rows
    if rows < vocab_size:
        raise ValueError(f"embedding_rows ({rows}) must be at least vocab_size ({vocab_size})")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = resolve_dtype(dtype)
    ids = _write_tokenizer_assets(out, vocab_size)
    vision_heads = vision_heads or max(1, vision_hidden // 16)
    half = int(text_hidden // heads * 0.5) // 2  # rotary frequencies with partial factor 0.5
    t_sec = max(1, half // 4)
    h_sec = (half - t_sec) // 2
    section = [t_sec, h_sec, half - t_sec - h_sec]  # [8, 12, 12] at real width

    text = {
        "vocab_size": rows, "hidden_size": text_hidden, "intermediate_size": intermediate,
        "num_hidden_layers": text_layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "max_position_embeddings": 65536, "attention_bias": True,
        "pad_token_id": ids["<|endoftext|>"],
    }
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
            "mrope_section": section}
    vision = {
        "model_type": "glm4v_vision", "hidden_size": vision_hidden, "depth": vision_depth,
        "num_heads": vision_heads, "intermediate_size": vision_intermediate or 3 * text_hidden,
        "out_hidden_size": text_hidden, "image_size": image_size, "patch_size": 14,
        "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3,
        "rms_norm_eps": 1e-5, "attention_bias": False, "hidden_act": "silu",
    }
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    config: dict[str, Any] = {
        "architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v",
        "image_token_id": ids["<|image|>"], "video_token_id": ids["<|video|>"],
        "image_start_token_id": ids["<|begin_of_image|>"],
        "image_end_token_id": ids["<|end_of_image|>"],
        "video_start_token_id": ids["<|begin_of_video|>"],
        "video_end_token_id": ids["<|end_of_video|>"],
        "tie_word_embeddings": False, "eos_token_id": eos,
        "torch_dtype": str(torch_dtype).removeprefix("torch."),
    }
    if config_format == "nested":
        config["text_config"] = {"model_type": "glm4v_text", **text, "rope_parameters": rope,
                                 "eos_token_id": eos}
    else:  # 4.53-era convert script: text fields on top, rope_scaling for the sections
        config.update(text)
        config.update({"rope_theta": rope["rope_theta"], "partial_rotary_factor": 0.5,
                       "rope_scaling": {"type": "default", "mrope_section": section}})
    config["vision_config"] = vision
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"], "do_sample": True,
                  "temperature": 1.0, "top_k": 2, "top_p": 0.6, "max_new_tokens": 8192}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n",
                                                encoding="utf-8")

    parsed = Glm4vConfig.from_dict(config, source=str(out / "config.json"))
    _write_weights(out, parsed, torch_dtype, shards, seed)
    return out


def _write_tokenizer_assets(out: Path, vocab_size: int) -> dict[str, int]:
    try:
        from .tiny_assets import write_tokenizer_assets
    except ImportError:  # processor package not available: config + weights only
        logger.info("glmv_agent.glm4v.tiny_assets not available; writing no tokenizer files")
        return special_token_ids(vocab_size)
    ids = dict(special_token_ids(vocab_size))
    ids.update(write_tokenizer_assets(out, vocab_size))
    return ids


def _init_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    if name.endswith("bias"):
        return 0.02 * torch.randn(shape, generator=generator)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    std = max(0.02, fan_in ** -0.5)  # 0.02 at real width, O(1) activations when tiny
    return std * torch.randn(shape, generator=generator)


def _write_weights(out: Path, config: Glm4vConfig, dtype: torch.dtype, shards: int,
                   seed: int) -> None:
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = [(n, tuple(p.shape)) for n, p in Glm4vModel(config).named_parameters()]
    generator = torch.Generator().manual_seed(seed)
    sizes = [math.prod(s) for _, s in shapes]
    shards = max(1, min(shards, len(shapes)))
    per_shard = sum(sizes) / shards
    groups: list[list[int]] = [[] for _ in range(shards)]
    running = 0
    for i, size in enumerate(sizes):  # contiguous groups of roughly equal bytes
        groups[min(shards - 1, int(running // per_shard))].append(i)
        running += size
    groups = [g for g in groups if g]
    names = ([SINGLE_FILE] if len(groups) == 1 else
             [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))])
    weight_map: dict[str, str] = {}
    total = 0
    for file_name, group in zip(names, groups):
        tensors = {}
        for i in group:
            name, shape = shapes[i]
            tensors[name] = _init_tensor(name, shape, generator).to(dtype).contiguous()
            weight_map[name] = file_name
            total += tensors[name].numel() * tensors[name].element_size()
        save_file(tensors, str(out / file_name), metadata={"format": "pt"})
        del tensors
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random GLM-4.1V checkpoint.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--real-width", action="store_true",
                        help="real GLM-4.1V-9B widths (4096 hidden, vocab 151552) with few layers")
    parser.add_argument("--layers", type=int, default=None,
                        help="text layers and vision blocks (default 2)")
    parser.add_argument("--dtype", default=None, help="float32 | bf16 | fp16")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flat", action="store_true", help="write the flat 4.53-era config.json")
    args = parser.parse_args(argv)
    layers = args.layers or 2
    options: dict[str, Any] = {"text_layers": layers, "vision_depth": layers,
                               "shards": args.shards, "seed": args.seed,
                               "config_format": "flat" if args.flat else "nested"}
    if args.real_width:
        options.update(text_hidden=4096, heads=32, kv_heads=2, intermediate=13696,
                       vision_hidden=1536, vision_heads=12, vision_intermediate=13696,
                       vocab_size=151552, image_size=336, dtype=args.dtype or "bfloat16")
    elif args.dtype:
        options["dtype"] = args.dtype
    path = write_tiny_checkpoint(args.out_dir, **options)
    print(path)


if __name__ == "__main__":
    main()
