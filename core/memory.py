"""How much memory a container may give to arrays it reads: training's channels, serving's weights."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_budget() -> int:
    """Bytes the arrays may take in memory: half of what this container may use (its cgroup
    limit, else the machine's memory). Hand-written: no library in the image reads cgroups."""
    limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in CGROUP_MEMORY_LIMITS:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            limit = min(limit, int(value))
    return limit // 2
