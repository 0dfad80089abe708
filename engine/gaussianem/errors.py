"""The engine's errors: one base class that the CLI and the ChimeraX bundle catch.

Every message names the file, field or setting at fault and what was expected; the
subclasses say which stage of the work failed.
"""

from __future__ import annotations


class GaussianEMError(Exception):
    """Base of every error the engine raises on purpose (bad input, failed training)."""


class TrainingError(GaussianEMError, RuntimeError):
    """A training run cannot start or go on (bad input or settings, a run that failed its
    health checks); the message says why and what to try."""
