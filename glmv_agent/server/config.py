"""What an operator can set on `glmv-agent serve`, checked before anything is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_CONTEXT_LENGTH = 65536  # GLM-4.1V-9B's max_position_embeddings


@dataclass
class ServerConfig:
    """Limits and policies of one server. `validate()` says what is wrong, flag by flag."""

    model_name: str
    api_key: str | None = None
    max_queue: int = 8  # requests admitted (preprocessing, waiting or generating) before 503
    max_batch: int = 4  # requests decoded together
    batch_wait_s: float = 0.05  # an idle engine waits this long for requests still being preprocessed
    default_max_tokens: int = 2048  # when a request sends no max_tokens (clipped to the context)
    max_tokens_limit: int = 32768
    context_length: int = DEFAULT_CONTEXT_LENGTH  # prompt + new tokens must fit
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024  # one encoded image (data URL or download)
    max_request_pixels: int = 40_000_000  # decoded pixels of all images of one request
    allow_remote_images: bool = False
    fetch_timeout_s: float = 10.0  # whole download of one remote image, redirects included
    max_redirects: int = 3
    header_timeout_s: float = 10.0  # to receive a request's line and headers
    body_timeout_s: float = 30.0  # to receive its body
    keep_alive_s: int = 5
    max_connections: int = 128  # open sockets before uvicorn answers 503

    def validate(self) -> None:
        if not self.model_name:
            raise ConfigError("the model name must not be empty (--model-name)")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key must not be empty; pass --api-key KEY or leave it unset")
        positive = {
            "--max-queue": self.max_queue, "--max-batch": self.max_batch,
            "--default-max-tokens": self.default_max_tokens, "--max-model-len": self.context_length,
            "--max-body-mb": self.max_body_bytes, "--max-request-pixels": self.max_request_pixels,
            "max_image_bytes": self.max_image_bytes, "max_tokens_limit": self.max_tokens_limit,
            "max_connections": self.max_connections,
        }
        for flag, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if self.max_batch > self.max_queue:
            raise ConfigError(f"--max-batch ({self.max_batch}) cannot exceed --max-queue "
                              f"({self.max_queue}): a batch is made of admitted requests")
        if not 0 <= self.batch_wait_s < float("inf"):
            raise ConfigError(f"--batch-wait-ms must be >= 0, got {self.batch_wait_s * 1000:g}")
        for name, seconds in (("fetch_timeout_s", self.fetch_timeout_s),
                              ("header_timeout_s", self.header_timeout_s),
                              ("body_timeout_s", self.body_timeout_s)):
            if not seconds > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {seconds!r}")


def checkpoint_context_length(directory: str | Path | None) -> int:
    """max_position_embeddings from a checkpoint's config.json (text_config or top level)."""
    if directory is None:
        return DEFAULT_CONTEXT_LENGTH
    try:
        data = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return DEFAULT_CONTEXT_LENGTH
    text = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}
    value = text.get("max_position_embeddings", data.get("max_position_embeddings"))
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_CONTEXT_LENGTH
