"""GLM-4.1V image preprocessing: load, smart-resize, normalize, patchify.

Bit-exact with transformers' `Glm4vImageProcessorPil` (the PIL backend): RGB conversion
(alpha composited onto white), PIL bicubic resize of the uint8 image, `x * (1/255)` in float64
cast to float32, `(x - mean) / std` in float32, then the 2x2-merge-block patch order the
vision tower expects. Images arrive as PIL images, HWC uint8 arrays, file paths, `data:`
URLs or encoded bytes; anything unreadable or too large is an InputError naming the source.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ..errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_INPUT_PIXELS = 100_000_000  # refuse images above 100 MP before decoding them

ImageSource = Union[Image.Image, np.ndarray, str, Path, bytes, bytearray]


def smart_resize(
    num_frames: int,
    height: int,
    width: int,
    temporal_factor: int = 2,
    factor: int = 28,
    min_pixels: int = 112 * 112,
    max_pixels: int = 14 * 14 * 2 * 2 * 2 * 6144,
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, with frames*h*w within the pixel budget.

    Images count as a 2-frame clip. Python's round() (banker's rounding) is intended.
    """
    if num_frames < temporal_factor:
        raise InputError(f"need at least {temporal_factor} frames to resize, got {num_frames}")
    if height <= 0 or width <= 0:
        raise InputError(f"image has an empty size {width}x{height}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height = int(height * scale)
        width = int(width * scale)
    ratio = max(height, width) / min(height, width)
    if ratio > 200:
        raise InputError(
            f"image aspect ratio {ratio:.1f} is above 200 (size {width}x{height}); crop or pad it first"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass
class ImageProcessorConfig:
    """Values of `preprocessor_config.json` (defaults: the GLM-4.1V family's)."""

    min_pixels: int = 12544
    max_pixels: int = 9633792
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "ImageProcessorConfig":
        try:
            return cls(**pixel_fields(cfg, cls), extra=dict(cfg))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid preprocessor config values: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> "ImageProcessorConfig":
        return cls.from_dict(read_config_json(path))


def pixel_fields(cfg: dict[str, Any], defaults: Any) -> dict[str, Any]:
    """The fields image and video preprocessor configs share, parsed from `cfg`.

    `defaults` is the config class (its field defaults fill what `cfg` lacks). Older configs
    spell the pixel budget min_pixels/max_pixels instead of size.
    """
    size = cfg.get("size") or {}
    return {
        "min_pixels": int(size.get("shortest_edge", cfg.get("min_pixels", defaults.min_pixels))),
        "max_pixels": int(size.get("longest_edge", cfg.get("max_pixels", defaults.max_pixels))),
        "patch_size": int(cfg.get("patch_size", defaults.patch_size)),
        "temporal_patch_size": int(cfg.get("temporal_patch_size", defaults.temporal_patch_size)),
        "merge_size": int(cfg.get("merge_size", defaults.merge_size)),
        "image_mean": tuple(float(v) for v in cfg.get("image_mean", OPENAI_CLIP_MEAN)),
        "image_std": tuple(float(v) for v in cfg.get("image_std", OPENAI_CLIP_STD)),
        "rescale_factor": float(cfg.get("rescale_factor", 1 / 255)),
    }


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A preprocessor config file's JSON object; CheckpointError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- loading
def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        text = str(source)
        # Paths are shown whole; data URLs only by their start.
        return repr(text[:40] + "...") if text.startswith("data:") and len(text) > 40 else repr(text)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _decode_data_url(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InputError(f"bad data URL {_describe(url)}: no ',' separating header and data")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"bad data URL {_describe(url)}: invalid base64 ({exc})") from exc
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


def _open_encoded(data: bytes | Path, source: Any, max_input_pixels: int) -> Image.Image:
    """Decode an encoded image, checking its declared size before decoding the pixels."""
    name = _describe(source)
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(stream)
            width, height = img.size
            if width * height > max_input_pixels:
                raise InputError(
                    f"image {name} is {width}x{height} = {width * height / 1e6:.1f} MP, above the "
                    f"{max_input_pixels / 1e6:.0f} MP limit; downscale it or raise max_input_pixels"
                )
            img.load()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {name} is too large to decode safely ({exc}); downscale it") from exc
    except FileNotFoundError as exc:
        raise InputError(f"image file {name} does not exist") from exc
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as exc:
        raise InputError(f"cannot decode image {name}: {exc} (corrupt, truncated or not an image?)") from exc
    return img


def load_image(source: ImageSource, max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> Image.Image | np.ndarray:
    """Decode `source` to a PIL image (arrays are returned as validated uint8 arrays)."""
    if isinstance(source, Image.Image):
        if source.width * source.height > max_input_pixels:
            raise InputError(
                f"image is {source.width}x{source.height}, above the {max_input_pixels / 1e6:.0f} MP limit; downscale it"
            )
        return source
    if isinstance(source, np.ndarray):
        return _check_array(source, max_input_pixels)
    if isinstance(source, (bytes, bytearray)):
        return _open_encoded(bytes(source), source, max_input_pixels)
    if isinstance(source, Path) or isinstance(source, str):
        text = str(source)
        if text.startswith("data:"):
            return _open_encoded(_decode_data_url(text), source, max_input_pixels)
        if text.startswith(("http://", "https://")):
            raise InputError(f"image {_describe(source)} is a web URL; download it and pass the file or bytes")
        if text.startswith("file://"):
            text = text[len("file://"):]
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"image file {_describe(source)} does not exist")
        return _open_encoded(path, source, max_input_pixels)
    raise InputError(
        f"unsupported image type {type(source).__name__}: pass a PIL image, a HxWxC uint8 array, "
        "a file path, a data: URL or encoded bytes"
    )


def _check_array(array: np.ndarray, max_input_pixels: int) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 (0..255), got {array.dtype}; convert with .astype(np.uint8)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise InputError(f"image arrays must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] * array.shape[1] > max_input_pixels:
        raise InputError(f"image array {array.shape} is above the {max_input_pixels / 1e6:.0f} MP limit")
    if 0 in array.shape:
        raise InputError(f"image array has an empty size {array.shape}")
    return array


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """RGB PIL image; transparency is composited onto white exactly as transformers does."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        elif image.shape[-1] == 4:
            alpha = image[..., 3:4] / 255
            blended = alpha * image[..., :3] + (1 - alpha) * 255
            image = np.round(blended).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# ----------------------------------------------------------------------------- pixels
def normalize(pixels_hwc: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
    """uint8 HWC -> float32 CHW, rescaled and normalized in transformers' exact op order."""
    x = (pixels_hwc.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    std = np.asarray(cfg.image_std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def patchify_image(chw: np.ndarray, cfg: ImageProcessorConfig) -> tuple[np.ndarray, int, int]:
    """[3, h, w] -> ([gh*gw, 3*tp*p*p] in 2x2 merge-block order, gh, gw); frame repeated tp times."""
    channels, height, width = chw.shape
    p, m, tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    gh, gw = height // p, width // p
    x = chw.reshape(channels, gh // m, m, p, gw // m, m, p)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # by, bx, dy, dx, c, y, x
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], tp, p, p))
    return x.reshape(gh * gw, channels * tp * p * p), gh, gw


@dataclass
class ProcessedImages:
    pixel_values: np.ndarray  # [sum(gh*gw), 1176] float32
    image_grid_thw: np.ndarray  # [n, 3] int64

    def num_tokens(self, index: int, merge_size: int = 2) -> int:
        return int(np.prod(self.image_grid_thw[index])) // (merge_size * merge_size)


class Glm4vImageProcessor:
    """Images -> `pixel_values` + `image_grid_thw` (PIL backend semantics)."""

    def __init__(self, config: ImageProcessorConfig | None = None) -> None:
        self.config = config or ImageProcessorConfig()

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Glm4vImageProcessor":
        path = Path(directory) / "preprocessor_config.json"
        if not path.is_file():
            logger.warning("no preprocessor_config.json in %s; using GLM-4.1V defaults", directory)
            return cls()
        return cls(ImageProcessorConfig.from_file(path))

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        cfg = self.config
        return smart_resize(
            cfg.temporal_patch_size, height, width, temporal_factor=cfg.temporal_patch_size,
            factor=cfg.factor, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
        )

    def preprocess_one(self, source: ImageSource) -> tuple[np.ndarray, tuple[int, int, int]]:
        image = to_rgb(load_image(source, self.config.max_input_pixels))
        height, width = self.target_size(image.height, image.width)
        resized = image.resize((width, height), resample=Image.Resampling.BICUBIC)
        chw = normalize(np.asarray(resized), self.config)
        patches, gh, gw = patchify_image(chw, self.config)
        return patches, (1, gh, gw)

    def __call__(self, images: list[ImageSource]) -> ProcessedImages:
        if not images:
            raise InputError("no images to process")
        all_patches, grids = [], []
        for source in images:
            patches, grid = self.preprocess_one(source)
            all_patches.append(patches)
            grids.append(grid)
        return ProcessedImages(
            pixel_values=np.concatenate(all_patches, axis=0),
            image_grid_thw=np.asarray(grids, dtype=np.int64),
        )
