"""GLM-4.1V video preprocessing: decode (PyAV), sample frames, resize, normalize, patchify.

Follows transformers 5.23 `Glm4vVideoProcessor` (and, when selected, the GLM-4.6V frame
sampling of `Glm46VVideoProcessor`):

- sampling: GLM-4.1V takes `fps` (default 2) frames per second up to 300 s, else a uniform
  grid; GLM-4.6V uses a duration-dependent rate. Indices are de-duplicated and, if their
  count is odd, the last one is repeated.
- decoding a file keeps each sampled frame once (like transformers' `read_video_pyav`, so
  the repeated last index does not add a frame); a frame list is indexed directly (the
  repeat is kept), again like transformers.
- every frame of a video is resized to one size: `smart_resize` over all T frames, then
  torchvision's bicubic antialiased resize, which on CPU is `F.interpolate` on the uint8
  tensor itself (torchvision's native uint8 path; elsewhere float32 + clamp + round).
- `(x - 255*mean) / (255*std)` in float32, an odd frame count padded by repeating the last
  frame, patches in `(slice, block-row, block-col, dy, dx)` order, `video_grid_thw=[T/2,gh,gw]`.
- timestamps `idx / fps` of every second sampled index, one per 2-frame slice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import CheckpointError, InputError
from .image_processing import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, pixel_fields, read_config_json, smart_resize, to_rgb,
)

logger = logging.getLogger(__name__)

SamplingRule = Literal["glm41v", "glm46v"]
# Refuse to hold more decoded RGB data than this (frames * H * W * 3 bytes).
DEFAULT_MAX_DECODED_BYTES = 4 * 1024**3


@dataclass
class VideoProcessorConfig:
    """Values of `video_preprocessor_config.json` (defaults: transformers' GLM-4.1V class)."""

    min_pixels: int = 112 * 112
    max_pixels: int = 28 * 28 * 2 * 30000
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    fps: float = 2.0
    max_duration: float = 300
    sampling: SamplingRule = "glm41v"
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "VideoProcessorConfig":
        kind = str(cfg.get("video_processor_type", ""))
        try:
            return cls(
                **pixel_fields(cfg, cls),
                fps=float(cfg.get("fps", cls.fps)),
                max_duration=float(cfg.get("max_duration", cls.max_duration)),
                sampling="glm46v" if kind.lower().startswith("glm46v") else "glm41v",
                extra=dict(cfg),
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid video preprocessor config values: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> "VideoProcessorConfig":
        return cls.from_dict(read_config_json(path))


# ----------------------------------------------------------------------------- sampling
def _dedup_even(indices: Sequence[int]) -> list[int]:
    unique = list(dict.fromkeys(indices))  # first occurrences, in order
    if len(unique) % 2:
        unique.append(unique[-1])
    return unique


def sample_frames_glm41v(
    total_frames: int, video_fps: float, duration: float | None = None,
    target_fps: float = 2.0, max_duration: float = 300,
) -> list[int]:
    """Frame indices per GLM-4.1V: `target_fps` per second up to `max_duration` seconds."""
    _check_meta(total_frames, video_fps)
    last = total_frames - 1
    duration = duration or round(last / video_fps) + 1
    if duration <= max_duration:
        n = max(int(math.floor(duration * target_fps)), 1)
        indices = [min(last, int(math.ceil(i * video_fps / target_fps))) for i in range(n)]
    else:
        count = int(max_duration * target_fps)
        if count >= total_frames:
            indices = list(range(total_frames))
        else:
            seconds = np.linspace(0, duration, count, endpoint=True)
            indices = [min(last, int(math.ceil(t * video_fps))) for t in seconds]
    return _dedup_even(indices)


def sample_frames_glm46v(
    total_frames: int, video_fps: float, duration: float | None = None, temporal_patch_size: int = 2,
) -> list[int]:
    """Frame indices per GLM-4.6V: 3 fps up to 30 s, 1 fps up to 300 s, else 0.5 fps (<= 640)."""
    _check_meta(total_frames, video_fps)
    duration = duration or round((total_frames - 1) / video_fps) + 1
    effective = min(duration, 2400)
    rate = 3 if effective <= 30 else 1 if effective <= 300 else 0.5
    wanted = min(int(effective * rate * temporal_patch_size), 640)
    max_second = int(duration)
    if total_frames < wanted:
        indices = np.linspace(0, total_frames - 1, wanted, dtype=int).tolist()
    else:
        indices = []
        next_second = 0.0
        step = 1 / (temporal_patch_size * rate)
        for index in range(total_frames):
            if index * (1 / video_fps) >= next_second:
                next_second += step
                indices.append(index)
                if next_second >= max_second:
                    break
    if len(indices) < wanted:
        start, end = (indices[0], indices[-1]) if indices else (0, max(total_frames - 1, 0))
        indices = np.linspace(start, end, wanted, dtype=int).tolist()
    elif len(indices) > wanted:
        indices = np.linspace(0, total_frames - 1, wanted, dtype=int).tolist()
    return _dedup_even(indices)


def _check_meta(total_frames: int, video_fps: float) -> None:
    if total_frames <= 0:
        raise InputError("the video has no frames")
    if not video_fps or video_fps <= 0:
        raise InputError(f"the video frame rate must be positive, got {video_fps!r}")


# ----------------------------------------------------------------------------- decoding
@dataclass
class VideoClip:
    """Sampled frames of one video plus what the prompt needs to know about them."""

    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float  # frame rate of the source
    frames_indices: list[int]  # sampled indices (with the even-count repeat)

    @property
    def timestamps(self) -> list[float]:
        return [i / self.fps for i in self.frames_indices]


def _sample(cfg: VideoProcessorConfig, total: int, fps: float, duration: float | None) -> list[int]:
    if cfg.sampling == "glm46v":
        return sample_frames_glm46v(total, fps, duration, cfg.temporal_patch_size)
    return sample_frames_glm41v(total, fps, duration, cfg.fps, cfg.max_duration)


def read_video(path: str | Path, cfg: VideoProcessorConfig) -> VideoClip:
    """Decode the sampled frames of a video file with PyAV."""
    try:
        import av
    except ImportError as exc:
        raise InputError("reading video files needs PyAV: pip install 'glmv-agent[video]'") from exc
    path = Path(str(path).removeprefix("file://")).expanduser()
    if not path.is_file():
        raise InputError(f"video file {str(path)!r} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{str(path)!r} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else 0.0
            total = int(stream.frames)
            width, height = stream.codec_context.width, stream.codec_context.height
            if total <= 0:  # some containers (mkv, webm) do not store a frame count
                total = sum(1 for _ in container.decode(video=0))
                container.seek(0)
            duration = total / fps if fps else 0.0
            indices = _sample(cfg, total, fps, duration)
            wanted = set(indices)
            need = len(wanted) * max(height, 1) * max(width, 1) * 3
            if need > cfg.max_decoded_bytes:
                raise InputError(
                    f"video {str(path)!r} would decode to {need / 1e9:.1f} GB of frames; "
                    "lower fps, shorten the clip, or raise max_decoded_bytes"
                )
            frames = []
            last = max(indices)
            for i, frame in enumerate(container.decode(video=0)):
                if i > last:
                    break
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot decode video {str(path)!r}: {exc}") from exc
    if not frames:
        raise InputError(f"no frames could be decoded from {str(path)!r}")
    return VideoClip(np.stack(frames), fps, indices)


def clip_from_frames(frames: Sequence[Any], fps: float | None, sample: bool, cfg: VideoProcessorConfig) -> VideoClip:
    """A clip from already-decoded frames (PIL images or HxWx3 uint8 arrays) at `fps`."""
    if fps is None or fps <= 0:
        raise InputError("a video given as frames needs its frame rate: pass {'type': 'video', 'video': frames, 'fps': 30}")
    if len(frames) == 0:
        raise InputError("the video frame list is empty")
    arrays = [_frame_array(f, i) for i, f in enumerate(frames)]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise InputError("all frames of a video must have the same size")
    stacked = np.stack(arrays)
    if not sample:
        return VideoClip(stacked, float(fps), list(range(len(arrays))))
    indices = _sample(cfg, len(arrays), float(fps), len(arrays) / float(fps))
    return VideoClip(stacked[indices], float(fps), indices)


def _frame_array(frame: Any, index: int) -> np.ndarray:
    if isinstance(frame, Image.Image):
        return np.asarray(to_rgb(frame))
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3:
        return frame
    raise InputError(f"video frame {index} must be a PIL image or an HxWx3 uint8 array, got {type(frame).__name__}")


# ----------------------------------------------------------------------------- pixels
def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[T,3,H,W] uint8 -> [T,3,height,width] uint8, torchvision's bicubic antialias resize."""
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    if frames.device.type == "cpu":
        # torchvision hands uint8 straight to interpolate on CPU for bicubic.
        return F.interpolate(frames, size=[height, width], mode="bicubic", align_corners=False, antialias=True)
    out = F.interpolate(frames.float(), size=[height, width], mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def normalize_frames(frames: torch.Tensor, cfg: VideoProcessorConfig) -> torch.Tensor:
    """uint8 -> float32 `(x - mean/r) / (std/r)`, transformers' fused rescale+normalize."""
    mean = (torch.tensor(cfg.image_mean) * (1.0 / cfg.rescale_factor)).view(-1, 1, 1)
    std = (torch.tensor(cfg.image_std) * (1.0 / cfg.rescale_factor)).view(-1, 1, 1)
    return frames.to(torch.float32).sub(mean).div_(std)


def patchify_video(frames: torch.Tensor, cfg: VideoProcessorConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[T,3,h,w] -> ([T/2*gh*gw, 3*tp*p*p], (T/2, gh, gw)); odd T repeats the last frame."""
    tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    if pad := -frames.shape[0] % tp:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)], dim=0)
    t, c, h, w = frames.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # slice, by, bx, dy, dx, c, t, y, x
    return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)


VideoSource = Union[str, Path, Sequence[Any], VideoClip]


@dataclass
class ProcessedVideos:
    pixel_values_videos: torch.Tensor  # [sum(T/2*gh*gw), 1176] float32
    video_grid_thw: torch.Tensor  # [n, 3] int64
    timestamps: list[list[float]]  # per video, one per 2-frame slice


class Glm4vVideoProcessor:
    """Videos -> `pixel_values_videos`, `video_grid_thw` and per-slice timestamps."""

    def __init__(self, config: VideoProcessorConfig | None = None) -> None:
        self.config = config or VideoProcessorConfig()

    @classmethod
    def from_pretrained(cls, directory: str | Path, sampling: SamplingRule | None = None) -> "Glm4vVideoProcessor":
        path = Path(directory) / "video_preprocessor_config.json"
        cfg = VideoProcessorConfig.from_file(path) if path.is_file() else VideoProcessorConfig()
        if sampling is not None:
            cfg.sampling = sampling
        return cls(cfg)

    def load(self, source: VideoSource, fps: float | None = None, sample: bool = True) -> VideoClip:
        if isinstance(source, VideoClip):
            return source
        if isinstance(source, (str, Path)):
            return read_video(source, self.config)
        if isinstance(source, (list, tuple)) or (isinstance(source, np.ndarray) and source.ndim == 4):
            return clip_from_frames(list(source), fps, sample, self.config)
        raise InputError(
            f"unsupported video type {type(source).__name__}: pass a file path or a list of frames with fps"
        )

    def process_clip(self, clip: VideoClip) -> tuple[torch.Tensor, tuple[int, int, int], list[float]]:
        cfg = self.config
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2).contiguous()
        t, _, height, width = frames.shape
        # transformers refuses a 1-frame clip here; we budget it as the 2-frame slice it becomes.
        new_h, new_w = smart_resize(
            max(t, cfg.temporal_patch_size), height, width,
            temporal_factor=cfg.temporal_patch_size, factor=cfg.patch_size * cfg.merge_size,
            min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
        )
        pixels = normalize_frames(resize_frames(frames, new_h, new_w), cfg)
        patches, grid = patchify_video(pixels, cfg)
        stamps = clip.timestamps[::2][: grid[0]]
        while len(stamps) < grid[0]:
            stamps.append(stamps[-1] if stamps else 0.0)
        return patches, grid, stamps

    def __call__(self, videos: Sequence[VideoSource], fps: Sequence[float | None] | None = None) -> ProcessedVideos:
        if not videos:
            raise InputError("no videos to process")
        rates = list(fps) if fps is not None else [None] * len(videos)
        all_patches, grids, stamps = [], [], []
        for source, rate in zip(videos, rates):
            patches, grid, ts = self.process_clip(self.load(source, rate))
            all_patches.append(patches)
            grids.append(grid)
            stamps.append(ts)
        return ProcessedVideos(
            pixel_values_videos=torch.cat(all_patches, dim=0),
            video_grid_thw=torch.tensor(grids, dtype=torch.int64),
            timestamps=stamps,
        )
