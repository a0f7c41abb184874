"""Keep the vision tower's memory-mapped weights out of RSS except while they are in use.

A zero-copy CPU load (loading.py) makes every bf16 parameter a view of a MAP_PRIVATE map of
its shard. Those pages are clean copies of the file: madvise(MADV_DONTNEED) drops them from
the process, and the next read faults them back in from the page cache (minor faults), or
from disk if the kernel reclaimed them meanwhile.

Quantized loads are the memory-lean choice, so there `release_vision_pages` makes the
vision tower, which runs once per image, hold only what it is computing with:

- each layer hands its weights back as soon as it has run (a forward hook on every module;
  a parent releases its children's too, so a weight used by its parent's code also goes);
- a linear layer larger than RELEASE_BLOCK_BYTES runs as a matmul per block of output rows
  and drops each block right after it (`StreamedLinear`: each output column is the same dot
  product; bit-identical at the merger's shapes on the AMD EPYC), so at most one block of it
  is resident: 32 MB instead of the merger's 112 MB matrices;
- after the tower, malloc_trim hands the heap its activations used back to the system.

Real-width 2-layer checkpoint, int4, 1280x720 screenshot, three prefills and a generate
(2-core AMD EPYC): peak RSS 1767 MB with the whole tower released after each image, 1350 MB
released per layer, ~1300 MB with the big layers streamed, 1190-1310 MB (run to run) once
vision.rotate worked in blocks of patches. Linux (glibc for the trim) only; elsewhere
nothing is installed.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch
import torch.nn.functional as F
from torch import nn

RELEASE_BLOCK_BYTES = 32 << 20  # of one weight, resident at a time in a StreamedLinear


class MappedPages:
    """Drops tensors' pages from this process when they lie inside the mapped shards."""

    def __init__(self, maps: list[torch.Tensor]) -> None:
        # Holding the map tensors keeps these address ranges the files' mappings.
        self.maps = maps
        self.bounds = [(m.data_ptr(), m.data_ptr() + m.numel()) for m in maps]
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        self.malloc_trim = getattr(self.libc, "malloc_trim", None)  # glibc only
        if self.malloc_trim is not None:
            self.malloc_trim.argtypes = (ctypes.c_size_t,)

    def release(self, tensor: torch.Tensor) -> None:
        """MADV_DONTNEED the whole pages of a contiguous `tensor`, if it is a mapped view."""
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        if any(low <= start and end <= high for low, high in self.bounds):
            page = mmap.PAGESIZE
            first, last = -(-start // page) * page, end // page * page  # whole pages only
            if last > first:
                self.libc.madvise(first, last - first, mmap.MADV_DONTNEED)

    def release_module(self, module: nn.Module, *_: object) -> None:
        """Every parameter of `module` and its children (usable as a forward hook)."""
        for tensor in module.parameters():
            self.release(tensor)

    def trim_heap(self, *_: object) -> None:
        """Return the C heap's free pages to the system (glibc; a no-op elsewhere)."""
        if self.malloc_trim is not None:
            self.malloc_trim(0)


class StreamedLinear(nn.Linear):
    """An nn.Linear over a mapped weight that computes its output RELEASE_BLOCK_BYTES of
    weight rows at a time and drops each block's pages right after using it. Takes over the
    original layer's parameters (same names, same values, nothing copied)."""

    def __init__(self, linear: nn.Linear, pages: MappedPages) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.pages = pages
        self.block_rows = max(1, RELEASE_BLOCK_BYTES // (self.in_features * self.weight.element_size()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = flat.new_empty(flat.shape[0], self.out_features)
        for start in range(0, self.out_features, self.block_rows):
            end = min(start + self.block_rows, self.out_features)
            rows = self.weight[start:end]
            bias = None if self.bias is None else self.bias[start:end]
            out[:, start:end] = F.linear(flat, rows, bias)
            self.pages.release(rows)
        return out.view(*x.shape[:-1], self.out_features)


def release_vision_pages(tower: nn.Module, maps: list[torch.Tensor]) -> None:
    """Install the releases described in the module doc on the vision tower."""
    if not sys.platform.startswith("linux") or not maps:
        return
    pages = MappedPages(maps)
    for name, module in list(tower.named_modules()):
        if (type(module) is nn.Linear and module.weight.device.type == "cpu"
                and module.weight.numel() * module.weight.element_size() > RELEASE_BLOCK_BYTES):
            parent_name, _, leaf = name.rpartition(".")
            setattr(tower.get_submodule(parent_name), leaf, StreamedLinear(module, pages))
    for module in tower.modules():
        module.register_forward_hook(pages.release_module)
    tower.register_forward_hook(pages.trim_heap)
