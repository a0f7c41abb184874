"""Chat messages -> model inputs for GLM-4.1V (the job of transformers' `Glm4vProcessor`).

`load_processor(path)` reads a checkpoint directory. Calling the processor renders the
checkpoint's chat template, expands every `<|image|>` to one token per merged 2x2 patch
block and every `<|video|>` to per-slice `<|begin_of_image|>...<|end_of_image|>` groups
followed by the slice's timestamp, tokenizes, pads the batch, and returns torch tensors.

Message parts accepted: `{"type": "text", "text": ...}`, `{"type": "image", "image": ...}`
(also under `"url"`/`"path"`, or OpenAI's `{"type": "image_url", "image_url": {"url": ...}}`)
and `{"type": "video", "video": path | frames, "fps": ...}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from .chat_template import load_chat_template, render_chat_template
from .image_processing import Glm4vImageProcessor
from .tokenizer import Glm4vTokenizer
from .video_processing import Glm4vVideoProcessor

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<|image|>"
VIDEO_TOKEN = "<|video|>"
BEGIN_IMAGE = "<|begin_of_image|>"
END_IMAGE = "<|end_of_image|>"
BEGIN_VIDEO = "<|begin_of_video|>"
END_VIDEO = "<|end_of_video|>"

TimestampStyle = Literal["glm41v", "glm46v"]


@dataclass
class _Media:
    """Media payloads pulled out of the messages, in order of appearance."""

    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    video_fps: list[float | None] = field(default_factory=list)


def _image_payload(part: Mapping[str, Any]) -> Any:
    if part.get("type") == "image_url":
        value = part.get("image_url")
        return value.get("url") if isinstance(value, Mapping) else value
    for key in ("image", "url", "path"):
        if part.get(key) is not None:
            return part[key]
    return None


def _canonical_content(content: Any, media: _Media, where: str) -> Any:
    """Text stays text; media parts become bare {'type': ...} and their payload goes to `media`."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InputError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image", "image_url"):
            payload = _image_payload(part)
            if payload is None:
                raise InputError(f"{where} part {j}: image part has no 'image', 'url' or 'path'")
            media.images.append(payload)
            parts.append({"type": "image"})
        elif kind == "video":
            payload = next((part[k] for k in ("video", "url", "path") if part.get(k) is not None), None)
            if payload is None:
                raise InputError(f"{where} part {j}: video part has no 'video', 'url' or 'path'")
            media.videos.append(payload)
            media.video_fps.append(part.get("fps"))
            parts.append({"type": "video"})
        else:
            raise InputError(
                f"{where} part {j}: expected a text, image, image_url or video part; got {str(part)[:200]}"
            )
    return parts


