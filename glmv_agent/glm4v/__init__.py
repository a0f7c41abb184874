"""In-process GLM-4.1V engine: config, weights loading, vision tower, text decoder, KV cache.

Names resolve lazily so `import glmv_agent.glm4v` does not import torch until a model
piece is actually used (the processor side works without it).
"""

from __future__ import annotations

import re

from .._lazy import lazy_getattr
from ..errors import ConfigError

# The oldest torch the engine runs on: text attention calls
# F.scaled_dot_product_attention(..., enable_gqa=True), new in torch 2.5. pyproject's
# `local` extra says the same (tests/e2e/test_newcomer.py keeps the two equal).
MIN_TORCH = "2.5"


def require_torch(version: str | None = None) -> None:
    """ConfigError unless `version` (default: the installed torch's) is at least MIN_TORCH."""
    if version is None:
        import torch

        version = torch.__version__
    found = re.match(r"(\d+)\.(\d+)", version)
    floor = tuple(int(part) for part in MIN_TORCH.split("."))
    if found is None or tuple(int(part) for part in found.groups()) < floor:
        raise ConfigError(
            f"the GLM-4.1V engine needs torch >= {MIN_TORCH}, found {version}; "
            f'pip install "torch>={MIN_TORCH}" (the build for your hardware)'
        )

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


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["MIN_TORCH", "require_torch", *_LAZY]
