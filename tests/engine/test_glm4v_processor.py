"""GLM-4.1V processor: images bit-exact with transformers' `Glm4vImageProcessorPil`, prompts
token-identical with transformers' tokenizer + chat template + expansion rule, videos
checked piece by piece against what of transformers' video code runs without torchvision."""

from __future__ import annotations

import ast
import base64
import importlib
import importlib.util
import math
import io
import struct
import zlib
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glmv_agent.errors import InputError
from glmv_agent.glm4v.image_processing import Glm4vImageProcessor, ImageProcessorConfig, load_image, smart_resize
from glmv_agent.glm4v.processor import load_processor
from glmv_agent.glm4v.tiny_assets import write_tokenizer_assets
from glmv_agent.glm4v.video_processing import (
    Glm4vVideoProcessor,
    VideoProcessorConfig,
    normalize_frames,
    patchify_video,
    read_video,
    resize_frames,
    sample_frames_glm41v,
    sample_frames_glm46v,
)

transformers = pytest.importorskip("transformers")
from transformers.video_utils import VideoMetadata, read_video_pyav  # noqa: E402

# import_module, not `from package import module`: the lazy package hands out a dummy for
# modules whose backend (torchvision) is missing, although the code we call does not need it.
hf_image = importlib.import_module("transformers.models.glm4v.image_processing_pil_glm4v")
hf_video = importlib.import_module("transformers.models.glm4v.video_processing_glm4v")


def _glm46v_sample_frames():
    """transformers' `Glm46VVideoProcessor.sample_frames`, compiled from its source file.

    That module imports torchvision at the top, which cannot be installed here, so we lift
    the one pure-Python method out of the file and run it as is.
    """
    spec = importlib.util.find_spec("transformers.models.glm46v")
    source = Path(spec.submodule_search_locations[0], "video_processing_glm46v.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Glm46VVideoProcessor")
    func = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "sample_frames")
    namespace = {"np": np, "math": math, "VideoMetadata": VideoMetadata}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "video_processing_glm46v.py", "exec"), namespace)
    return namespace["sample_frames"]

SIZE = {"shortest_edge": 12544, "longest_edge": 9633792}
RNG = np.random.default_rng(1234)


