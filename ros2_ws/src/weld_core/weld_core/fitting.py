"""Numeric helpers of the robust fits in the preprocessing and the rules (numpy only).

Both fit planes and curves to a few thousand pixels several times per frame on the board's CPU, so
the per-call overhead of numpy's general routines (gathering the kept points, an SVD of the tall
design matrix, ``np.median``'s checks) matters more than their arithmetic: the helpers here give the
same results (within float rounding) in fewer passes.
"""

import numpy as np


def median(values: np.ndarray) -> float:
    """``np.median`` of a non-empty 1-D array (the middle value, or the mean of the two), one partition."""
    half = values.size // 2
    ordered = np.partition(values, half)
    if values.size % 2:
        return float(ordered[half])
    return float(0.5 * (ordered[:half].max() + ordered[half]))


def least_squares_3(u: np.ndarray, v: np.ndarray, values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(a, b, c) minimising sum(weight * (a*u + b*v + c - values)**2) over 1-D float64 arrays.

    ``weight`` may be a boolean mask (the points to use) or non-negative weights. The normal
    equations of the three unknowns are built from dot products and solved as least squares
    themselves, so a degenerate set of points (all on one line) gives the minimum-norm solution
    as ``np.linalg.lstsq`` on the points would, instead of an error. Scale ``u`` and ``v`` to
    similar ranges first: the normal equations square the design's condition number.
    """
    weight = np.asarray(weight, dtype=np.float64)
    wu, wv = weight * u, weight * v
    su, sv, total = float(wu.sum()), float(wv.sum()), float(weight.sum())
    suv = float(np.dot(wu, v))
    gram = np.array([[np.dot(wu, u), suv, su], [suv, np.dot(wv, v), sv], [su, sv, total]])
    rhs = np.array([np.dot(wu, values), np.dot(wv, values), np.dot(weight, values)])
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]
