"""Logit parity of our GLM-4.1V engine with transformers' Glm4vForConditionalGeneration.

Both sides load the same tiny safetensors checkpoint (real key names and config layout; the
9B weights cannot run on this CPU-only machine). Pixel values for images come from
transformers' own Glm4vImageProcessorPil; video pixel values are patchified by hand (spec
§8.3) because transformers' video processor needs torchvision, which is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from glmv_agent.errors import InputError  # noqa: E402
from glmv_agent.glm4v import get_rope_index, load_model  # noqa: E402
from glmv_agent.glm4v.config import Glm4vConfig  # noqa: E402
from glmv_agent.glm4v.rope import token_types  # noqa: E402
from glmv_agent.glm4v.tiny import write_tiny_checkpoint  # noqa: E402

FP32_TOL = 1e-4


def hf_model(path: Path, dtype: torch.dtype, attn: str = "sdpa") -> torch.nn.Module:
    model, info = transformers.Glm4vForConditionalGeneration.from_pretrained(
        str(path), dtype=dtype, attn_implementation=attn, output_loading_info=True)
    # The tiny checkpoint must load unchanged: every key known, none missing.
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def hf_logits(model: torch.nn.Module, ids: torch.Tensor, cfg: Glm4vConfig, **kwargs) -> torch.Tensor:
    types = token_types(ids, cfg)
    with torch.no_grad():
        return model(input_ids=ids, mm_token_type_ids=types, **kwargs).logits


def text_ids(n: int, seed: int) -> list[int]:
    # Regular (non-special) ids of the tiny vocab.
    return torch.randint(0, 1500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def image_span(cfg: Glm4vConfig, grid: list[int]) -> list[int]:
    t, h, w = grid
    return [cfg.image_start_token_id] + [cfg.image_token_id] * (t * h * w // 4) + [cfg.image_end_token_id]


def video_span(cfg: Glm4vConfig, grid: list[int], seed: int) -> list[int]:
    # Per §8.4: one image span per 2-frame slice, each followed by its timestamp text.
    t, h, w = grid
    ids = [cfg.video_start_token_id]
    for k in range(t):
        ids += image_span(cfg, [1, h, w]) + text_ids(1, seed + k)
    return ids + [cfg.video_end_token_id]


def random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def image_inputs(images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    processor = transformers.Glm4vImageProcessorPil()
    out = processor(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def video_inputs(frames: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalized frames patchified as in spec §8.3 -> ([T/2*gh*gw, 1176], [[T/2, gh, gw]])."""
    video = torch.randn(frames, 3, height, width, generator=torch.Generator().manual_seed(seed))
    gh, gw = height // 14, width // 14
    x = video.view(frames // 2, 2, 3, gh // 2, 2, 14, gw // 2, 2, 14)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (ti, by, bx, dy, dx, c, tt, y, x)
    return x.reshape(frames // 2 * gh * gw, 3 * 2 * 14 * 14), torch.tensor([[frames // 2, gh, gw]])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def ours(tiny_checkpoint: Path):
    return load_model(tiny_checkpoint, dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_sdpa(tiny_checkpoint: Path):
    return hf_model(tiny_checkpoint, torch.float32, "sdpa")


@pytest.fixture(scope="module")
def hf_eager(tiny_checkpoint: Path):
    return hf_model(tiny_checkpoint, torch.float32, "eager")


@pytest.fixture(scope="module")
def two_images():
    images = [random_image(37, 1000, 1), random_image(1013, 377, 2)]
    return image_inputs(images)


def two_image_prompt(cfg: Glm4vConfig, grids: torch.Tensor) -> torch.Tensor:
    ids = (text_ids(5, 10) + image_span(cfg, grids[0].tolist()) + text_ids(3, 11)
           + image_span(cfg, grids[1].tolist()) + text_ids(6, 12))
    return torch.tensor([ids])


# ---- prefill parity ----------------------------------------------------------------------

def test_text_only_matches_transformers(ours, hf_sdpa, hf_eager):
    ids = torch.tensor([text_ids(40, 0)])
    logits = ours(ids)
    assert logits.shape == (1, 40, ours.config.text.vocab_size)
    d_sdpa = max_diff(logits, hf_logits(hf_sdpa, ids, ours.config))
    d_eager = max_diff(logits, hf_logits(hf_eager, ids, ours.config))
    print(f"text-only fp32: sdpa {d_sdpa:.3g}, eager {d_eager:.3g}")
    # Same SDPA call as transformers -> bit-exact; eager differs in reduction order only.
    assert d_sdpa == 0.0 and d_eager <= FP32_TOL
    assert logits.std() > 0.1  # not a degenerate model


def test_one_image_matches_transformers(ours, hf_sdpa):
    pixels, grid = image_inputs([random_image(300, 200, 3)])
    ids = torch.tensor([text_ids(4, 1) + image_span(ours.config, grid[0].tolist()) + text_ids(7, 2)])
    logits = ours(ids, pixel_values=pixels, image_grid_thw=grid)
    ref = hf_logits(hf_sdpa, ids, ours.config, pixel_values=pixels, image_grid_thw=grid)
    d = max_diff(logits, ref)
    print(f"one image fp32 sdpa: {d:.3g}")
    assert d <= FP32_TOL  # the convs run as matmuls: ~1e-5, not bit-equal
    # The image really matters: other pixels give other logits after the image.
    other = ours(ids, pixel_values=pixels.flip(0), image_grid_thw=grid)
    assert max_diff(other[0, -1], logits[0, -1]) > 1e-3


def test_odd_sized_images_match_transformers(ours, hf_sdpa, hf_eager, two_images):
    pixels, grids = two_images
    ids = two_image_prompt(ours.config, grids)
    logits = ours(ids, pixel_values=pixels, image_grid_thw=grids)
    d_sdpa = max_diff(logits, hf_logits(hf_sdpa, ids, ours.config, pixel_values=pixels,
                                        image_grid_thw=grids))
    d_eager = max_diff(logits, hf_logits(hf_eager, ids, ours.config, pixel_values=pixels,
                                         image_grid_thw=grids))
    print(f"two odd images {grids.tolist()} fp32: sdpa {d_sdpa:.3g}, eager {d_eager:.3g}")
    assert d_sdpa <= FP32_TOL and d_eager <= FP32_TOL


def test_video_matches_transformers(ours, hf_sdpa):
    pixels, grid = video_inputs(frames=6, height=56, width=84, seed=5)
    ids = torch.tensor([text_ids(3, 20) + video_span(ours.config, grid[0].tolist(), 30)
                        + text_ids(5, 21)])
    logits = ours(ids, pixel_values_videos=pixels, video_grid_thw=grid)
    ref = hf_logits(hf_sdpa, ids, ours.config, pixel_values_videos=pixels, video_grid_thw=grid)
    d = max_diff(logits, ref)
    print(f"video {grid.tolist()} fp32 sdpa: {d:.3g}")
    assert d <= FP32_TOL


def test_image_and_video_in_one_prompt(ours, hf_sdpa):
    """transformers' forward refuses mixed prompts, so build its side from its own parts:
    its vision features, its get_rope_index, and its decoder via inputs_embeds."""
    cfg = ours.config
    img_pixels, img_grid = image_inputs([random_image(90, 60, 7)])
    vid_pixels, vid_grid = video_inputs(frames=4, height=56, width=56, seed=8)
    ids = torch.tensor([text_ids(3, 40) + image_span(cfg, img_grid[0].tolist()) + text_ids(2, 41)
                        + video_span(cfg, vid_grid[0].tolist(), 42) + text_ids(4, 43)])
    logits = ours(ids, pixel_values=img_pixels, image_grid_thw=img_grid,
                  pixel_values_videos=vid_pixels, video_grid_thw=vid_grid)

    types = token_types(ids, cfg)
    assert int((types == 1).sum()) == int(img_grid.prod()) // 4
    assert int((types == 2).sum()) == int(vid_grid.prod()) // 4
    hf = hf_sdpa.model
    with torch.no_grad():
        img = torch.cat(hf.get_image_features(img_pixels, img_grid).pooler_output)
        vid = torch.cat(hf.get_video_features(vid_pixels, vid_grid).pooler_output)
        embeds = hf.get_input_embeddings()(ids)
        embeds[types == 1] = img
        embeds[types == 2] = vid
        positions, _ = hf.get_rope_index(ids, types, img_grid, vid_grid)
        ref = hf_sdpa(inputs_embeds=embeds, position_ids=positions).logits
    d = max_diff(logits, ref)
    print(f"image+video mixed fp32: {d:.3g}")
    assert d <= FP32_TOL


def test_left_padded_batch_matches_transformers(ours, hf_sdpa, two_images):
    cfg = ours.config
    pixels, grids = two_images
    short_pixels, short_grid = image_inputs([random_image(60, 60, 9)])
    long_ids = two_image_prompt(cfg, grids)[0].tolist()
    short_ids = text_ids(2, 50) + image_span(cfg, short_grid[0].tolist()) + text_ids(3, 51)
    pad = len(long_ids) - len(short_ids)
    pad_id = cfg.pad_token_id
    ids = torch.tensor([[pad_id] * pad + short_ids, long_ids])
    mask = torch.tensor([[0] * pad + [1] * len(short_ids), [1] * len(long_ids)])
    all_pixels = torch.cat([short_pixels, pixels])
    all_grids = torch.cat([short_grid, grids])
    logits = ours(ids, pixel_values=all_pixels, image_grid_thw=all_grids, attention_mask=mask)
    ref = hf_logits(hf_sdpa, ids, cfg, pixel_values=all_pixels, image_grid_thw=all_grids,
                    attention_mask=mask)
    real = mask.bool()
    d = max_diff(logits[real], ref[real])
    print(f"left-padded batch of 2 fp32 sdpa (non-pad positions): {d:.3g}")
    assert d <= FP32_TOL
    # Padding does not change a row: the short row equals its unpadded single run.
    alone = ours(torch.tensor([short_ids]), pixel_values=short_pixels, image_grid_thw=short_grid)
    assert max_diff(logits[0, pad:], alone[0]) <= FP32_TOL


def test_rope_index_matches_transformers(ours, hf_sdpa, two_images):
    cfg = ours.config
    pixels, grids = two_images
    ids = two_image_prompt(cfg, grids)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    pos, deltas = get_rope_index(ids, cfg, grids, None, mask)
    ref_pos, ref_deltas = hf_sdpa.model.get_rope_index(ids, token_types(ids, cfg), grids, None, mask)
    assert torch.equal(pos, ref_pos)
    assert deltas.tolist() == ref_deltas.view(-1).tolist()
    assert deltas.item() < 0  # image tokens compress positions


# ---- KV cache ----------------------------------------------------------------------------

def test_cached_decode_matches_full_forward(ours, two_images):
    pixels, grids = two_images
    ids = two_image_prompt(ours.config, grids)
    full = ours(ids, pixel_values=pixels, image_grid_thw=grids)
    prompt_len = ids.shape[1] - 4
    cache = ours.new_cache(1, ids.shape[1] + 2)
    assert cache.k.shape == (2, 1, 2, ids.shape[1] + 2, 16)
    first = ours.prefill(ids[:, :prompt_len], cache, pixel_values=pixels, image_grid_thw=grids)
    steps = [first] + [ours.decode_step(ids[:, i:i + 1], cache) for i in range(prompt_len, ids.shape[1] - 1)]
    d = max(max_diff(step[0], full[0, prompt_len - 1 + k]) for k, step in enumerate(steps))
    print(f"KV-cached prefill + 3 decode steps vs full forward fp32: {d:.3g}")
    assert d <= FP32_TOL  # pitfall 16: ~1e-6, not bit-equal
    assert cache.length == ids.shape[1] - 1


def test_cached_decode_with_left_padding(ours):
    rows = [text_ids(6, 60), text_ids(11, 61)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    cache = ours.new_cache(2, width + 3)
    ours.prefill(ids, cache, attention_mask=mask)
    new = torch.tensor([[7], [8]])
    batched = ours.decode_step(new, cache)
    for b, row in enumerate(rows):
        alone = ours(torch.tensor([row + [int(new[b])]]))[0, -1]
        assert max_diff(batched[b], alone) <= FP32_TOL


def test_cache_overflow_is_a_clear_error(ours):
    cache = ours.new_cache(1, 4)
    ours.prefill(torch.tensor([text_ids(4, 70)]), cache)
    with pytest.raises(InputError, match="max_length=4"):
        ours.decode_step(torch.tensor([[1]]), cache)


# ---- bf16 --------------------------------------------------------------------------------

def test_bf16_matches_transformers(tiny_checkpoint_bf16: Path, two_images):
    """bf16 is as close to transformers as transformers is to itself: our bf16 logits are no
    farther from the fp32 model than transformers' own bf16 sdpa and eager runs (the convs
    run as matmuls and CPU bf16 attention as matmuls, so they are not bit-equal to its sdpa)."""
    ours = load_model(tiny_checkpoint_bf16, dtype="bfloat16")
    assert ours.model.language_model.inv_freq.dtype == torch.float32  # pitfall 2
    hf = {name: hf_model(tiny_checkpoint_bf16, dtype, attn) for name, dtype, attn in
          (("sdpa", torch.bfloat16, "sdpa"), ("eager", torch.bfloat16, "eager"),
           ("fp32", torch.float32, "sdpa"))}
    pixels, grids = two_images
    vid_pixels, vid_grid = video_inputs(frames=4, height=56, width=84, seed=11)
    cases = {
        "two images": (two_image_prompt(ours.config, grids),
                       {"pixel_values": pixels, "image_grid_thw": grids}),
        "video": (torch.tensor([text_ids(3, 80) + video_span(ours.config, vid_grid[0].tolist(), 81)]),
                  {"pixel_values_videos": vid_pixels, "video_grid_thw": vid_grid}),
    }
    for case, (ids, kwargs) in cases.items():
        logits = ours(ids, **kwargs)
        assert logits.dtype == torch.bfloat16
        theirs = {name: hf_logits(model, ids, ours.config, **kwargs) for name, model in hf.items()}
        ours_err = max_diff(logits, theirs["fp32"])
        their_err = max(max_diff(theirs["sdpa"], theirs["fp32"]),
                        max_diff(theirs["eager"], theirs["fp32"]))
        d_sdpa = max_diff(logits, theirs["sdpa"])
        their_spread = max_diff(theirs["eager"], theirs["sdpa"])
        print(f"bf16 {case}: vs fp32 ours {ours_err:.3g} theirs {their_err:.3g}; "
              f"vs their sdpa ours {d_sdpa:.3g}, their eager {their_spread:.3g}")
        # 1.25: headroom for another CPU's rounding; measured ratios here are <= 1.07.
        assert ours_err <= 1.25 * their_err
        assert d_sdpa <= 1.25 * their_spread


# ---- config shapes -----------------------------------------------------------------------

def test_flat_and_nested_configs_give_identical_logits(tmp_path: Path, tiny_checkpoint: Path):
    flat = write_tiny_checkpoint(tmp_path / "flat", dtype="float32", config_format="flat",
                                 shards=1)
    raw = json.loads((flat / "config.json").read_text())
    assert "text_config" not in raw and "rope_scaling" in raw
    a = load_model(flat, dtype=torch.float32)
    b = load_model(tiny_checkpoint, dtype=torch.float32)
    assert a.config.text == b.config.text and a.config.vision == b.config.vision
    ids = torch.tensor([text_ids(12, 90)])
    assert torch.equal(a(ids), b(ids))


def test_mismatched_placeholders_are_a_clear_error(ours):
    pixels, grid = image_inputs([random_image(60, 60, 12)])
    ids = torch.tensor([text_ids(2, 1) + [ours.config.image_token_id] * 3])
    with pytest.raises(InputError, match="placeholder"):
        ours(ids, pixel_values=pixels, image_grid_thw=grid)
    with pytest.raises(InputError, match="pixel_values was not given"):
        ours(ids)
