"""The correlation of CNNs' brain similarity with their ImageNet accuracy (DESIGN.md 2.6).

The brain similarity itself is tested against the group null in
:func:`bids_syncact.core.calibration.cnn_similarity_null`. With three or more CNNs the similarities are correlated with the CNNs' top-1 accuracies: Pearson
and Spearman r (Spearman is Pearson on average ranks), each with a two-sided permutation p (exact
over all ``n!`` orderings of the accuracies when there are few CNNs, else seeded Monte Carlo) and
a seeded percentile bootstrap interval over resampled CNNs. Fewer than ``DESCRIPTIVE_BELOW`` CNNs
is labelled descriptive.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

#: Fewer CNNs than this and the accuracy correlation is labelled descriptive.
DESCRIPTIVE_BELOW = 5
#: Fewest CNNs for which the accuracy correlation is computed at all.
MIN_CNNS = 3

# Relative (and, for r near zero, absolute) tolerance under which a permuted |r| counts as equal
# to the observed one: the same pairs summed in another order differ in the last bits.
_TIE_RTOL = 1e-10
_TIE_ATOL = 1e-13
# Orderings scored per block, bounding memory for large n! or N.
_BLOCK = 65536
# Second entries of the seed sequences: permutations and bootstrap draw independent streams.
_PERMUTATION_STREAM = 0x9E57
_BOOTSTRAP_STREAM = 0xB007


@dataclass(frozen=True)
class AccuracyCorrelation:
    """Correlation of the CNNs' brain similarity with their ImageNet top-1 accuracy.

    Attributes
    ----------
    n_cnns : int
        CNNs correlated.
    pearson_r, pearson_p, spearman_r, spearman_p : float
        Coefficients and their two-sided permutation p; NaN when either side is constant.
    pearson_ci, spearman_ci : tuple of float
        Percentile bootstrap interval ``(lower, upper)``; NaN when no resample was usable.
    n_permutations : int
        Orderings scored: ``n!`` when exact, else the Monte Carlo count.
    exact : bool
        Whether the permutation p enumerates every ordering.
    n_bootstrap : int
        Bootstrap resamples drawn.
    n_bootstrap_used : int
        Resamples kept: those where neither side is constant.
    confidence : float
        Level of the bootstrap intervals.
    descriptive : bool
        Whether there are fewer than ``DESCRIPTIVE_BELOW`` CNNs.
    """

    n_cnns: int
    pearson_r: float
    pearson_p: float
    spearman_r: float
    spearman_p: float
    pearson_ci: tuple[float, float]
    spearman_ci: tuple[float, float]
    n_permutations: int
    exact: bool
    n_bootstrap: int
    n_bootstrap_used: int
    confidence: float
    descriptive: bool

    def to_sidecar(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (NaN becomes None) with descriptive keys.

        Examples
        --------
        >>> import json
        >>> fit = correlate_with_accuracy([1.0, 2.0, 3.0], [0.7, 0.7, 0.7], n_bootstrap=10)
        >>> json.dumps(fit.to_sidecar()['PearsonR'], allow_nan=False)
        'null'
        """
        if self.exact:
            test = f'exact over all {self.n_cnns}! = {self.n_permutations} orderings'
        else:
            test = f'Monte Carlo, {self.n_permutations} orderings, seeded'
        sidecar: dict[str, Any] = {
            'NumberOfCNNs': self.n_cnns,
            'PearsonR': _json_float(self.pearson_r),
            'PearsonP': _json_float(self.pearson_p),
            'PearsonCI': [_json_float(v) for v in self.pearson_ci],
            'SpearmanR': _json_float(self.spearman_r),
            'SpearmanP': _json_float(self.spearman_p),
            'SpearmanCI': [_json_float(v) for v in self.spearman_ci],
            'PermutationTest': test,
            'PermutationP': 'two-sided: fraction of orderings of the accuracies with |r| >= '
            'observed |r|',
            'NumberOfPermutations': self.n_permutations,
            'Bootstrap': f'percentile, {self.n_bootstrap} resamples of CNNs, seeded',
            'BootstrapResamplesUsed': self.n_bootstrap_used,
            'ConfidenceLevel': self.confidence,
            'Descriptive': self.descriptive,
        }
        if self.descriptive:
            sidecar['DescriptiveNote'] = (
                f'only {self.n_cnns} CNNs (fewer than {DESCRIPTIVE_BELOW}): the correlation '
                f'describes these CNNs and supports no inference; the smallest possible '
                f'permutation p is 1/{math.factorial(self.n_cnns)}'
            )
        return sidecar


