"""Significance of the FBN coefficients by circularly shifted dictionaries (DESIGN.md 2.4).

Each null shifts every run's raw synchronized activations ``D`` circularly in time (the same
shift for all voxels and units of a run, drawn with the seed, independently per run), then
cleans and solves it exactly like the real ``D``. The shift keeps each unit's autocorrelation
and the units' correlations with one another, and breaks only their alignment with the brain.

**Any non-zero shift, uniformly** (``MIN_SHIFT_S = 0``): the real dictionary (shift 0) and the
N nulls are then, run by run, a uniformly random set of N + 1 rotations that contains 0, so each
of them stands to the others as the real one does, and the N + 1 maps are exchangeable: the rank
of the real map's statistic among them is uniform without coupling (the random-rotation test).
Until issue 18 the shifts were kept at least 60 s from zero, to keep the real response out of the
nulls. That left the real map the only one far from all others, while the nulls, 99 of a few
hundred shifts of a run, sit next to one another; a statistic that varies slowly with the shift
(slow resting fluctuations make it so) then has nulls that clump, and the real map lands in their
sparse upper tail too often. On structured nulls (``benchmarks/bench_calibration.py``, 200
datasets of two 180-volume runs at TR 1.5 s, 99 nulls, where p < 0.05 should be 4% and p < 0.1
9%): at a fixed alpha 6.4-6.9% and 12-13% of clusters, and 4.0-3.5% and 8.9-9.6% with any
non-zero shift; at the group level (3 subjects, alpha by cross-validation, 5% expected) 7.0-8.3%,
then 4.4-4.9%. Neither the onset transient that a shift carries into the middle of a run nor
the alpha chosen on the real data changed these rates measurably.

The cost: a null whose shift is near zero in some run carries part of the real response. A
statistic that stops growing once a map lies inside one network (``logp``) then ties such a null
with the real map, and a single subject's planted coupling is labelled less often (at 2 noise SDs
on a milder background, 23% of subjects against 67% with the 60 s margin; three subjects' group
test labels it in all datasets either way). The subject level's statistic, the contrast, grows
with the coupling, so the half-coupled nulls stay below the real map
(:data:`~bids_syncact.core.calibration.SUBJECT_STATISTIC`).

Per voxel and unit the empirical p-value is ``(1 + #{|null| >= |a|}) / (1 + N)``, written as a z
score; per unit the family-wise threshold is a quantile of the largest ``|null|`` over voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from bids_syncact.errors import InputDataError

#: Smallest circular shift, in seconds from zero either way. 0: any non-zero shift, so that the
#: real and null dictionaries are exchangeable (the module docstring says why; 60 s before).
MIN_SHIFT_S = 0.0
#: Level of the per-unit family-wise threshold.
FWE_LEVEL = 0.05


def allowed_shifts(n_vols: int, t_r: float, min_shift_s: float = MIN_SHIFT_S) -> np.ndarray:
    """Return the circular shifts (volumes) of a run that are at least ``min_shift_s`` from zero.

    Parameters
    ----------
    n_vols : int
        Stored volumes of the run (the rows that are shifted).
    t_r : float
        Repetition time (s).
    min_shift_s : float
        Smallest distance from zero (s), either way around the circle.

    Returns
    -------
    ndarray of int
        Shifts ``s`` with ``min(s, n_vols - s) * t_r >= min_shift_s``, increasing; never 0 (the
        real dictionary).

    Examples
    --------
    >>> allowed_shifts(6, 1.0).tolist()
    [1, 2, 3, 4, 5]
    >>> allowed_shifts(130, 1.0, min_shift_s=60.0).tolist() == list(range(60, 71))
    True
    """
    margin = math.ceil(min_shift_s / t_r - 1e-9)
    return np.arange(max(margin, 1), n_vols - max(margin, 1) + 1, dtype=np.intp)


def draw_shifts(
    n_vols: Sequence[int],
    t_r: Sequence[float],
    n_nulls: int,
    *,
    seed: int,
    names: Sequence[str] | None = None,
    min_shift_s: float = MIN_SHIFT_S,
) -> np.ndarray:
    """Return ``(n_nulls, n_runs)`` circular shifts, distinct within each run, seeded.

    Each run's shifts are a uniform draw without replacement from :func:`allowed_shifts`,
    independent of the other runs': with the default (any non-zero shift) the real dictionary
    and the nulls are exchangeable (module docstring).

    Parameters
    ----------
    n_vols, t_r : sequence
        Stored volumes and repetition time (s) of each run.
    n_nulls : int
        Null dictionaries wanted.
    seed : int
        ``--random-seed``: the same seed draws the same shifts.
    names : sequence of str, optional
        Run names for the refusal.

    Raises
    ------
    InputDataError
        When a run has fewer than ``n_nulls`` allowed shifts (``n_vols - 1`` by default).

    Examples
    --------
    >>> shifts = draw_shifts([120, 200], [1.0, 1.0], 99, seed=0)
    >>> shifts.shape, bool(shifts.min() >= 1), len(set(shifts[:, 0].tolist()))
    ((99, 2), True, 99)
    """
    rng = np.random.default_rng([seed, 0x5EED])
    shifts = np.zeros((n_nulls, len(n_vols)), dtype=np.intp)
    for r, (n, tr) in enumerate(zip(n_vols, t_r, strict=True)):
        allowed = allowed_shifts(n, tr, min_shift_s)
        if allowed.size < n_nulls:
            name = names[r] if names else f'run {r + 1}'
            which = (
                f'at least {min_shift_s:g} s from zero' if min_shift_s > 0 else 'other than zero'
            )
            raise InputDataError(
                f'{name}: {n} volumes at TR {tr:g} s allow only {allowed.size} distinct circular '
                f'shifts ({which}), fewer than --n-nulls {n_nulls}; lower --n-nulls to at most '
                f'{allowed.size}'
            )
        shifts[:, r] = rng.choice(allowed, size=n_nulls, replace=False)
    return shifts


def shift_runs(raw_runs: Sequence[np.ndarray], shifts: Sequence[int]) -> list[np.ndarray]:
    """Return each run's raw activations circularly shifted by its shift (volumes).

    The null dictionary of one row of :func:`draw_shifts`, before cleaning.

    >>> shift_runs([np.arange(4.0)[:, None]], [1])[0].ravel().tolist()
    [3.0, 0.0, 1.0, 2.0]
    """
    return [np.roll(raw, int(s), axis=0) for raw, s in zip(raw_runs, shifts, strict=True)]


def empirical_p(exceed_counts: np.ndarray, n_nulls: int) -> np.ndarray:
    """Return ``(1 + count) / (1 + n_nulls)``: the count is of nulls with ``|null| >= |a|``.

    >>> empirical_p(np.array([0, 9, 99]), 99).tolist()
    [0.01, 0.1, 1.0]
    """
    return (1.0 + np.asarray(exceed_counts, dtype=np.float64)) / (1.0 + n_nulls)


def p_to_z(p: np.ndarray, n_nulls: int) -> np.ndarray:
    """Return the z score of one-sided p-values, ``Phi^-1(1 - p)``, finite at ``p = 1``.

    ``p = 1`` (no null was smaller, as for every zero coefficient) has no finite z; it is
    written as the z of ``1 - 1 / (2 (1 + n_nulls))``, half a step below, which is negative.

    >>> np.round(p_to_z(np.array([0.01, 0.5, 1.0]), 99), 3).tolist()
    [2.326, 0.0, -2.576]
    """
    p = np.minimum(np.asarray(p, dtype=np.float64), 1.0 - 0.5 / (1.0 + n_nulls))
    return norm.isf(p)


def fwe_threshold(max_null: np.ndarray, level: float = FWE_LEVEL) -> np.ndarray:
    """Return per unit the ``|a|`` a coefficient must exceed (strictly) to be significant.

    Parameters
    ----------
    max_null : ndarray of shape (n_nulls, K)
        The largest ``|null coefficient|`` over voxels, per null and unit.
    level : float
        Family-wise error rate.

    Returns
    -------
    ndarray of shape (K,)
        The ``m``-th largest of each unit's null maxima, ``m = floor(level (N + 1))``. Under
        the null the real maximum and the N null maxima are exchangeable, so the real one is
        strictly above the ``m``-th largest with probability at most ``m / (N + 1) <= level``.
        NaN when ``N + 1 < 1 / level`` (fewer than 19 nulls at 0.05): no threshold can hold
        the rate.

    Examples
    --------
    >>> fwe_threshold(np.arange(1.0, 21.0)[:, None]).tolist()
    [20.0]
    >>> fwe_threshold(np.arange(1.0, 100.0)[:, None]).tolist()
    [95.0]
    >>> fwe_threshold(np.arange(1.0, 11.0)[:, None]).tolist()
    [nan]
    """
    max_null = np.asarray(max_null, dtype=np.float64)
    n_nulls = max_null.shape[0]
    rank = int(np.floor(level * (n_nulls + 1) + 1e-9))  # the m-th largest
    if rank < 1:
        return np.full(max_null.shape[1:], np.nan)
    return np.sort(max_null, axis=0)[n_nulls - rank]


def fwe_minimum_nulls(level: float = FWE_LEVEL) -> int:
    """Return the fewest nulls for which :func:`fwe_threshold` exists (19 at 0.05).

    >>> fwe_minimum_nulls()
    19
    """
    return int(np.ceil(1.0 / level - 1e-9)) - 1
