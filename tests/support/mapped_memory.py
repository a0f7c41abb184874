"""How much of this process's RSS lies in memory maps of given files (Linux /proc/self/smaps)."""

from __future__ import annotations

from pathlib import Path


def mapped_rss(prefix: Path) -> int:
    """Bytes of RSS in mappings of files whose path starts with `prefix` (a file or a folder)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and fields[0][-1] != ":":  # a mapping's header line: range perms ... path
            inside = len(fields) >= 6 and fields[-1].startswith(str(prefix))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total