def _noise(width: int, height: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hf_images():
    return hf_image.Glm4vImageProcessorPil(size=SIZE)


@pytest.fixture(scope="module")
def ours() -> Glm4vImageProcessor:
    return Glm4vImageProcessor(ImageProcessorConfig(min_pixels=SIZE["shortest_edge"], max_pixels=SIZE["longest_edge"]))


# ----------------------------------------------------------------------------- smart_resize
@pytest.mark.parametrize(
    "frames,height,width",
    [(2, 1080, 1920), (2, 2400, 1080), (2, 2160, 3840), (2, 20, 20), (2, 1000, 37), (2, 377, 1013),
     (2, 42, 70), (2, 70, 42), (4, 720, 1280), (3, 500, 500), (600, 1080, 1920), (2, 28, 5000)],
)
def test_smart_resize_matches_transformers(frames: int, height: int, width: int) -> None:
    kwargs = dict(min_pixels=12544, max_pixels=9633792)
    assert smart_resize(frames, height, width, **kwargs) == hf_image.smart_resize(frames, height, width, **kwargs)


def test_smart_resize_spec_examples() -> None:
    assert smart_resize(2, 1080, 1920, min_pixels=12544, max_pixels=9633792) == (1092, 1932)
    assert smart_resize(2, 20, 20, min_pixels=12544, max_pixels=9633792) == (84, 84)
    # 42/28 = 1.5 and 70/28 = 2.5: banker's rounding gives 2 and 2, not 2 and 3.
    assert smart_resize(2, 42, 70, min_pixels=1, max_pixels=10**9) == (56, 56)


def test_smart_resize_extreme_aspect_is_input_error() -> None:
    with pytest.raises(InputError, match="aspect ratio"):
        smart_resize(2, 28, 28 * 201)


# ----------------------------------------------------------------------------- images
CASES = [
    ("37x1000", lambda: Image.fromarray(_noise(37, 1000))),
    ("1013x377", lambda: Image.fromarray(_noise(1013, 377))),
    ("1280x720", lambda: Image.fromarray(_noise(1280, 720))),
    ("20x20", lambda: Image.fromarray(_noise(20, 20))),
    ("rgba", lambda: Image.fromarray(_noise(300, 200, 4), mode="RGBA")),
    ("grayscale", lambda: Image.fromarray(_noise(150, 260)[..., 0], mode="L")),
    ("palette", lambda: Image.fromarray(_noise(99, 100)).convert("P")),
    ("array_rgb", lambda: _noise(70, 50)),
    ("array_rgba", lambda: _noise(70, 50, 4)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_pixel_values_bit_exact(hf_images, ours, name, make) -> None:
    image = make()
    ref = hf_images(images=[image], return_tensors="np")
    got = ours([image])
    assert got.pixel_values.dtype == np.float32
    assert got.pixel_values.shape == ref["pixel_values"].shape
    assert np.array_equal(got.pixel_values, ref["pixel_values"])
    assert np.array_equal(got.image_grid_thw, ref["image_grid_thw"])


def test_several_images_concatenate_in_order(hf_images, ours) -> None:
    images = [Image.fromarray(_noise(64, 48)), Image.fromarray(_noise(300, 90))]
    ref = hf_images(images=images, return_tensors="np")
    got = ours(images)
    assert np.array_equal(got.pixel_values, ref["pixel_values"])
    assert got.image_grid_thw.tolist() == ref["image_grid_thw"].tolist()


def test_grayscale_array_equals_grayscale_image(ours) -> None:
    gray = _noise(80, 60)[..., 0]
    a = ours([gray]).pixel_values
    b = ours([Image.fromarray(gray, mode="L")]).pixel_values
    assert np.array_equal(a, b)


def test_sources_path_bytes_data_url_agree(tmp_path: Path, ours) -> None:
    image = Image.fromarray(_noise(90, 64))
    data = _png_bytes(image)
    path = tmp_path / "shot.png"
    path.write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    expected = ours([image]).pixel_values
    for source in (str(path), path, data, url, f"file://{path}"):
        assert np.array_equal(ours([source]).pixel_values, expected)


def test_corrupt_and_truncated_images(tmp_path: Path, ours) -> None:
    good = _png_bytes(Image.fromarray(_noise(200, 200)))
    truncated = tmp_path / "half.png"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="half.png"):
        ours([str(truncated)])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(InputError, match="garbage.jpg"):
        ours([garbage])
    with pytest.raises(InputError, match="bytes"):
        ours([b"\x89PNG\r\n\x1a\nbroken"])
    with pytest.raises(InputError, match="does not exist"):
        ours([str(tmp_path / "missing.png")])


def test_bad_data_urls(ours) -> None:
    with pytest.raises(InputError, match="invalid base64"):
        ours(["data:image/png;base64,@@@not-base64@@@"])
    with pytest.raises(InputError, match="no ','"):
        ours(["data:image/png;base64"])
    with pytest.raises(InputError, match="cannot decode"):
        ours(["data:image/png;base64," + base64.b64encode(b"plain text").decode()])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_huge_image_refused_before_decoding(tmp_path: Path) -> None:
    # 12000x10000 = 120 MP: above our 100 MP default, below PIL's own bomb error.
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(12000, 10000))
    with pytest.raises(InputError, match="12000x10000 = 120.0 MP"):
        load_image(str(path))
    small = _png_bytes(Image.fromarray(_noise(200, 100)))
    with pytest.raises(InputError, match="limit"):
        load_image(small, max_input_pixels=10_000)
    # PIL refuses 900 MP itself at open(); that is still an InputError naming the file.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(InputError, match="bomb.png.*too large"):
        load_image(bomb)
    with pytest.raises(InputError, match="limit"):
        load_image(Image.new("L", (200, 100)), max_input_pixels=10_000)


def test_bad_array_and_type_errors(ours) -> None:
    with pytest.raises(InputError, match="uint8"):
        ours([np.zeros((10, 10, 3), dtype=np.float32)])
    with pytest.raises(InputError, match="shape"):
        ours([np.zeros((10, 10, 2), dtype=np.uint8)])
    with pytest.raises(InputError, match="unsupported image type"):
        ours([12345])
    with pytest.raises(InputError, match="web URL"):
        ours(["https://example.com/cat.png"])


# ----------------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def video_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 37-frame 10 fps H.264 file (lossless yuv444) with a moving bar and noise."""
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv444p"
        stream.options = {"crf": "0"}
        for i in range(37):
            frame = np.full((64, 96, 3), 40, dtype=np.uint8)
            frame[:, (i * 2) % 86:(i * 2) % 86 + 10] = 250
            frame[10:30, 10:30] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _hf_sampler(fps: float = 2, max_duration: float = 300):
    owner = types.SimpleNamespace(fps=fps, max_duration=max_duration, temporal_patch_size=2)
    return lambda metadata, **_: hf_video.Glm4vVideoProcessor.sample_frames(owner, metadata)


@pytest.mark.parametrize(
    "total,fps,duration",
    [(37, 10.0, 3.7), (300, 30.0, 10.0), (1, 25.0, 0.04), (95, 29.97, None), (20000, 30.0, 666.7),
     (500, 1.0, 500.0), (91, 24.0, 3.79)],
)
def test_frame_sampling_matches_transformers(total: int, fps: float, duration: float | None) -> None:
    meta = VideoMetadata(total_num_frames=total, fps=fps, duration=duration)
    assert sample_frames_glm41v(total, fps, duration) == _hf_sampler()(meta).tolist()
    owner46 = types.SimpleNamespace(temporal_patch_size=2)
    ref46 = _glm46v_sample_frames()(owner46, meta).tolist()
    assert sample_frames_glm46v(total, fps, duration) == ref46
    assert len(sample_frames_glm41v(total, fps, duration)) % 2 == 0


def test_decoding_matches_transformers_pyav_reader(video_path: Path) -> None:
    ref_frames, ref_meta = read_video_pyav(str(video_path), _hf_sampler())
    clip = read_video(video_path, VideoProcessorConfig())
    assert clip.frames_indices == ref_meta.frames_indices.tolist() == [0, 5, 10, 15, 20, 25, 30, 30]
    assert np.array_equal(clip.frames, ref_frames)  # 7 frames: the repeated index decodes once
    assert clip.timestamps == [float(t) for t in ref_meta.timestamps]


def test_resize_is_torchvision_uint8_bicubic_antialias() -> None:
    # torchvision cannot be installed beside torch 2.13 here, so its resize cannot run; on CPU
    # its bicubic path hands the uint8 tensor to F.interpolate(antialias=True) unchanged
    # (read from torchvision's resize_image), which is what we must equal.
    frames = torch.from_numpy(RNG.integers(0, 256, (3, 3, 61, 83), dtype=np.uint8))
    got = resize_frames(frames, 28, 56)
    ref = F.interpolate(frames, size=[28, 56], mode="bicubic", align_corners=False, antialias=True)
    assert got.dtype == torch.uint8 and torch.equal(got, ref)
    # The float path (torchvision off-CPU) differs, which is why the uint8 path is pinned.
    as_float = F.interpolate(frames.float(), size=[28, 56], mode="bicubic", align_corners=False, antialias=True)
    assert not torch.equal(as_float.clamp(0, 255).round().to(torch.uint8), ref)
    assert resize_frames(frames, 61, 83) is frames


def test_normalize_and_patchify_match_transformers() -> None:
    cfg = VideoProcessorConfig()
    frames = torch.from_numpy(RNG.integers(0, 256, (3, 3, 56, 84), dtype=np.uint8))
    ours_px = normalize_frames(frames, cfg)
    owner = hf_video.Glm4vVideoProcessor()
    mean, std, _ = owner._fuse_mean_std_and_rescale_factor(True, tuple(cfg.image_mean), tuple(cfg.image_std), True, 1 / 255)
    # torchvision's normalize is `image.sub(mean).div_(std)` with [C,1,1] views.
    ref_px = frames.to(torch.float32).sub(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
    assert torch.equal(ours_px, ref_px)
    patches, grid = patchify_video(ours_px, cfg)
    ref_patches, gt, gh, gw = owner.patchify(ref_px[None], patch_size=14, merge_size=2, temporal_patch_size=2)
    assert grid == (gt, gh, gw) == (2, 4, 6)  # 3 frames -> last one repeated -> 2 slices
    assert torch.equal(patches, ref_patches[0])


def test_video_end_to_end(video_path: Path) -> None:
    cfg = VideoProcessorConfig(min_pixels=12544, max_pixels=47040000)
    out = Glm4vVideoProcessor(cfg)([video_path])
    frames, meta = read_video_pyav(str(video_path), _hf_sampler())
    h, w = hf_video.smart_resize(num_frames=len(frames), height=64, width=96, min_pixels=12544, max_pixels=47040000)
    assert out.video_grid_thw.tolist() == [[4, h // 14, w // 14]]
    assert out.pixel_values_videos.shape == (4 * (h // 14) * (w // 14), 1176)
    assert out.timestamps == [[0.0, 1.0, 2.0, 3.0]]
    # Rebuild with transformers' own patchify on the independently computed resize.
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    resized = F.interpolate(video, size=[h, w], mode="bicubic", align_corners=False, antialias=True)
    owner = hf_video.Glm4vVideoProcessor()
    mean, std, _ = owner._fuse_mean_std_and_rescale_factor(True, tuple(cfg.image_mean), tuple(cfg.image_std), True, 1 / 255)
    px = resized.float().sub(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
    ref, *_ = owner.patchify(px[None], patch_size=14, merge_size=2, temporal_patch_size=2)
    assert torch.equal(out.pixel_values_videos, ref[0])


def test_frame_list_video_and_errors(video_path: Path) -> None:
    proc = Glm4vVideoProcessor(VideoProcessorConfig())
    frames = [Image.fromarray(_noise(64, 48)) for _ in range(12)]
    out = proc([frames], fps=[6.0])
    # 12 frames at 6 fps = 2 s -> 4 samples at 2 fps -> indices 0,3,6,9 -> 2 slices.
    assert out.video_grid_thw[0, 0].item() == 2
    assert out.timestamps == [[0.0, 1.0]]
    with pytest.raises(InputError, match="frame rate"):
        proc([frames])
    with pytest.raises(InputError, match="does not exist"):
        proc(["/nonexistent/clip.mp4"])
    bad = video_path.parent / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(InputError, match="bad.mp4"):
        proc([bad])


# ----------------------------------------------------------------------------- full processor
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_ckpt")
    write_tokenizer_assets(directory, 1024)
    return directory


@pytest.fixture(scope="module")
def hf_tok(checkpoint: Path):
    return transformers.AutoTokenizer.from_pretrained(str(checkpoint))


def _oracle_ids(hf_tok, messages, grids, add_generation_prompt=True) -> list[int]:
    """transformers' template + tokenizer, with `<|image|>` expanded by the processor's rule."""
    text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    for t, h, w in grids:
        text = text.replace("<|image|>", "<|placeholder|>" * (t * h * w // 4), 1)
    text = text.replace("<|placeholder|>", "<|image|>")
    return hf_tok(text, add_special_tokens=False)["input_ids"]


def _bare(messages):
    """The same conversation with media parts reduced to what the template sees."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image"} if p["type"] in ("image", "image_url") else p for p in content]
        out.append({**m, "content": content})
    return out


def test_processor_text_only(checkpoint: Path, hf_tok) -> None:
    proc = load_processor(checkpoint)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好, what's up? 😀"}]
    out = proc(messages)
    assert out["input_ids"].tolist() == [_oracle_ids(hf_tok, messages, [])]
    assert out["attention_mask"].tolist() == [[1] * out["input_ids"].shape[1]]
    assert out["pixel_values"] is None and out["image_grid_thw"] is None
    assert out["pixel_values_videos"] is None and out["video_grid_thw"] is None


def test_processor_images_multi_turn(checkpoint: Path, hf_tok, hf_images, tmp_path: Path) -> None:
    proc = load_processor(checkpoint)
    first = Image.fromarray(_noise(120, 80))
    second = Image.fromarray(_noise(50, 300))
    path = tmp_path / "second.png"
    second.save(path)
    url = "data:image/png;base64," + base64.b64encode(_png_bytes(first)).decode()
    messages = [
        {"role": "system", "content": "You operate a phone."},
        {"role": "user", "content": [{"type": "image", "image": first}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "<think>look</think><answer>A pattern.</answer>", "metadata": "m"},
        {"role": "user", "content": [
            {"type": "text", "text": "And this one?"},
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "image", "path": str(path)},
        ]},
    ]
    out = proc(messages)
    ref = hf_images(images=[first, first, second], return_tensors="pt")
    assert torch.equal(out["pixel_values"], ref["pixel_values"])
    assert torch.equal(out["image_grid_thw"], ref["image_grid_thw"])
    expected = _oracle_ids(hf_tok, _bare(messages), ref["image_grid_thw"].tolist())
    assert out["input_ids"].tolist() == [expected]
    n_tokens = int((out["input_ids"] == proc.image_token_id).sum())
    assert n_tokens == int(ref["image_grid_thw"].prod(-1).sum()) // 4
    assert int((out["mm_token_type_ids"] == 1).sum()) == n_tokens


def test_processor_batch_left_padding(checkpoint: Path, hf_tok) -> None:
    proc = load_processor(checkpoint)
    short = [{"role": "user", "content": "Hi"}]
    long = [{"role": "user", "content": [{"type": "image", "image": _noise(60, 60)},
                                         {"type": "text", "text": "Describe the picture in detail."}]}]
    out = proc([short, long])
    a, b = _oracle_ids(hf_tok, short, []), _oracle_ids(hf_tok, _bare(long), out["image_grid_thw"].tolist())
    width = max(len(a), len(b))
    assert out["input_ids"].shape == (2, width)
    assert out["input_ids"][0].tolist() == [proc.pad_token_id] * (width - len(a)) + a
    assert out["attention_mask"][0].tolist() == [0] * (width - len(a)) + [1] * len(a)
    assert out["input_ids"][1].tolist() == b
    right = proc([short, long], padding_side="right")
    assert right["input_ids"][0].tolist() == a + [proc.pad_token_id] * (width - len(a))


def test_processor_video_prompt(checkpoint: Path, hf_tok, video_path: Path) -> None:
    proc = load_processor(checkpoint)
    messages = [{"role": "user", "content": [{"type": "video", "video": str(video_path)},
                                             {"type": "text", "text": "What moves?"}]}]
    out = proc(messages)
    t, h, w = out["video_grid_thw"][0].tolist()
    # Expansion by transformers' own Glm4vProcessor.replace_video_token on our grid + metadata.
    from transformers.models.glm4v.processing_glm4v import Glm4vProcessor as HfProcessor

    _, meta = read_video_pyav(str(video_path), _hf_sampler())
    owner = types.SimpleNamespace(video_processor=types.SimpleNamespace(merge_size=2), image_token="<|image|>")
    owner.replace_frame_token_id = lambda ts, num_image_tokens=1: HfProcessor.replace_frame_token_id(owner, ts, num_image_tokens)
    structure = HfProcessor.replace_video_token(owner, {"video_grid_thw": out["video_grid_thw"], "video_metadata": [meta]}, 0)
    text = hf_tok.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}],
                                      tokenize=False, add_generation_prompt=True)
    expected = hf_tok(text.replace("<|video|>", structure), add_special_tokens=False)["input_ids"]
    assert out["input_ids"].tolist() == [expected]
    decoded = proc.decode(out["input_ids"][0], skip_special_tokens=True)
    assert decoded == "\n0123What moves?\n"  # integer timestamps of the 4 slices
    types_ = out["mm_token_type_ids"][0]
    assert int((types_ == 2).sum()) == t * h * w // 4 and int((types_ == 1).sum()) == 0


def test_processor_glm46v_timestamps(tmp_path: Path, video_path: Path) -> None:
    write_tokenizer_assets(tmp_path, 1024)
    (tmp_path / "config.json").write_text('{"model_type": "glm46v"}')
    proc = load_processor(tmp_path)
    assert proc.video_processor.config.sampling == "glm46v"
    out = proc([{"role": "user", "content": [{"type": "video", "video": str(video_path)}]}])
    text = proc.decode(out["input_ids"][0], skip_special_tokens=True)
    assert "0.0 seconds" in text and "seconds" in text.split("0.0 seconds", 1)[1]


def test_processor_errors(checkpoint: Path) -> None:
    proc = load_processor(checkpoint)
    with pytest.raises(InputError, match="expected a text, image"):
        proc([{"role": "user", "content": [{"type": "audio", "audio": "x"}]}])
    with pytest.raises(InputError, match="no 'image'"):
        proc([{"role": "user", "content": [{"type": "image"}]}])
    with pytest.raises(InputError, match="placeholders"):
        proc([{"role": "user", "content": "literal <|image|> in text"}])
    with pytest.raises(InputError, match="non-empty"):
        proc([])
    with pytest.raises(InputError, match="cannot decode image"):
        proc([{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}])


def test_processor_decode_and_ids(checkpoint: Path) -> None:
    proc = load_processor(checkpoint)
    ids = proc.tokenizer.encode("<answer><|begin_of_box|>B<|end_of_box|></answer><|endoftext|>")
    assert proc.decode(ids, skip_special_tokens=True) == "<answer>B</answer>"
    assert proc.decode(torch.tensor(ids)) == "<answer><|begin_of_box|>B<|end_of_box|></answer><|endoftext|>"
    assert proc.eos_token_ids[0] == proc.tokenizer.token_to_id("<|endoftext|>")
    assert proc.image_token_id == proc.tokenizer.token_to_id("<|image|>")
