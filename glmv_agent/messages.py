"""The chat-message format shared by dialects and backends.

Messages follow the Hugging Face multimodal chat layout, so the local engine can render
them with the checkpoint's own chat template and the OpenAI backend can translate them:

    {"role": "user", "content": [
        {"type": "image", "image": <PIL.Image.Image>},
        {"type": "text", "text": "..."},
    ]}

`content` may also be a plain string. Roles: "system", "user", "assistant".
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypedDict, Union, cast

from PIL import Image

from .errors import InputError

Role = Literal["system", "user", "assistant"]


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ImagePart(TypedDict):
    type: Literal["image"]
    image: Image.Image


Part = Union[TextPart, ImagePart, dict[str, Any]]


class Message(TypedDict):
    role: Role
    content: Union[str, list[Part]]


def text(value: str) -> TextPart:
    return {"type": "text", "text": value}


def image(value: Image.Image) -> ImagePart:
    return {"type": "image", "image": value}


def message(role: Role, *parts: Part | str) -> Message:
    """Build a message; bare strings become text parts."""
    content: list[Part] = [text(p) if isinstance(p, str) else p for p in parts]
    return {"role": role, "content": content}


# The chat template's structural tokens: roles, media placeholders, the prompt prefix
# (`[gMASK]<sop>`), end of text, `/nothink` (special in the GLM-4.5V tokenizer), any other
# `<|name|>` token. Kept: the grounding-box markers, which answers legitimately contain.
_STRUCTURAL_TOKEN = re.compile(
    r"<\|(?!(?:begin|start|end)_of_box\|>)[A-Za-z0-9_]+\|>|\[[gs]?MASK\]|<[se]op>|/nothink")
ZERO_WIDTH_SPACE = "\u200b"


def inert_text(value: str) -> str:
    """`value` with every structural chat-template token broken (a zero-width space after
    its first character), so it reaches the model as the same-looking plain text.

    Model answers (echoed in re-asks and history) and page or screen text end up inside
    prompts; a literal `<|image|>` there would claim an image that was never sent, and a
    `<|user|>` would open a turn. `<|begin_of_box|>`, `<think>`, `<answer>` are left alone:
    the answer format uses them and the tokenizer treats the tags as plain text anyway.
    """
    return _STRUCTURAL_TOKEN.sub(lambda m: m.group()[0] + ZERO_WIDTH_SPACE + m.group()[1:], value)


def validate_messages(messages: list[Message]) -> None:
    """Raise InputError naming the first malformed message or part."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant"):
            raise InputError(
                f"message {i} must be a dict with role 'system', 'user' or 'assistant'; got {msg!r:.200}"
            )
        content = msg.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise InputError(f"message {i}: content must be a string or a list of parts")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind in ("image", "video") and part.get(kind) is not None:
                continue
            raise InputError(
                f"message {i} part {j}: expected {{'type': 'text', 'text': str}} or "
                f"{{'type': 'image', 'image': ...}}; got {part!r:.200}"
            )


def images_in(messages: list[Message]) -> list[Any]:
    """Every image part's payload, in order of appearance."""
    found: list[Any] = []
    for msg in messages:
        if isinstance(msg["content"], list):
            # mypy cannot narrow the Part union on .get("type"); a part of type "image" is an ImagePart.
            found.extend(cast(ImagePart, p)["image"] for p in msg["content"] if p.get("type") == "image")
    return found