def correlate_with_accuracy(
    similarity: np.ndarray,
    accuracy: np.ndarray,
    *,
    n_bootstrap: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    max_exact: int = 8,
    n_permutations: int = 100000,
) -> AccuracyCorrelation:
    """Return Pearson and Spearman r of similarity with accuracy, permutation p and bootstrap CI.

    Parameters
    ----------
    similarity, accuracy : ndarray of shape (n_cnns,)
        Brain similarity and ImageNet top-1 accuracy of each CNN, finite, ``n_cnns >= 3``.
    n_bootstrap : int
        Bootstrap resamples of the CNNs (indices drawn with replacement); resamples in which
        either side is constant have no r and are dropped.
    confidence : float
        Level of the percentile bootstrap intervals.
    seed : int
        Seeds the Monte Carlo orderings and the bootstrap (independent streams).
    max_exact : int
        Largest ``n_cnns`` whose permutation p enumerates all ``n!`` orderings of the accuracies
        (the identity included, so ``p >= 1 / n!``).
    n_permutations : int
        Random orderings above ``max_exact``; then ``p = (1 + count) / (1 + n_permutations)``.

    Returns
    -------
    AccuracyCorrelation
        With r, p and intervals NaN when either side is constant.

    Raises
    ------
    ValueError
        When fewer than 3 CNNs, the arrays differ in shape or hold non-finite values, or a
        setting is out of range.

    Examples
    --------
    >>> fit = correlate_with_accuracy([1.0, 2.0, 3.0, 4.0], [0.5, 0.6, 0.7, 0.8], n_bootstrap=100)
    >>> round(fit.pearson_r, 12), fit.pearson_p, fit.exact, fit.n_permutations, fit.descriptive
    (1.0, 0.08333333333333333, True, 24, True)
    """
    sim_cnns = np.asarray(similarity, dtype=np.float64)
    acc_cnns = np.asarray(accuracy, dtype=np.float64)
    if sim_cnns.ndim != 1 or sim_cnns.shape != acc_cnns.shape:
        raise ValueError(
            f'similarity and accuracy must be one-dimensional and of equal length, got shapes '
            f'{sim_cnns.shape} and {acc_cnns.shape}'
        )
    n_cnns = sim_cnns.size
    if n_cnns < MIN_CNNS:
        raise ValueError(
            f'correlating brain similarity with accuracy needs at least {MIN_CNNS} CNNs, '
            f'got {n_cnns}'
        )
    if not (np.all(np.isfinite(sim_cnns)) and np.all(np.isfinite(acc_cnns))):
        raise ValueError('similarity and accuracy must be finite')
    if n_bootstrap < 1 or n_permutations < 1 or max_exact < 0:
        raise ValueError('n_bootstrap and n_permutations must be positive, max_exact >= 0')
    if not 0.0 < confidence < 1.0:
        raise ValueError(f'confidence must lie in (0, 1), got {confidence}')

    sim_ranks = rankdata(sim_cnns)
    acc_ranks = rankdata(acc_cnns)
    exact = n_cnns <= max_exact
    if exact:
        n_orderings = math.factorial(n_cnns)
        blocks = _exact_orderings(n_cnns)
    else:
        n_orderings = n_permutations
        rng = np.random.default_rng([seed, _PERMUTATION_STREAM])
        blocks = _random_orderings(n_cnns, n_permutations, rng)

    pearson_r = _pearson(sim_cnns, acc_cnns)
    spearman_r = _pearson(sim_ranks, acc_ranks)
    counts = np.zeros(2, dtype=np.int64)
    for orderings in blocks:
        counts[0] += _count_at_least(sim_cnns, acc_cnns, orderings, pearson_r)
        counts[1] += _count_at_least(sim_ranks, acc_ranks, orderings, spearman_r)
    if exact:
        p_values = counts / n_orderings
    else:
        p_values = (1.0 + counts) / (1.0 + n_orderings)
    pearson_p = float(p_values[0]) if np.isfinite(pearson_r) else math.nan
    spearman_p = float(p_values[1]) if np.isfinite(spearman_r) else math.nan

    pearson_ci, spearman_ci, n_used = _bootstrap(
        sim_cnns, acc_cnns, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
    )
    return AccuracyCorrelation(
        n_cnns=n_cnns,
        pearson_r=pearson_r,
        pearson_p=pearson_p,
        spearman_r=spearman_r,
        spearman_p=spearman_p,
        pearson_ci=pearson_ci,
        spearman_ci=spearman_ci,
        n_permutations=n_orderings,
        exact=exact,
        n_bootstrap=n_bootstrap,
        n_bootstrap_used=n_used,
        confidence=confidence,
        descriptive=n_cnns < DESCRIPTIVE_BELOW,
    )