def _canonical_conversation(messages: Any, media: _Media, index: int) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InputError(f"conversation {index} must be a non-empty list of messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InputError(f"conversation {index} message {i} must be a dict with a 'role'; got {str(message)[:200]}")
        copy = dict(message)
        copy["content"] = _canonical_content(message.get("content"), media, f"conversation {index} message {i}")
        out.append(copy)
    return out


def _expand(text: str, token: str, replacements: list[str], what: str) -> tuple[str, int]:
    """Replace each `token` in `text` with the next replacement; returns the rest count used."""
    pieces = text.split(token)
    count = len(pieces) - 1
    if count > len(replacements):
        raise InputError(
            f"the prompt has more {token} placeholders than {what} given ({count} > {len(replacements)}); "
            f"remove literal {token} from the text"
        )
    out = [pieces[0]]
    for k in range(count):
        out.append(replacements[k])
        out.append(pieces[k + 1])
    return "".join(out), count


def _read_json_if(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    return value if isinstance(value, dict) else {}


class Glm4vProcessor:
    """Tokenizer + chat template + image and video processors of one checkpoint."""

    def __init__(
        self,
        tokenizer: Glm4vTokenizer,
        image_processor: Glm4vImageProcessor,
        video_processor: Glm4vVideoProcessor,
        chat_template: str | None,
        timestamp_style: TimestampStyle = "glm41v",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.video_processor = video_processor
        self.chat_template = chat_template
        self.timestamp_style = timestamp_style
        self.image_token_id = tokenizer.special_token_id(IMAGE_TOKEN)
        self.video_token_id = tokenizer.special_token_id(VIDEO_TOKEN)
        self.image_start_token_id = tokenizer.special_token_id(BEGIN_IMAGE)
        self.image_end_token_id = tokenizer.special_token_id(END_IMAGE)
        self.video_start_token_id = tokenizer.special_token_id(BEGIN_VIDEO)
        self.video_end_token_id = tokenizer.special_token_id(END_VIDEO)

    # ------------------------------------------------------------------ properties
    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.tokenizer.eos_token_ids)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: Sequence[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = False) -> list[str]:
        if isinstance(rows, torch.Tensor):
            rows = rows.tolist()
        return [self.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    # ------------------------------------------------------------------ text
    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: bool | None = None,
        **template_kwargs: Any,
    ) -> str:
        """Render one conversation (media parts as bare placeholders) to prompt text."""
        if self.chat_template is None:
            raise CheckpointError("this checkpoint has no chat template; add chat_template.jinja to its directory")
        special = {"eos_token": self.tokenizer.eos_token, "pad_token": self.tokenizer.pad_token}
        return render_chat_template(
            self.chat_template, messages, add_generation_prompt=add_generation_prompt,
            special_tokens=special, enable_thinking=enable_thinking, **template_kwargs,
        )

    def _frame_text(self, timestamp: float, num_tokens: int) -> str:
        stamp = f"{timestamp:.1f} seconds" if self.timestamp_style == "glm46v" else str(int(timestamp))
        return f"{BEGIN_IMAGE}{IMAGE_TOKEN * num_tokens}{END_IMAGE}{stamp}"

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: bool | None = None,
        padding_side: Literal["left", "right"] = "left",
        return_tensors: Literal["pt", "np"] = "pt",
        **template_kwargs: Any,
    ) -> dict[str, Any]:
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pt", "np"):
            raise InputError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if not isinstance(messages, list) or not messages:
            raise InputError("messages must be a non-empty list of messages (or a list of conversations)")
        batch = messages if isinstance(messages[0], list) else [messages]

        media = _Media()
        texts = []
        for index, conversation in enumerate(batch):
            canonical = _canonical_conversation(conversation, media, index)
            texts.append(
                self.apply_chat_template(
                    canonical, add_generation_prompt=add_generation_prompt,
                    enable_thinking=enable_thinking, **template_kwargs,
                )
            )

        merge = self.image_processor.config.merge_size ** 2
        out: dict[str, Any] = {
            "pixel_values": None, "image_grid_thw": None,
            "pixel_values_videos": None, "video_grid_thw": None,
        }
        image_texts: list[str] = []
        if media.images:
            images = self.image_processor(media.images)
            out["pixel_values"] = torch.from_numpy(np.ascontiguousarray(images.pixel_values))
            out["image_grid_thw"] = torch.from_numpy(images.image_grid_thw)
            image_texts = [IMAGE_TOKEN * (int(np.prod(g)) // merge) for g in images.image_grid_thw]
        video_texts: list[str] = []
        if media.videos:
            videos = self.video_processor(media.videos, fps=media.video_fps)
            out["pixel_values_videos"] = videos.pixel_values_videos
            out["video_grid_thw"] = videos.video_grid_thw
            for (t, h, w), stamps in zip(videos.video_grid_thw.tolist(), videos.timestamps):
                per_slice = h * w // merge
                video_texts.append("".join(self._frame_text(s, per_slice) for s in stamps[:t]))

        used_images = used_videos = 0
        expanded = []
        for text in texts:
            text, n = _expand(text, IMAGE_TOKEN, image_texts[used_images:], "images")
            used_images += n
            text, n = _expand(text, VIDEO_TOKEN, video_texts[used_videos:], "videos")
            used_videos += n
            expanded.append(text)
        if used_images != len(image_texts) or used_videos != len(video_texts):
            raise InputError(
                f"the chat template rendered {used_images} image and {used_videos} video placeholders for "
                f"{len(image_texts)} images and {len(video_texts)} videos; the template must render every media part"
            )

        rows = self.tokenizer.encode_batch(expanded)
        out.update(self._pad(rows, padding_side))
        if return_tensors == "np":
            out = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
        return out

    def _pad(self, rows: list[list[int]], padding_side: str) -> dict[str, torch.Tensor]:
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": self.mm_token_type_ids(ids)}

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """0 text, 1 image token, 2 image token inside a video span (transformers' rule)."""
        starts = torch.cumsum(input_ids == self.video_start_token_id, dim=-1)
        ends = torch.cumsum(input_ids == self.video_end_token_id, dim=-1)
        in_video = starts > ends
        is_image = input_ids == self.image_token_id
        types = torch.zeros_like(input_ids)
        types[is_image & ~in_video] = 1
        types[is_image & in_video] = 2
        return types


def _timestamp_style(directory: Path) -> TimestampStyle:
    """GLM-4.6V checkpoints name themselves in one of these files; everything else is 4.1V."""
    names = [
        _read_json_if(directory / "preprocessor_config.json").get("processor_class"),
        _read_json_if(directory / "video_preprocessor_config.json").get("video_processor_type"),
        _read_json_if(directory / "processor_config.json").get("processor_class"),
        _read_json_if(directory / "config.json").get("model_type"),
    ]
    return "glm46v" if any(str(n or "").lower().startswith("glm46v") for n in names) else "glm41v"


def load_processor(path: str | Path, chat_template_name: str | None = None) -> Glm4vProcessor:
    """Build the processor of the checkpoint directory at `path`."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
    tokenizer = Glm4vTokenizer(directory)
    try:
        template: str | None = load_chat_template(directory, chat_template_name)
    except CheckpointError:
        if chat_template_name is not None:
            raise
        logger.warning("no chat template in %s; the processor can only decode", directory)
        template = None
    style = _timestamp_style(directory)
    video = Glm4vVideoProcessor.from_pretrained(directory, sampling=style)
    return Glm4vProcessor(tokenizer, Glm4vImageProcessor.from_pretrained(directory), video, template, style)
