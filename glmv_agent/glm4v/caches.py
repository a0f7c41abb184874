"""Work reused across requests: a vision-encoder cache and a prefix KV cache.

An agent asks the model nearly the same thing step after step: the same screenshot again
(PageAgent's act, then query, then assert on an unchanged page), the same history screenshots
for four steps (GLM-4.1V PC), the same system prompt and past turns (AutoGLM-Phone, server
clients). Two bounded LRU caches, both on by default (`engine.load(cache_bytes=...,
prefix_cache_bytes=...)`, 0 turns one off, `engine.clear_caches()` empties them):

- `VisionCache`: the vision tower's output per image (or video frame-slice), keyed by a
  SHA-256 of the preprocessed pixels and their grid -- content, not object identity, so a
  screenshot taken again that is pixel-identical hits too.
- `PrefixCache`: the prompt keys/values of recent requests. A new prompt reuses the longest
  common prefix of token ids *and* image content (each placeholder run is compared by the
  key of the image that fills it), and only the rest is prefilled. The rotary positions of
  the rest come from the whole prompt's `get_rope_index` (images inside the prefix shift
  later positions), so they are exactly a cold run's; the prefix's keys were computed with
  the same positions when it was stored.

What is and is not reused:
- Batches (the server's): with the prefix cache on, each row is prefilled alone, as a
  batch-1 prompt that reuses and fills the cache, into its slots of the left-padded batch
  cache; decoding then runs the whole batch together. (Without it, or with videos, a
  batch is prefilled padded, as before; the vision cache still serves every row.)
- The reuse stops before the last prompt token (its logits are needed) and never inside an
  image: a reused prefix holds whole images only.
- Entries belong to one model (each engine has its own caches), hold exact copies of the
  stored prompt's ids and image keys, and are only returned on an exact match of both, so
  the KV of another prompt is never used.
- Answers are stored too: after a generation, each row's prompt plus the answer tokens
  decoded into its cache (all but the last, never fed back) replace the prompt's entry, so a
  next prompt that carries the answer verbatim in its history (a multi-turn chat through
  `glmv-agent serve`) reuses it. The decoded keys sit at the positions a cold run gives
  those tokens (text after the prompt: one more per token). Agent dialects mostly re-render
  the past instead, and then the reuse stops where that starts: AutoGLM drops the previous
  screenshot, which comes before the previous answer, so its next turn diverges at that
  image; GLM-4.1V PC and web prompts start with the current screenshot or the task.

Exactness (tests/engine/test_glm4v_caches.py): logits with the caches on are a cold run's up to
float rounding -- fp32 within 3e-6 over the agent sequences tested; bf16 as close as two cold
runs of one prompt (alone vs in a padded batch): the rest of the prompt runs as a shorter
prefill attending through a mask, another kernel order. Greedy tokens are the same. A
reused answer's keys/values were computed by decode steps (one token at a time, fp32
attention), not by a prefill: fp32 within 1e-5; bf16 at the real width 0.031 max |dlogit|
against 0.039 between two cold runs (3 chat turns, benchmarks/README.md), which at a
near-tie still flips a greedy token (once in 48 there, random weights).

Both caches are guarded by a lock, so server threads may share one engine's caches.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from ..errors import ConfigError

DEFAULT_VISION_CACHE_BYTES = 256 * 2**20
DEFAULT_PREFIX_CACHE_BYTES = 512 * 2**20

V = TypeVar("V")


def image_key(pixels: torch.Tensor, grid: Sequence[int]) -> bytes:
    """SHA-256 of one image's preprocessed pixels [t*h*w, patch_dim] and its grid (t, h, w)."""
    data = pixels.detach().contiguous().cpu()
    digest = hashlib.sha256(f"{data.dtype}|{tuple(data.shape)}|{tuple(int(g) for g in grid)}".encode())
    # bf16 has no numpy dtype: hash the raw bytes through an integer view of the same width.
    raw = data.view(torch.int16) if data.dtype in (torch.bfloat16, torch.float16) else data
    digest.update(raw.numpy().tobytes())
    return digest.digest()


