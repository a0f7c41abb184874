"""GLM-4.1V configuration read from a checkpoint's config.json.

Accepts both shapes found in the wild: the nested one transformers 5.x writes
(`text_config` + `vision_config`) and the flat 4.53-era one (text fields at the top level,
`rope_scaling` instead of `rope_parameters`). Every token id is read from the file, because
the GLM-4.5/4.6V family uses different ids than GLM-4.1V.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SUPPORTED_MODEL_TYPES = ("glm4v", "glm46v")
_SUPPORTED_ACTS = ("silu",)
_MISSING = object()


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0
    mrope_section: tuple[int, int, int] = (8, 12, 12)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    depth: int
    num_heads: int
    intermediate_size: int  # merger MLP width only
    out_hidden_size: int  # downsample output and every block MLP width
    image_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclass(frozen=True)
class Glm4vConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    video_start_token_id: int
    video_end_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    model_type: str = "glm4v"
    torch_dtype: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "Glm4vConfig":
        """Read `config.json` (a file, or a checkpoint directory that holds one)."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"{file}: config.json not found; point at a checkpoint directory "
                              "with the Hugging Face layout (config.json + safetensors)")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a JSON object at the top level")
        generation = _read_optional_json(file.parent / "generation_config.json")
        return cls.from_dict(data, source=str(file), generation_config=generation)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config.json",
                  generation_config: dict[str, Any] | None = None) -> "Glm4vConfig":
        reader = _Reader(data, source)
        model_type = reader.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{source}: unsupported model_type {model_type!r}; this engine runs "
                              f"GLM-4.1V-style checkpoints ({', '.join(SUPPORTED_MODEL_TYPES)})")
        nested = "text_config" in data
        text_reader = reader.sub("text_config") if nested else reader
        vision_reader = reader.sub("vision_config")
        text = _text_config(text_reader)
        vision = _vision_config(vision_reader)
        if vision.out_hidden_size != text.hidden_size:
            raise ConfigError(f"{source}: vision_config.out_hidden_size ({vision.out_hidden_size}) "
                              f"must equal the text hidden_size ({text.hidden_size})")

        eos = _first_present(data, text_reader.data, generation_config or {}, key="eos_token_id")
        if eos is None:
            raise ConfigError(f"{source}: missing required field 'eos_token_id' (looked in "
                              "config.json, its text_config and generation_config.json)")
        eos_ids = tuple(int(i) for i in (eos if isinstance(eos, list) else [eos]))
        pad = _first_present(data, text_reader.data, generation_config or {}, key="pad_token_id")
        tie = bool(data.get("tie_word_embeddings", text_reader.data.get("tie_word_embeddings", False)))
        dtype = data.get("torch_dtype", data.get("dtype", text_reader.data.get("dtype")))
        return cls(
            text=text,
            vision=vision,
            image_token_id=reader.int("image_token_id"),
            video_token_id=reader.int("video_token_id"),
            image_start_token_id=reader.int("image_start_token_id"),
            image_end_token_id=reader.int("image_end_token_id"),
            video_start_token_id=reader.int("video_start_token_id"),
            video_end_token_id=reader.int("video_end_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=None if pad is None else int(pad),
            tie_word_embeddings=tie,
            model_type=model_type,
            torch_dtype=dtype if isinstance(dtype, str) else None,
        )


class _Reader:
    """Typed access to one JSON object; errors name the field and the file."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _MISSING:
            raise ConfigError(f"{self.source}: missing required field {self._name(key)!r}")
        return default

    def int(self, key: str, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
            value = value[0]  # image_size/patch_size may be written as [n, n]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.source}: field {self._name(key)!r} must be an integer, "
                              f"got {value!r}")
        return value

    def float(self, key: str, default: Any = _MISSING) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.source}: field {self._name(key)!r} must be a number, "
                              f"got {value!r}")
        return float(value)

    def sub(self, key: str) -> "_Reader":
        value = self.get(key)
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: field {self._name(key)!r} must be an object")
        return _Reader(value, self.source, f"{self._name(key)}.")

    def check_act(self, key: str) -> None:
        act = self.get(key, "silu")
        if act not in _SUPPORTED_ACTS:
            raise ConfigError(f"{self.source}: {self._name(key)}={act!r} is not supported "
                              "(GLM-4.1V uses 'silu')")


def _text_config(r: _Reader) -> TextConfig:
    r.check_act("hidden_act")
    # 5.x folds rope fields into rope_parameters; 4.5x used rope_scaling + top-level keys.
    rope = r.data.get("rope_parameters") or r.data.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"{r.source}: {r.prefix}rope_parameters must be an object")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise ConfigError(f"{r.source}: rope type {rope_type!r} is not supported "
                          "(GLM-4.1V uses the default multimodal RoPE)")
    theta = rope.get("rope_theta", r.data.get("rope_theta", 10000.0))
    # Missing partial_rotary_factor means 1.0 in transformers; do not guess 0.5.
    partial = rope.get("partial_rotary_factor", r.data.get("partial_rotary_factor", 1.0))
    section = rope.get("mrope_section", [8, 12, 12])
    heads = r.int("num_attention_heads")
    config = TextConfig(
        vocab_size=r.int("vocab_size"),
        hidden_size=r.int("hidden_size"),
        intermediate_size=r.int("intermediate_size"),
        num_layers=r.int("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=r.int("num_key_value_heads", 2),  # transformers' default
        rms_norm_eps=r.float("rms_norm_eps", 1e-5),
        rope_theta=float(theta),
        partial_rotary_factor=float(partial),
        mrope_section=tuple(int(s) for s in section),  # type: ignore[arg-type]
    )
    if config.hidden_size % heads or heads % config.num_kv_heads:
        raise ConfigError(f"{r.source}: hidden_size {config.hidden_size}, num_attention_heads "
                          f"{heads} and num_key_value_heads {config.num_kv_heads} are inconsistent "
                          "(hidden must divide by heads, heads by kv heads)")
    if len(config.mrope_section) != 3 or 2 * sum(config.mrope_section) != config.rotary_dim:
        raise ConfigError(f"{r.source}: mrope_section {list(config.mrope_section)} must have 3 "
                          f"entries summing to rotary_dim/2 = {config.rotary_dim // 2} "
                          f"(head_dim {config.head_dim} x partial_rotary_factor {partial})")
    return config


def _vision_config(r: _Reader) -> VisionConfig:
    r.check_act("hidden_act")
    rope = r.data.get("rope_parameters") or {}
    config = VisionConfig(
        hidden_size=r.int("hidden_size"),
        depth=r.int("depth"),
        num_heads=r.int("num_heads"),
        intermediate_size=r.int("intermediate_size"),
        out_hidden_size=r.int("out_hidden_size"),
        image_size=r.int("image_size"),
        patch_size=r.int("patch_size", 14),
        temporal_patch_size=r.int("temporal_patch_size", 2),
        spatial_merge_size=r.int("spatial_merge_size", 2),
        in_channels=r.int("in_channels", 3),
        rms_norm_eps=r.float("rms_norm_eps", 1e-5),
        attention_bias=bool(r.get("attention_bias", False)),
        rope_theta=float(rope.get("rope_theta", 10000.0)) if isinstance(rope, dict) else 10000.0,
    )
    if config.hidden_size % config.num_heads:
        raise ConfigError(f"{r.source}: vision_config.hidden_size {config.hidden_size} is not "
                          f"divisible by vision_config.num_heads {config.num_heads}")
    if config.image_size % config.patch_size:
        raise ConfigError(f"{r.source}: vision_config.image_size {config.image_size} is not a "
                          f"multiple of patch_size {config.patch_size}")
    return config


def _first_present(*sources: dict[str, Any], key: str) -> Any:
    for source in sources:
        if source.get(key) is not None:
            return source[key]
    return None


def _read_optional_json(file: Path) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read JSON ({exc})") from exc
    return data if isinstance(data, dict) else None
