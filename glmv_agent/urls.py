"""The one allow-list rule for where pages may go, shared by the policy and the web env.

An entry is a host name ("example.com": that host and its subdomains, any port), a
wildcard ("*.example.com": the same), a host with a port ("127.0.0.1:8000": exactly that
host and port) or a full URL ("https://example.com:8443/path": its host, and its port when
it names one). Case, a trailing dot and the path do not matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .errors import ConfigError

# Schemes a page of an allowed host may use (websockets of the page included).
PAGE_SCHEMES = ("http", "https", "ws", "wss")


def normalize_allowed_domains(domains: Iterable[str] | None) -> tuple[str, ...] | None:
    """Clean an allow-list into "host" / "host:port" entries; None means no restriction."""
    if domains is None:
        return None
    if isinstance(domains, str):
        domains = [domains]
    cleaned: list[str] = []
    for domain in domains:
        if not isinstance(domain, str) or not domain.strip():
            raise ConfigError(f"allowed_domains must be non-empty strings, got {domain!r}")
        text = domain.strip().lower()
        if "://" in text:
            text = urlsplit(text).netloc
        text = text.split("/")[0].rsplit("@", 1)[-1].removeprefix("*.").lstrip(".")
        host, _, port = text.partition(":")
        host = host.rstrip(".")
        if not host:
            raise ConfigError(f"allowed domain {domain!r} has no host name")
        if port and not port.isdigit():
            raise ConfigError(f"allowed domain {domain!r}: the port must be a number")
        cleaned.append(f"{host}:{int(port)}" if port else host)
    return tuple(cleaned)


def url_allowed(url: str, allowed: tuple[str, ...] | None) -> bool:
    """Whether a page may be at `url`: any URL when there is no allow-list; otherwise an
    http(s)/ws(s) URL whose host matches an entry. Blank pages are always allowed."""
    if allowed is None or url in ("", "about:blank"):
        return True
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in PAGE_SCHEMES:
        return False
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:  # a port out of range: not a URL any entry can allow
        return False
    for entry in allowed:
        entry_host, _, entry_port = entry.partition(":")
        if entry_port:
            if host == entry_host and port is not None and port == int(entry_port):
                return True
        elif host == entry_host or host.endswith("." + entry_host):
            return True
    return False