@dataclass(frozen=True)
class Span:
    """One run of placeholder tokens [start, end) and the key of the image filling it."""

    start: int
    end: int
    key: bytes


def placeholder_runs(types: torch.Tensor | Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, end, kind) of every run of equal non-text token types [L] (0 is text)."""
    types = torch.as_tensor(types).flatten().cpu()
    if not types.numel():
        return []
    starts = torch.ones_like(types, dtype=torch.bool)
    starts[1:] = types[1:] != types[:-1]
    first = starts.nonzero().squeeze(-1)
    last = torch.cat([first[1:], first.new_tensor([types.numel()])])
    kinds = types[first]
    keep = kinds != 0
    return list(zip(first[keep].tolist(), last[keep].tolist(), kinds[keep].tolist()))


class _ByteLRU(Generic[V]):
    """An LRU map bounded by the bytes of its values; thread-safe."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int], name: str) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"{name} must be a number of bytes >= 0 (0 turns the cache off), "
                              f"got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, key: bytes) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def _put(self, key: bytes, value: V) -> bool:
        """Store (most recent); evicts the least recent items to stay inside max_bytes.
        A value larger than the whole budget is not stored (returns False)."""
        size = self._size_of(value)
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= self._size_of(old)
            while self._items and self.nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= self._size_of(evicted)
                self.evictions += 1
            self._items[key] = value
            self.nbytes += size
            return True

    def _discard(self, key: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= self._size_of(old)

    def _snapshot(self) -> list[tuple[bytes, V]]:
        """Items, most recent first."""
        with self._lock:
            return list(reversed(self._items.items()))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._items), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def _tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class VisionCache(_ByteLRU[torch.Tensor]):
    """Vision-tower features [tokens, hidden] per image key (see `image_key`)."""

    def __init__(self, max_bytes: int = DEFAULT_VISION_CACHE_BYTES) -> None:
        super().__init__(max_bytes, _tensor_bytes, "cache_bytes")

    def get(self, key: bytes) -> torch.Tensor | None:
        return self._get(key) if self.enabled else None

    def put(self, key: bytes, features: torch.Tensor) -> None:
        if self.enabled:
            # A copy of its own: a slice would keep the whole batch's output alive.
            self._put(key, features.detach().clone())


@dataclass(frozen=True)
class PrefixEntry:
    """A stored prompt: its ids [L] (CPU), image spans, and keys/values
    [layers, kv_heads, L, head_dim] per slot."""

    ids: torch.Tensor
    spans: tuple[Span, ...]
    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        return _tensor_bytes(self.ids, self.k, self.v)

    def key(self) -> bytes:
        return prefix_key(self.ids, self.spans)

    def holds(self, ids: torch.Tensor, spans: Sequence[Span]) -> bool:
        """Whether this entry starts with the whole prompt ids [L] / spans (so storing that
        prompt would add nothing)."""
        length = int(ids.shape[0])
        return (self.length >= length and torch.equal(self.ids[:length], ids)
                and tuple(s for s in self.spans if s.start < length) == tuple(spans))


def prefix_key(ids: torch.Tensor, spans: Sequence[Span]) -> bytes:
    """The key a prompt's entry is stored under: its ids [L] (CPU) and image spans."""
    digest = hashlib.sha256(ids.numpy().tobytes())
    for span in spans:
        digest.update(f"{span.start}:{span.end}:".encode() + span.key)
    return digest.digest()


@dataclass
class PrefixMatch:
    entry: PrefixEntry
    length: int  # reusable slots [0, length)
    images: int  # whole images inside the reused part


