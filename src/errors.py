"""The one place where the engine's errors become ChimeraX ``UserError``\\ s.

Every ``gaussianem`` command (:mod:`.commands`) and the Latent Explorer's entry points are
wrapped in :func:`user_errors`: an engine error (a ``gaussianem.errors.GaussianEMError``:
bad input, a training that cannot start, a request a result cannot answer) is shown as a
one-line message in the log, without a traceback, as a user's mistake should be.
"""

from __future__ import annotations

import functools

from chimerax.core.errors import UserError

from gaussianem.errors import GaussianEMError


def user_errors(function):
    """``function``, with the engine's errors raised as UserErrors."""

    @functools.wraps(function)
    def wrapper(*args, **kw):
        try:
            return function(*args, **kw)
        except GaussianEMError as e:
            raise UserError(str(e)) from None
    return wrapper
