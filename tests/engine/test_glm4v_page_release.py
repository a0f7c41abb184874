"""The vision tower's mapped weights leave RSS as soon as they have been used (page_release.py):
a real memory-mapped file, real madvise, RSS read from /proc/self/smaps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glmv_agent.glm4v import page_release
from glmv_agent.glm4v.page_release import MappedPages, StreamedLinear, release_vision_pages
from mapped_memory import mapped_rss

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux-only")


def _mapped_weight(path: Path, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bf16 [rows, columns] weight written to `path` and mapped back MAP_PRIVATE (as a
    zero-copy load maps a shard), with the map itself."""
    weight = torch.randn(rows, columns, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    path.write_bytes(weight.view(torch.uint8).numpy().tobytes())
    mapped = torch.from_file(str(path), shared=False, size=weight.numel() * 2, dtype=torch.uint8)
    return mapped.view(torch.bfloat16).view(rows, columns), mapped


class RecordingPages(MappedPages):
    """Notes the file's resident bytes just before each release."""

    def __init__(self, maps: list[torch.Tensor], path: Path) -> None:
        super().__init__(maps)
        self.path, self.before_release = path, []

    def release(self, tensor: torch.Tensor) -> None:
        self.before_release.append(mapped_rss(self.path))
        super().release(tensor)


def test_streamed_linear_equals_the_plain_product_and_holds_one_block(tmp_path, monkeypatch):
    monkeypatch.setattr(page_release, "RELEASE_BLOCK_BYTES", 4 << 20)
    path = tmp_path / "weight.bin"
    weight, mapped = _mapped_weight(path, 4000, 2048)  # 16 MB: 4 blocks of 1024 rows (4 MB)
    plain = nn.Linear(2048, 4000, bias=True).to(torch.bfloat16)
    plain.weight = nn.Parameter(weight, requires_grad=False)
    pages = RecordingPages([mapped], path)
    streamed = StreamedLinear(plain, pages)
    assert streamed.weight is plain.weight and streamed.block_rows == 1024
    x = torch.randn(3, 70, 2048, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with torch.no_grad():
        expected = F.linear(x, weight, plain.bias)
        assert mapped_rss(path) > 0.9 * weight.numel() * 2  # the plain product read it all
        pages.release(weight)
        pages.before_release.clear()
        got = streamed(x)
    assert torch.equal(got, expected)
    assert len(pages.before_release) == 4
    # One block, plus what one fault may map beyond it (the kernel maps a whole large folio
    # of the page cache at once: up to 2 MB).
    block = 1024 * 2048 * 2
    assert max(pages.before_release) <= block + (2 << 20), pages.before_release
    assert mapped_rss(path) <= 2 * 4096


def test_vision_pages_are_released_per_layer_and_big_layers_per_block(tmp_path, monkeypatch):
    monkeypatch.setattr(page_release, "RELEASE_BLOCK_BYTES", 1 << 20)
    path = tmp_path / "weight.bin"
    weight, mapped = _mapped_weight(path, 1024, 2048)
    small = nn.Linear(1024, 16, bias=False).to(torch.bfloat16)
    small.weight = nn.Parameter(weight[:16, :1024].contiguous(), requires_grad=False)  # not mapped
    big = nn.Linear(2048, 1024, bias=False)
    big.weight = nn.Parameter(weight, requires_grad=False)
    tower = nn.Sequential(big, small)
    release_vision_pages(tower, [mapped])
    assert isinstance(tower[0], StreamedLinear) and type(tower[1]) is nn.Linear
    assert tower[0].weight is big.weight  # the same parameter under the same name
    assert [name for name, _ in tower.named_parameters()] == ["0.weight", "1.weight"]
    x = torch.randn(5, 2048, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    with torch.no_grad():
        out = tower(x)
        again = tower(x)  # the dropped pages are read back from the file
    assert mapped_rss(path) <= 2 * 4096
    assert torch.equal(out, again)
    assert torch.equal(out, F.linear(F.linear(x, weight), small.weight))


@pytest.mark.parametrize("rows, columns", [(13696, 4096), (4096, 13696)])  # merger gate / down
def test_streamed_linear_matches_one_product_at_the_mergers_real_shapes(rows, columns):
    """Blocks of output rows compute the same dot products as one product: bit-identical on
    the AMD EPYC this was written on; other CPUs' kernels may split the sums differently, so
    the bound is bf16 rounding (a misplaced block or bias would be off by O(1))."""
    generator = torch.Generator().manual_seed(4)
    plain = nn.Linear(columns, rows, bias=False)
    plain.weight = nn.Parameter((torch.randn(rows, columns, generator=generator) * 0.02)
                                .to(torch.bfloat16), requires_grad=False)
    streamed = StreamedLinear(plain, MappedPages([]))  # nothing mapped: only the blocking
    assert streamed.block_rows < rows
    x = torch.randn(1196, columns, generator=generator).to(torch.bfloat16)
    with torch.no_grad():
        got, expected = streamed(x).float(), F.linear(x, plain.weight).float()
    assert (got - expected).abs().max() <= 2 ** -8 * expected.abs().max()
