"""Backend that runs GLM-4.1V in-process on our own PyTorch engine (`glmv_agent.glm4v`).

The checkpoint is loaded once, when the backend is created, and reused for every step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..messages import Message
from .base import Backend, GenerationParams

logger = logging.getLogger(__name__)

_PARAM_NAMES = {f.name for f in dataclasses.fields(GenerationParams)}
# Engine options a caller may pass besides GenerationParams (see GenerationConfig).
_ENGINE_OPTIONS = {"do_sample", "thinking_budget", "seed", "keep_special_tokens", "stop_strings"}
_WEIGHT_HINT = "see model/README.md for how to download GLM-4.1V-9B-Thinking into model/"


def _check_checkpoint(path: Path) -> None:
    """Fail early, with a hint, when the directory is not a complete checkpoint."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist; {_WEIGHT_HINT}")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json, so it is not a model checkpoint; {_WEIGHT_HINT}")
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"{path} has no *.safetensors weights (only config files were found); {_WEIGHT_HINT}"
        )
    if not (path / "tokenizer.json").is_file():
        raise CheckpointError(f"{path} has no tokenizer.json; {_WEIGHT_HINT}")


class LocalBackend(Backend):
    """`complete`/`stream` on the in-process engine.

    path_or_engine: a checkpoint directory, or an already loaded `Glm4vEngine` to share.
    defaults: GenerationParams-style defaults for every call (e.g. temperature=0,
    max_new_tokens=1024), plus engine options such as thinking_budget or seed.
    quantize: None, "int8" or "int4" (weight-only, see glmv_agent.glm4v.quantize).
    compile: compile the decode step at load (see glmv_agent.glm4v.compiled).
    """

    name = "local"

    def __init__(self, path_or_engine: Any = "model", *, device: str = "auto", dtype: Any = None,
                 quantize: str | None = None, compile: bool = False, **defaults: Any) -> None:
        from ..glm4v.engine import Glm4vEngine, load  # torch is imported only here

        if isinstance(path_or_engine, Glm4vEngine):
            self.engine: Glm4vEngine | None = path_or_engine
        else:
            path = Path(path_or_engine)
            _check_checkpoint(path)
            self.engine = load(path, device=device, dtype=dtype, quantize=quantize,
                               compile=compile)
        self.defaults = defaults
        # The last call's GenerationResult (prefill time, cached tokens; the agent's step
        # timings read it), None before the first call or while a stream runs.
        self.last_result: Any = None
        self._options({})  # validate the defaults now, not at the first step

    def _options(self, params: dict[str, Any]) -> dict[str, Any]:
        """GenerationParams fields -> engine options."""
        merged = {**self.defaults, **params}
        extra = dict(merged.pop("extra", None) or {})
        unknown = set(merged) - _PARAM_NAMES - _ENGINE_OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown generation parameter(s) {sorted(unknown)}; use GenerationParams fields "
                f"{sorted(_PARAM_NAMES - {'extra'})} or engine options {sorted(_ENGINE_OPTIONS)}"
            )
        if merged.pop("timeout", None) is not None:
            logger.debug("local backend ignores timeout (generation runs in-process)")
        skip = merged.pop("skip_special_tokens", None)
        if skip is not None:
            merged.setdefault("keep_special_tokens", not skip)
        options = {k: v for k, v in merged.items() if v is not None}
        options.update(extra)
        if not options.get("stop"):
            options.pop("stop", None)
        engine = self._engine()
        engine.generation_config(**{k: v for k, v in options.items() if k != "enable_thinking"})
        return options

    def _engine(self) -> Any:
        if self.engine is None:
            raise ConfigError("this LocalBackend was closed; create a new one")
        return self.engine

    def complete(self, messages: list[Message], **params: Any) -> str:
        self.last_result = None
        self.last_result = self._engine().generate(messages, **self._options(params))
        return self.last_result.text

    def stream(self, messages: list[Message], **params: Any) -> Iterator[str]:
        self.last_result = None
        holder: list[Any] = []
        deltas = self._engine().stream(messages, result_holder=holder, **self._options(params))
        return self._recorded(deltas, holder)

    def _recorded(self, deltas: Iterator[str], holder: list[Any]) -> Iterator[str]:
        yield from deltas
        self.last_result = holder[0] if holder else None

    def close(self) -> None:
        self.engine = None
