"""GLM tokenizer on the `tokenizers` library, read from a checkpoint's `tokenizer.json`.

Encoding never adds special tokens of its own: GLM chat templates already start with
`[gMASK]<sop>`. Decoding can keep or drop special tokens; `<think>`/`<answer>` tags are not
special in GLM-4.1V, box markers are, so pass `skip_special_tokens=False` to keep those.
`StreamDecoder` turns a stream of token ids into text deltas without ever emitting half a
UTF-8 character.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

# Stop ids when a checkpoint names none: <|endoftext|>, <|user|>, <|observation|>.
DEFAULT_EOS_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}; re-download or regenerate the file") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return value


def _token_name(value: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or as AddedToken dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class Glm4vTokenizer:
    """A loaded `tokenizer.json` plus the bits of config that say which ids matter."""

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        path = self.directory / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(
                f"no tokenizer.json in {self.directory}; a GLM checkpoint directory needs one "
                "(copy it from the model repository)"
            )
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception
            raise CheckpointError(f"cannot load {path}: {exc}") from exc
        cfg_path = self.directory / "tokenizer_config.json"
        self.config: dict[str, Any] = _read_json(cfg_path) if cfg_path.is_file() else {}
        self._special_ids = {
            tok.content: token_id for token_id, tok in self._tok.get_added_tokens_decoder().items() if tok.special
        }
        self.eos_token = _token_name(self.config.get("eos_token")) or "<|endoftext|>"
        self.pad_token = _token_name(self.config.get("pad_token")) or self.eos_token
        self.pad_token_id = self._required_id(self.pad_token)
        self.eos_token_id = self._required_id(self.eos_token)
        self.padding_side: str = self.config.get("padding_side", "left")
        self.eos_token_ids = self._read_eos_ids()

    # ------------------------------------------------------------------ ids and names
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer knows, added tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def _required_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"token {token!r} is missing from {self.directory / 'tokenizer.json'}")
        return token_id

    def special_token_id(self, token: str) -> int:
        """Id of a named special/added token such as '<|image|>'; CheckpointError if absent."""
        return self._required_id(token)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Tokens marked special (dropped by skip_special_tokens), by content."""
        return dict(self._special_ids)

    def _read_eos_ids(self) -> list[int]:
        """Stop ids: generation_config.json, else config.json, else the GLM defaults."""
        for name in ("generation_config.json", "config.json"):
            path = self.directory / name
            if not path.is_file():
                continue
            cfg = _read_json(path)
            value = cfg.get("eos_token_id")
            if value is None and isinstance(cfg.get("text_config"), dict):
                value = cfg["text_config"].get("eos_token_id")
            if value is not None:
                ids = [value] if isinstance(value, int) else list(value)
                if ids and all(isinstance(i, int) for i in ids):
                    return ids
        found = [self._tok.token_to_id(t) for t in DEFAULT_EOS_TOKENS]
        return [i for i in found if i is not None] or [self.eos_token_id]

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; added tokens like `<|image|>` become their single id."""
        if not isinstance(text, str):
            raise InputError(f"encode() takes a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`. An id the tokenizer has no token for decodes to "", as in
        transformers and vLLM: checkpoints have more embedding rows than tokens (GLM-4.1V:
        151552 rows), and a model can sample one of those padding rows."""
        ids = [int(i) for i in ids]
        negative = [i for i in ids if i < 0]
        if negative:
            raise InputError(f"token ids must not be negative, got {negative[:5]}")
        size = self.vocab_size
        known = [i for i in ids if i < size]
        return self._tok.decode(known, skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)


class StreamDecoder:
    """Incremental detokenizer: `push(id)` returns the new text (possibly "").

    It decodes a small window of recent ids and holds text back while the window ends in
    U+FFFD, i.e. a multi-byte character whose bytes are split over several tokens. The
    joined output of all `push` calls plus `flush()` equals `decode(all_ids)`.
    """

    def __init__(self, tokenizer: Glm4vTokenizer, skip_special_tokens: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # ids before this one have been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        new_text = self._decode(self.ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""

    def push_many(self, token_ids: Iterable[int]) -> str:
        return "".join(self.push(t) for t in token_ids)

    def flush(self) -> str:
        """Emit whatever is held back (an incomplete character becomes U+FFFD)."""
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        new_text = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text):]
