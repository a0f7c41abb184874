"""Inference backends: messages in, text out.

`make_backend` turns what a user typed (an OpenAI-compatible URL, a checkpoint directory,
a replay file) into a backend; heavy backends are imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Backend, BackendProtocol, GenerationParams, ProtocolBackend

__all__ = ["Backend", "BackendProtocol", "GenerationParams", "ProtocolBackend", "make_backend"]


def make_backend(model: BackendProtocol | str | Path, *, model_name: str | None = None,
                 **options: Any) -> Backend:
    """A backend for `model`.

    * a `Backend` instance is returned as is;
    * any other object with `complete(messages, **params) -> str` (`BackendProtocol`) is
      wrapped in a `ProtocolBackend`;
    * `http://...` / `https://...`: an OpenAI-compatible server (`model_name` required);
    * a `.json` / `.jsonl` file: recorded answers replayed in order;
    * a directory: a Hugging Face checkpoint run in-process by the local engine.
    """
    if isinstance(model, Backend):
        return model
    if isinstance(model, BackendProtocol) and callable(model.complete):
        return ProtocolBackend(model)
    if not isinstance(model, (str, Path)):
        raise ConfigError(
            "model must be a Backend or an object with a complete(messages, **params) -> str "
            f"method, an OpenAI-compatible URL or a checkpoint path; got {type(model).__name__}"
        )
    text = str(model)
    if text.startswith(("http://", "https://")):
        if not model_name:
            raise ConfigError(
                f"model_name is required with an OpenAI-compatible URL ({text}): pass the "
                "served model's name, e.g. model_name='glm-4.5v' (see GET {url}/models)"
            )
        from .openai import OpenAIBackend

        return OpenAIBackend(text, model_name, **options)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        from .replay import ReplayBackend

        return ReplayBackend.from_file(path)
    if path.is_dir():
        from .local import LocalBackend  # torch is imported only here

        return LocalBackend(path, **options)
    raise ConfigError(
        f"cannot use {text!r} as a model: it is not an http(s) URL, a replay .json/.jsonl "
        "file or an existing checkpoint directory"
    )
