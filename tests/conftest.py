"""Shared fixtures: tiny random GLM-4.1V checkpoints with the real file layout.

The real 9B weights cannot run here (no GPU, 20 GB); these checkpoints keep every real key
name, the real config shape and real safetensors shards, only the widths are tiny.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32, nested (transformers 5.x) config.json, two shards + index."""
    from glmv_agent.glm4v.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_fp32"), dtype="float32",
                                 shards=2, config_format="nested")


@pytest.fixture(scope="session")
def tiny_checkpoint_bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture stored in bf16, as the real checkpoints are."""
    from glmv_agent.glm4v.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_bf16"), dtype="bfloat16",
                                 shards=2, config_format="nested", seed=1)
