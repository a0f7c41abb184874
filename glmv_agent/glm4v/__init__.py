"""In-process GLM-4.1V engine: config, weights loading, vision tower, text decoder, KV cache.

Names resolve lazily so `import glmv_agent.glm4v` does not import torch until a model
piece is actually used (the processor side works without it).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "load_model": ".loading",
    "Glm4vModel": ".model",
    "KVCache": ".kv_cache",
    "Glm4vConfig": ".config",
    "TextConfig": ".config",
    "VisionConfig": ".config",
    "get_rope_index": ".rope",
    "write_tiny_checkpoint": ".tiny",
    "load_processor": ".processor",
    "Glm4vProcessor": ".processor",
    "Glm4vTokenizer": ".tokenizer",
    "StreamDecoder": ".tokenizer",
    "write_tokenizer_assets": ".tiny_assets",
    "smart_resize": ".image_processing",
    "Glm4vImageProcessor": ".image_processing",
    "Glm4vVideoProcessor": ".video_processing",
    "load": ".engine",
    "Glm4vEngine": ".engine",
    "GenerationConfig": ".generation",
    "GenerationResult": ".generation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glmv_agent.glm4v' has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)


__all__ = list(_LAZY)
