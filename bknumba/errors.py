"""Exceptions and warnings raised by bknumba."""
from __future__ import annotations

import numpy as np

__all__ = ["SingularResolventError", "BKNumbaWarning"]


class SingularResolventError(np.linalg.LinAlgError):
    """``T - zI`` is singular or nearly so: a pivot came (near) zero.

    Attributes
    ----------
    rows : ndarray of int
        Batch rows in which a (near-)zero pivot was found.
    positions : ndarray of int
        For each row in ``rows``, the first position of such a pivot.
    """

    def __init__(self, message: str, rows=(), positions=()):
        super().__init__(message)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.positions = np.asarray(positions, dtype=np.int64)


class BKNumbaWarning(RuntimeWarning):
    """Base class of bknumba's warnings."""