def _json_float(value: float) -> float | None:
    """Return ``value`` as a float, or None when it is NaN or infinite."""
    return float(value) if math.isfinite(value) else None


def _pearson(x_cnns: np.ndarray, y_cnns: np.ndarray) -> float:
    """Return Pearson r of two vectors, NaN when either is constant."""
    r = _pearson_rows(x_cnns[None, :], y_cnns[None, :])[0]
    return float(r)


def _pearson_rows(x_rows: np.ndarray, y_rows: np.ndarray) -> np.ndarray:
    """Return Pearson r of each row pair of two ``(n_rows, n)`` arrays, NaN for a constant row."""
    x_centred = x_rows - x_rows.mean(axis=1, keepdims=True)
    y_centred = y_rows - y_rows.mean(axis=1, keepdims=True)
    constant = (np.ptp(x_rows, axis=1) == 0) | (np.ptp(y_rows, axis=1) == 0)
    norm = np.sqrt(np.sum(x_centred**2, axis=1) * np.sum(y_centred**2, axis=1))
    with np.errstate(divide='ignore', invalid='ignore'):
        r_rows = np.sum(x_centred * y_centred, axis=1) / norm
    r_rows = np.clip(r_rows, -1.0, 1.0)
    r_rows[constant] = np.nan
    return r_rows


def _count_at_least(
    x_cnns: np.ndarray, y_cnns: np.ndarray, orderings: np.ndarray, r_observed: float
) -> int:
    """Return how many orderings of ``y`` (rows of indices) reach ``|r| >= |r_observed|``."""
    if not np.isfinite(r_observed):
        return 0
    x_centred = x_cnns - x_cnns.mean()
    y_centred = y_cnns - y_cnns.mean()
    norm = math.sqrt(float(x_centred @ x_centred) * float(y_centred @ y_centred))
    abs_r_orderings = np.abs(y_centred[orderings] @ x_centred) / norm
    threshold = abs(r_observed) * (1.0 - _TIE_RTOL) - _TIE_ATOL
    return int(np.count_nonzero(abs_r_orderings >= threshold))


def _exact_orderings(n: int) -> Iterator[np.ndarray]:
    """Yield every permutation of ``range(n)``, as ``(n_block, n)`` blocks of indices."""
    permutations = itertools.permutations(range(n))
    while True:
        block = list(itertools.islice(permutations, _BLOCK))
        if not block:
            return
        yield np.array(block, dtype=np.intp)


def _random_orderings(n: int, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield ``count`` random permutations of ``range(n)``, as ``(n_block, n)`` blocks."""
    for start in range(0, count, _BLOCK):
        n_block = min(_BLOCK, count - start)
        yield rng.permuted(np.tile(np.arange(n, dtype=np.intp), (n_block, 1)), axis=1)


def _bootstrap(
    x_cnns: np.ndarray, y_cnns: np.ndarray, *, n_bootstrap: int, confidence: float, seed: int
) -> tuple[tuple[float, float], tuple[float, float], int]:
    """Return the percentile intervals of Pearson and Spearman r and the resamples kept."""
    rng = np.random.default_rng([seed, _BOOTSTRAP_STREAM])
    n = x_cnns.size
    quantiles = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    r_pearson, r_spearman = [], []
    for start in range(0, n_bootstrap, _BLOCK):
        n_block = min(_BLOCK, n_bootstrap - start)
        index_resamples = rng.integers(0, n, size=(n_block, n))
        x_resamples, y_resamples = x_cnns[index_resamples], y_cnns[index_resamples]
        usable = (np.ptp(x_resamples, axis=1) > 0) & (np.ptp(y_resamples, axis=1) > 0)
        x_resamples, y_resamples = x_resamples[usable], y_resamples[usable]
        r_pearson.append(_pearson_rows(x_resamples, y_resamples))
        r_spearman.append(
            _pearson_rows(rankdata(x_resamples, axis=1), rankdata(y_resamples, axis=1))
        )
    r_pearson_used = np.concatenate(r_pearson)
    r_spearman_used = np.concatenate(r_spearman)
    n_used = r_pearson_used.size
    if n_used == 0:
        return (math.nan, math.nan), (math.nan, math.nan), 0
    lo_p, hi_p = np.quantile(r_pearson_used, quantiles)
    lo_s, hi_s = np.quantile(r_spearman_used, quantiles)
    return (float(lo_p), float(hi_p)), (float(lo_s), float(hi_s)), n_used
