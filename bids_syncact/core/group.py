"""Group statistics of one unit's FBN over subjects: the sign-flip group map and consistency.

Every function takes the subjects' maps of one unit as ``(n_subjects, n_voxels)`` over the group
mask (the voxels inside every subject's brain mask) and returns arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from nilearn.mass_univariate import permuted_ols

#: The fewest subjects the group level accepts: below it a sign-flip test has at most 4
#: distinct flips and no p below 0.25.
MIN_SUBJECTS = 3
#: Default number of random sign flips (nilearn's default).
N_PERMUTATIONS = 10000


@dataclass(frozen=True)
class GroupMap:
    """A unit's one-sample group map."""

    t: np.ndarray
    """``(n_voxels,)`` one-sample t of the subjects' coefficients; NaN where every subject's
    coefficient is the same (zero in all of them, as sparse maps often are)."""
    logp_fwe: np.ndarray
    """``(n_voxels,)`` ``-log10`` of the family-wise (max-|t| over voxels) corrected p."""
    h0_max_t: np.ndarray
    """``(n_permutations,)`` the largest |t| over voxels of each sign flip."""


def sign_flip_group_map(
    maps: np.ndarray, *, n_permutations: int = N_PERMUTATIONS, seed: int = 0, n_jobs: int = 1
) -> GroupMap:
    """Return the one-sample group map of a unit by sign-flip permutation, max-|t| FWE.

    The very call nilearn's ``non_parametric_inference`` makes for a one-sample design (an
    intercept column, contrast 1, ``model_intercept=True``, two-sided): it flips the sign of
    whole subject maps, so the spatial dependence within a map is kept, and corrects over
    voxels with the maximum |t| of each flip.

    Parameters
    ----------
    maps : ndarray of shape (n_subjects, n_voxels)
        Each subject's coefficients of the unit over the group mask (finite).
    n_permutations : int
        Random sign flips. With ``n_subjects`` subjects there are only ``2 ** n_subjects``
        distinct flips, which bounds the smallest p-value.
    seed : int
        Seeds the flips.
    n_jobs : int
        Processes for nilearn.

    Returns
    -------
    GroupMap

    Raises
    ------
    ValueError
        With fewer than :data:`MIN_SUBJECTS` subjects or non-finite maps.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 2 or maps.shape[0] < MIN_SUBJECTS:
        raise ValueError(f'need at least {MIN_SUBJECTS} subjects, got maps of shape {maps.shape}')
    if not np.all(np.isfinite(maps)):
        raise ValueError('maps must be finite over the group mask')
    with warnings.catch_warnings():
        # a voxel that is zero in every subject has no t: nilearn divides 0 by 0 there
        warnings.filterwarnings('ignore', category=RuntimeWarning)
        warnings.filterwarnings('ignore', message='Some descriptors in .target_vars. have zeros')
        out = permuted_ols(
            np.ones((maps.shape[0], 1)), maps, model_intercept=True, n_perm=n_permutations,
            two_sided_test=True, random_state=seed, n_jobs=n_jobs, verbose=0,
        )  # fmt: skip
    return GroupMap(
        t=np.asarray(out['t'][0], dtype=np.float32),
        logp_fwe=np.asarray(out['logp_max_t'][0], dtype=np.float32),
        h0_max_t=np.asarray(out['h0_max_t'][0], dtype=np.float64),
    )


def leave_one_out_consistency(maps: np.ndarray) -> np.ndarray:
    """Return each subject's spatial correlation with the mean map of the others.

    Parameters
    ----------
    maps : ndarray of shape (n_subjects, n_voxels)

    Returns
    -------
    ndarray of shape (n_subjects,)
        Pearson r of subject ``i``'s map with the mean of the others' maps. NaN where either is
        constant: a subject whose map is empty (every coefficient zero) has no spatial pattern
        to agree with, and is left out of the mean (:func:`consistency`) instead of counting as
        0 or 1.

    Examples
    --------
    >>> maps = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 7.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    >>> np.round(leave_one_out_consistency(maps), 3).tolist()
    [1.0, 0.954, 0.822, nan]
    """
    maps = np.asarray(maps, dtype=np.float64)
    n = maps.shape[0]
    others = (maps.sum(axis=0) - maps) / (n - 1)
    return np.array([_pearson(maps[i], others[i]) for i in range(n)])


def consistency(per_subject: np.ndarray) -> tuple[float, int]:
    """Return the mean of the finite leave-one-out correlations and how many there were.

    NaN (with 0) when no subject has a non-empty map with non-constant others.

    >>> value, n_used = consistency(np.array([0.5, np.nan, 0.7]))
    >>> round(value, 6), n_used
    (0.6, 2)
    """
    finite = np.asarray(per_subject, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float('nan'), 0
    return float(finite.mean()), int(finite.size)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x @ x) * (y @ y))
    if not norm > 0:
        return float('nan')
    return float(np.clip((x @ y) / norm, -1.0, 1.0))
