"""Writing files so that nothing is lost: every output goes to a temporary file beside
its destination and replaces it with ``os.replace`` only when complete."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from contextlib import contextmanager

import numpy as np
import torch


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


@contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically
    (``os.replace``), on failure it is removed and ``path`` is left untouched. The
    temporary name ends with the real name, so extension-sniffing writers still work."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path) -> None:
    """torch.save through a temporary file in the same folder and os.replace."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_array_text(path, array, fmt="%.6g", header: str = "") -> None:
    """``np.savetxt`` to ``path`` atomically (``header`` lines start with '# ')."""
    with atomic_output(path) as tmp:
        np.savetxt(tmp, np.asarray(array), fmt=fmt, header=header)