def common_prefix(entry: PrefixEntry, ids: torch.Tensor, spans: Sequence[Span],
                  limit: int) -> int:
    """Slots [0, n) of `entry` that equal the new prompt: same ids, same image in every
    placeholder run, n <= limit, and n never inside an image."""
    n = min(entry.length, int(ids.shape[0]), limit)
    if n <= 0:
        return 0
    differ = (entry.ids[:n] != ids[:n]).nonzero()
    if differ.numel():
        n = int(differ[0, 0])
    stored = {span.start: span for span in entry.spans}
    for span in spans:  # in prompt order
        if span.start >= n:
            break
        if span.end > n or stored.get(span.start) != span:
            return span.start
    return n


class PrefixCache(_ByteLRU[PrefixEntry]):
    """Keys/values of recent prompts, bounded by bytes (LRU), looked up by longest prefix."""

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        super().__init__(max_bytes, lambda entry: entry.nbytes, "prefix_cache_bytes")

    def lookup(self, ids: torch.Tensor, spans: Sequence[Span], limit: int) -> PrefixMatch | None:
        """The entry sharing the longest reusable prefix with the prompt ids [L] / spans
        (at most `limit` slots), or None when nothing (or not even one token) is shared."""
        if not self.enabled:
            return None
        best: PrefixMatch | None = None
        best_key = b""
        for key, entry in self._snapshot():
            n = common_prefix(entry, ids, spans, limit)
            if n > 0 and (best is None or n > best.length):
                best, best_key = PrefixMatch(entry, n, sum(s.end <= n for s in spans)), key
        if best is None:
            with self._lock:
                self.misses += 1
            return None
        self._get(best_key)  # marks it most recently used, counts the hit
        return best

    def holds(self, ids: torch.Tensor, spans: Sequence[Span]) -> bool:
        """Whether a stored entry starts with the whole of ids [L] / spans already."""
        return self.enabled and any(entry.holds(ids, spans) for _, entry in self._snapshot())

    def store(self, entry: PrefixEntry, replaces: bytes | None = None) -> None:
        """Keep `entry`. `replaces`: the key of an entry it extends (a strict prefix of it,
        e.g. its prompt without the answer), dropped: the new one answers every lookup the
        old one could."""
        if not self.enabled:
            return
        if replaces is not None and replaces != entry.key():
            self._discard(replaces)
        self._put(entry.key(), entry)


@dataclass
class PrefillStats:
    """What one prefill reused, per row, and how long the vision tower ran; and, for
    storing the answers later, each row's prompt as the prefix cache saw it (ids [L] on the
    CPU and spans; None where the prefix cache was not used) and the prompt's cache slots."""

    cached_tokens: list[int] = field(default_factory=list)
    cached_images: list[int] = field(default_factory=list)
    vision_seconds: float = 0.0
    prompts: list[tuple[torch.Tensor, tuple[Span, ...]] | None] = field(default_factory=list)
    prompt_slots: int = 0

    @classmethod
    def for_batch(cls, batch: int, prompt_slots: int) -> PrefillStats:
        return cls([0] * batch, [0] * batch, prompts=[None] * batch, prompt_slots=prompt_slots)


class EngineCaches:
    """The two caches of one engine (model)."""

    def __init__(self, cache_bytes: int = DEFAULT_VISION_CACHE_BYTES,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        self.vision = VisionCache(cache_bytes)
        self.prefix = PrefixCache(prefix_cache_bytes)

    def clear(self) -> None:
        self.vision.clear()
        self.prefix.clear()

    @property
    def nbytes(self) -> int:
        return self.vision.nbytes + self.prefix.nbytes

    def stats(self) -> dict[str, dict[str, int]]:
        return {"vision": self.vision.stats(), "prefix": self.prefix.stats()}


__all__ = ["EngineCaches", "VisionCache", "PrefixCache", "PrefixEntry", "PrefixMatch",
           "PrefillStats", "Span", "image_key", "placeholder_runs", "common_prefix", "prefix_key",
           "DEFAULT_VISION_CACHE_BYTES", "DEFAULT_PREFIX_CACHE_BYTES"]
