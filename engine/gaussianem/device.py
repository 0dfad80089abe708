"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from gaussianem.errors import TrainingError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise TrainingError(f"unknown device {name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)
