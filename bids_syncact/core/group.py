"""Group statistics of one unit's FBN over subjects: the sign-flip group map and consistency.

Every function takes the subjects' maps of one unit as ``(n_subjects, n_voxels)`` over the group
mask (the voxels inside every subject's brain mask) and returns arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The fewest subjects the group level accepts: below it a sign-flip test has at most 4
#: distinct flips and no p below 0.25.
MIN_SUBJECTS = 3
#: The most sign flips drawn (nilearn's default); fewer subjects are enumerated exactly.
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
    """``(n_flips,)`` the largest |t| over voxels of each sign flip."""
    exact: bool
    """Whether every distinct flip was enumerated (the p-values are exact)."""

    @property
    def smallest_p(self) -> float:
        """The smallest p-value these flips can give."""
        n = len(self.h0_max_t)
        return 1.0 / n if self.exact else 1.0 / (1.0 + n)


def sign_flip_group_map(
    maps: np.ndarray, *, n_permutations: int = N_PERMUTATIONS, seed: int = 0
) -> GroupMap:
    """Return the one-sample group map of a unit by sign-flip permutation, max-|t| FWE.

    The test of nilearn's ``non_parametric_inference`` for a one-sample design (two-sided,
    the sign of whole subject maps flipped, so the spatial dependence within a map is kept;
    family-wise correction over voxels with the maximum |t| of each flip), computed for all
    flips at once with matrix products. With ``2 ** (n - 1) <= n_permutations`` every distinct
    flip is enumerated (``f`` and ``-f`` give the same |t|, so half of them) and the p-value is
    exact: ``#{flips with max |t| >= |t_v|} / 2 ** (n - 1)``, the identity included. Otherwise
    ``n_permutations`` seeded random flips give nilearn's ``(1 + count) / (1 + n_permutations)``.

    Parameters
    ----------
    maps : ndarray of shape (n_subjects, n_voxels)
        Each subject's coefficients of the unit over the group mask (finite).
    n_permutations : int
        The most flips to draw; fewer when all distinct flips can be enumerated.
    seed : int
        Seeds the random flips.

    Returns
    -------
    GroupMap

    Raises
    ------
    ValueError
        With fewer than :data:`MIN_SUBJECTS` subjects or non-finite maps.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 2 or maps.shape[0] < MIN_SUBJECTS:
        raise ValueError(f'need at least {MIN_SUBJECTS} subjects, got maps of shape {maps.shape}')
    if not np.all(np.isfinite(maps)):
        raise ValueError('maps must be finite over the group mask')
    n = maps.shape[0]
    exact = 2 ** (n - 1) <= n_permutations
    flips = _all_flips(n) if exact else _random_flips(n, n_permutations, seed)
    # |t| = sqrt(n - 1) u / sqrt(1 - u^2) with u = |f.x| / sqrt(n x.x), which a flip f does not
    # change but through f.x: the largest |t| of a flip is that of its largest u, so the null
    # needs one product with the scaled maps and a maximum, not a t per voxel and flip. Voxels
    # that are zero in every subject have no t and take no part.
    sum_sq = np.einsum('ij,ij->j', maps, maps)
    active = sum_sq > 0
    scaled = maps[:, active] / np.sqrt(n * sum_sq[active])
    u = np.abs(scaled.sum(axis=0))
    h0_u = np.concatenate([
        np.abs(flips[i : i + _FLIP_BLOCK] @ scaled).max(axis=1, initial=0.0)
        for i in range(0, len(flips), _FLIP_BLOCK)
    ])  # fmt: skip
    # count per voxel the flips whose maximum reaches its u (the identity always does, up to
    # rounding between the two products)
    count = len(h0_u) - np.searchsorted(np.sort(h0_u), u * (1.0 - 1e-12), side='left')
    p = np.ones(maps.shape[1])
    p[active] = count / len(h0_u) if exact else (1.0 + count) / (1.0 + len(h0_u))
    t = np.full(maps.shape[1], np.nan)
    t[active] = np.sign(scaled.sum(axis=0)) * _t_of_u(u, n)
    return GroupMap(t=t.astype(np.float32), logp_fwe=(-np.log10(np.minimum(p, 1.0))).astype(
        np.float32), h0_max_t=_t_of_u(h0_u, n), exact=exact)  # fmt: skip


#: Flips per matrix product (memory: _FLIP_BLOCK x n_voxels doubles).
_FLIP_BLOCK = 64


def _t_of_u(u: np.ndarray, n: int) -> np.ndarray:
    """Return the one-sample t of ``n`` values whose normalised sum is ``u`` (see above).

    >>> x = np.array([1.0, 2.0, 4.0])
    >>> u = x.sum() / np.sqrt(3 * (x @ x))
    >>> t = x.mean() / (x.std(ddof=1) / np.sqrt(3))
    >>> bool(np.isclose(_t_of_u(np.array([u]), 3)[0], t))
    True
    """
    with np.errstate(divide='ignore'):
        return np.sqrt(n - 1.0) * u / np.sqrt(np.maximum(1.0 - u * u, 0.0))


def _all_flips(n: int) -> np.ndarray:
    """Return every sign pattern with the first subject positive, the identity first.

    >>> _all_flips(3).tolist()
    [[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, -1.0]]
    """
    bits = (np.arange(2 ** (n - 1))[:, None] >> np.arange(n - 1)[None, :]) & 1
    return np.hstack([np.ones((len(bits), 1)), 1.0 - 2.0 * bits])


def _random_flips(n: int, n_permutations: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0xF11B])
    return rng.choice([-1.0, 1.0], size=(n_permutations, n))


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
