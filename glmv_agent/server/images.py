"""Image parts -> pixels, under the server's fetching policy.

Runs after a request is admitted (so a queue of huge images is refused before anything is
decoded). Data URLs always work. http(s) URLs only with `--allow-remote-images`, and then
only to public addresses: the host is resolved here, every address must be public
(not loopback, private, link-local / cloud metadata, shared, reserved or multicast), the
connection goes to the checked address (no second lookup a DNS rebinding could change),
redirects are followed by hand and each new location is checked the same way, and the
download is capped in bytes and in time. No proxy settings from the environment are used.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from .config import ServerConfig
from .protocol import ImageRef, RequestError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Decoders for what screenshots come as; never Pillow's others (EPS would start Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_REDIRECTS = (301, 302, 303, 307, 308)


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses, judging IPv4 embedded in IPv6 by itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return is_public_address(embedded)
    return ip.is_global and not ip.is_multicast


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, as a connection would use)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from and how large they may be."""

    allow_remote: bool = False
    max_image_bytes: int = 16 * 1024 * 1024
    max_request_pixels: int = 40_000_000
    fetch_timeout_s: float = 10.0
    max_redirects: int = 3
    # Which resolved addresses may be contacted; tests stand a loopback alias in for a public host.
    address_allowed: Callable[[IPAddress], bool] = field(default=is_public_address)
    resolve: Callable[[str, int], list[str]] = field(default=resolve_host)

    @classmethod
    def from_config(cls, config: ServerConfig) -> ImagePolicy:
        return cls(allow_remote=config.allow_remote_images, max_image_bytes=config.max_image_bytes,
                   max_request_pixels=config.max_request_pixels, fetch_timeout_s=config.fetch_timeout_s,
                   max_redirects=config.max_redirects)


def load_images(messages: list[dict[str, Any]], policy: ImagePolicy) -> list[dict[str, Any]]:
    """The messages with every ImageRef replaced by an RGB PIL image (all within the pixel cap)."""
    budget = policy.max_request_pixels
    loaded: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part.get("image"), ImageRef):
                    image = decode_image(image_bytes(part["image"].url, policy), budget, policy)
                    budget -= image.width * image.height
                    part = {"type": "image", "image": image}
                parts.append(part)
            content = parts
        loaded.append({"role": message["role"], "content": content})
    return loaded


def image_bytes(url: str, policy: ImagePolicy) -> bytes:
    """The encoded image behind a data: or http(s) URL. Never a local path."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise RequestError("image data URLs must be base64 encoded (data:image/png;base64,...)")
        if len(payload) * 3 // 4 > policy.max_image_bytes:
            raise RequestError(f"an image is larger than {policy.max_image_bytes // 2**20} MiB", 413)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"image data URL is not valid base64: {exc}") from None
    if url.startswith(("http://", "https://")):
        if not policy.allow_remote:
            raise RequestError("remote image URLs are disabled on this server (start it with "
                               "--allow-remote-images to allow public http(s) images); send a data: URL")
        return fetch_remote(url, policy)
    raise RequestError("image_url.url must be a data: URL or an http(s) URL; local paths are not accepted")


@dataclass(frozen=True)
class _Target:
    url: str  # with the checked address in place of the host name
    host_header: str
    host: str


def _checked_target(url: str, policy: ImagePolicy) -> _Target:
    """Resolve and check one URL; RequestError unless every address it names is allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RequestError("image URL is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise RequestError("image URLs (and their redirects) must be http or https")
    if "@" in parts.netloc:
        raise RequestError("image URLs with user information (user@host) are refused")
    host = parts.hostname
    if not host:
        raise RequestError("image URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in policy.resolve(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise RequestError(f"image URL host {host!r:.100} could not be resolved") from None
    if not addresses or not all(policy.address_allowed(a) for a in addresses):
        raise RequestError(f"image URL host {host!r:.100} is not a public address; this server only "
                           "fetches images from public hosts", 403, "forbidden_image_url")
    ip = addresses[0]
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = port == (443 if parts.scheme == "https" else 80)
    return _Target(url=f"{parts.scheme}://{literal}:{port}{path}",
                   host_header=host if default_port else f"{host}:{port}", host=host)


def fetch_remote(url: str, policy: ImagePolicy) -> bytes:
    """Download a public image, following at most `max_redirects` checked redirects."""
    deadline = time.monotonic() + policy.fetch_timeout_s
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            target = _checked_target(url, policy)
            try:
                with client.stream("GET", target.url, headers={"Host": target.host_header, "Accept": "image/*"},
                                   timeout=max(deadline - time.monotonic(), 0.01),
                                   extensions={"sni_hostname": target.host}) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise RequestError(f"fetching the image from {target.host!r:.100} gave HTTP "
                                           f"{response.status_code}")
                    return _read_capped(response, policy.max_image_bytes, deadline)
            except httpx.TimeoutException:
                raise RequestError(f"fetching the image took longer than {policy.fetch_timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise RequestError(f"could not fetch the image from {target.host!r:.100} "
                                   f"({type(exc).__name__})") from None
    raise RequestError(f"fetching the image was redirected more than {policy.max_redirects} times")


def _read_capped(response: httpx.Response, limit: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the image is larger than {limit // 2**20} MiB", 413)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the image is larger than {limit // 2**20} MiB", 413)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("image download deadline")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(raw: bytes, pixel_budget: int, policy: ImagePolicy) -> Image.Image:
    """An RGB image, refused (413) before decoding when it would exceed the pixel budget."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as probe:
            width, height = probe.size
            if width * height > pixel_budget:
                raise RequestError(
                    f"an image is {width}x{height} pixels; the images of one request may have at most "
                    f"{policy.max_request_pixels} pixels in all", 413)
            probe.load()
            return probe.convert("RGB")
    except UnidentifiedImageError:
        raise RequestError("image could not be decoded: not a PNG, JPEG, WebP, GIF or BMP file") from None
    except Image.DecompressionBombError:
        raise RequestError(f"an image has more than {policy.max_request_pixels} pixels", 413) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise RequestError("image could not be decoded: the file is truncated or corrupt") from None
