"""How well a set of unit maps recovers the demo's planted maps (numbers only, no app code).

Every function takes maps as ``(n_units, n_voxels)`` arrays over the brain mask, the planted maps
as ``(n_planted, n_voxels)`` in ``[0, 1]``, and which row of the maps belongs to each planted
unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

#: A voxel belongs to a planted unit's blob where its planted map exceeds this.
BLOB_LEVEL = 0.2


@dataclass(frozen=True)
class Recovery:
    """Recovery of one planted unit by one map."""

    r: float
    """Spatial Pearson correlation of the map with the planted map, over the brain mask."""
    auc: float
    """Detection AUC of ``|map|``: blob voxels (planted > 0.2) against voxels outside every
    planted blob (every planted map <= 0.2), the Gaussians' tails included."""
    leakage: float
    """Mean ``|map|`` over the other planted units' blobs divided by that over its own."""


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Return the area under the ROC curve (Mann-Whitney U), ties counted half.

    >>> auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])), auc(np.array([1.0]), np.array([1.0]))
    (1.0, 0.5)
    """
    ranks = rankdata(np.concatenate([positives, negatives]))
    n_pos, n_neg = len(positives), len(negatives)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def recovery(maps: np.ndarray, planted: np.ndarray, rows: list[int]) -> list[Recovery]:
    """Return the recovery of each planted unit ``j`` by ``maps[rows[j]]``.

    Parameters
    ----------
    maps : ndarray of shape (n_units, n_voxels)
        Estimated map of every unit.
    planted : ndarray of shape (n_planted, n_voxels)
        Planted maps in ``[0, 1]``.
    rows : list of int
        Row of ``maps`` of each planted unit, in the order of ``planted``.
    """
    blobs = planted > BLOB_LEVEL
    outside = ~blobs.any(axis=0)
    results = []
    for j, row in enumerate(rows):
        estimate = np.asarray(maps[row], dtype=np.float64)
        magnitude = np.abs(estimate)
        others = np.delete(blobs, j, axis=0).any(axis=0) & ~blobs[j]
        own = magnitude[blobs[j]].mean()
        r = np.corrcoef(estimate, planted[j])[0, 1] if estimate.std() > 0 else 0.0
        results.append(Recovery(
            r=float(r),
            auc=auc(magnitude[blobs[j]], magnitude[outside]),
            leakage=float(magnitude[others].mean() / own) if own > 0 else float('inf'),
        ))  # fmt: skip
    return results


def univariate_maps(D: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Return each unit's correlation map ``D'S`` (unit-norm, centred columns): ``(K, V)``."""
    return np.asarray(D, dtype=np.float64).T @ np.asarray(S, dtype=np.float64)


def ols_maps(D: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Return the least-squares coefficients of all units together: ``(K, V)``."""
    return np.linalg.lstsq(np.asarray(D, np.float64), np.asarray(S, np.float64), rcond=None)[0]
