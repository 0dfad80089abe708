"""The engine's errors: one base class that the CLI and the ChimeraX bundle catch.

Every message names the file, field or setting at fault and what was expected; the
subclasses say which stage of the work failed. Each is also a ``ValueError`` or
``RuntimeError``, so callers that caught those before still do.
"""

from __future__ import annotations


class GaussianEMError(Exception):
    """Base of every error the engine raises on purpose (bad input, failed training)."""


class InputError(GaussianEMError, ValueError):
    """An input file or value (map, atomic model, latent, selection, option) is not what
    was expected."""


class ParticleFileError(GaussianEMError, ValueError):
    """A particle file (.star, .cs, .mrc/.mrcs) is missing, malformed or inconsistent."""


class TrainingError(GaussianEMError, RuntimeError):
    """A training run cannot start or go on (bad input or settings, a run that failed its
    health checks); the message says why and what to try."""


class ResultError(GaussianEMError, ValueError):
    """A result folder cannot be read, or a request on it (latent, particle, part) is out
    of range."""
