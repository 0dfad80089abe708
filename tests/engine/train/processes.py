"""Processes of the tests that start training processes (loader workers, torchrun ranks)."""

from __future__ import annotations

import os


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the data-loading workers)."""
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except (OSError, ValueError, IndexError):
            continue
    return out
