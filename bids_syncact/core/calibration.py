"""Labels and brain similarity calibrated against the data's own nulls (DESIGN.md 2.5-2.6).

A cluster's FBN is compared with each reference network by a statistic of its top ``|values|``
(:func:`network_statistics`). The same statistic is computed on every null map (the circularly
shifted dictionaries of :mod:`bids_syncact.core.nulls`, which keep the real maps' spatial
structure and have no coupling), so the label never trusts the statistic's own parametric p,
which treats voxels as independent and is anti-conservative for smooth maps (Markello and Misic
2021, NeuroImage 236).

Subject level (:func:`subject_inference`): each network's statistic is standardized by its mean
and SD over the ``N + 1`` maps (the real map included, the same for every map, so the maps stay
exchangeable); the cluster's statistic is the max over networks; its p is
``(1 + #{null max >= observed max}) / (1 + N)``. A layer-wise family-wise p uses the max over
clusters and networks of each null (each shift applies to every cluster of the layer).

Group level (:func:`group_inference`, Stelzer, Chen and Turner 2013, NeuroImage 65): the
subjects' standardized statistics are averaged, max over networks; the null draws one null map
per subject (an independent index per subject, seeded), the same indices for every cluster and
layer. This tests the global null (no subject couples), a fixed-effects question, not
population inference (Allefeld, Gorgen and Haynes 2016, NeuroImage 141).

Brain similarity (:func:`cnn_similarity_null`): a layer's score is the mean over its clusters of
their group statistics, a CNN's the max over its layers, standardized against the same max over
the draws: 0 in expectation without coupling, whatever the number of layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import hypergeom

from bids_syncact.core.annotation import MEMBERSHIP_THRESHOLD, TOP_FRACTION, top_voxels

#: The statistic of the subject-level label: ``'contrast'``, the mean ``|a|`` in the network
#: minus outside it. By measurement (``benchmarks/bench_calibration.py``, structured nulls, 8
#: units, alpha by cross-validation, 99 nulls): it keeps the false-label rate (2.8% of clusters
#: at p < 0.05) and labels one planted unit in 72%, 100% and 98% of single subjects at 1, 2 and 4
#: noise SDs, where ``logp``, which sees only where ``F`` lies and stops growing once it lies
#: inside one network, labels 30%, 30% and 38% (``enrichment`` 8-35%).
SUBJECT_STATISTIC = 'contrast'
#: The statistic of the group-level label and of the brain similarity: ``'logp'`` (-log10 of the
#: one-sided hypergeometric p of ``F``, which weighs ``|F|`` as well as the overlap). By
#: measurement (same benchmark, groups of 3): the contrast's group test labelled 8.9% of null
#: clusters with 8 units and 6.7% with 32 (5% expected), ``logp``'s 6.2% and 5.3%, and three
#: subjects' ``logp`` finds a planted unit in 97-100% of groups. The group average adds up a small
#: bias of each subject's real map, whose alpha was chosen on it (with alpha fixed, every
#: statistic holds 5.2-5.6%), and a statistic that sees the coefficients' size carries more of it.
GROUP_STATISTIC = 'logp'
#: What the null tables hold, the group's statistic first.
LABEL_STATISTICS = (GROUP_STATISTIC, SUBJECT_STATISTIC)
STATISTICS = ('logp', 'enrichment', 'contrast')
#: Level of the labels (subject and group).
LABEL_LEVEL = 0.05
#: Draws of the group null.
N_GROUP_DRAWS = 10_000
#: Fewest nulls with which a label may be given (1 / 20 = 0.05 is the smallest p then).
MIN_NULLS_FOR_LABELS = 20
#: Lowest value of every statistic: no overlap beyond chance. An empty map (statistic -inf at
#: the subject level) counts as this in group averages.
STATISTIC_FLOOR = 0.0
# Second entry of the group draws' seed sequence: independent of the shifts' stream.
_GROUP_STREAM = 0x6A0B
_LOG10 = math.log(10.0)
# Past this -log10 p, hypergeom.sf is near underflow: its log is summed instead.
_TINY_LOG10 = 250.0


def network_statistics(
    maps: np.ndarray,
    networks: np.ndarray,
    *,
    statistic: str = GROUP_STATISTIC,
    fraction: float = TOP_FRACTION,
) -> np.ndarray:
    """Return the statistic of each map's top ``|values|`` against each network.

    Parameters
    ----------
    maps : ndarray of shape (n_maps, n_voxels)
        FBNs over the brain mask ``M`` (non-finite voxels are never in ``F``).
    networks : ndarray of shape (n_networks, n_voxels)
        Membership or probability maps over ``M``; a voxel belongs at ``>= 0.5``.
    statistic : {'logp', 'enrichment', 'contrast'}
        ``logp``: ``-log10 P(X >= |F & N|)``, X hypergeometric (``|F|`` draws from ``|M|`` voxels
        of which ``|N|`` are in the network); ``enrichment``: ``(|F & N| / |F|) / (|N| / |M|)``;
        ``contrast``: the mean ``|value|`` over the network's voxels minus the mean over the
        other voxels of ``M`` (all voxels, not only ``F``; non-finite ones count as 0).
    fraction : float
        ``F`` is the top ``fraction`` of ``|values|`` (:func:`~.annotation.top_voxels`); not used
        by ``contrast``.

    Returns
    -------
    ndarray of shape (n_maps, n_networks), float64
        ``-inf`` for a map with an empty ``F`` (all zero); ``STATISTIC_FLOOR`` (0) for a network
        with no voxel in the mask.

    Notes
    -----
    ``logp`` and ``enrichment`` see only where ``F`` lies, not how large the coefficients are:
    once ``F`` lies inside one network they stop growing. Where the background makes chance maps
    network-shaped (slow resting fluctuations, spatial smoothness), some null maps lie as wholly
    inside some network as a coupled map does, and so do the nulls whose shift of one run is near
    zero (they carry that run's coupling), so a single subject's coupling often misses p < 0.05
    however strong: hence ``contrast`` at the subject level (:data:`SUBJECT_STATISTIC`), which
    grows with the coupling. Three subjects' ``logp`` finds it (:data:`GROUP_STATISTIC`).

    Examples
    --------
    >>> nets = np.zeros((2, 100)); nets[0, :20] = nets[1, 20:60] = 1
    >>> maps = np.zeros((2, 100)); maps[0, :5] = 1.0
    >>> np.round(network_statistics(maps, nets, statistic='enrichment'), 2).tolist()
    [[5.0, 0.0], [-inf, -inf]]
    """
    if statistic not in STATISTICS:
        raise ValueError(f'statistic must be one of {STATISTICS}, not {statistic!r}')
    maps = np.atleast_2d(np.asarray(maps))
    member = np.asarray(networks) >= MEMBERSHIP_THRESHOLD
    if member.ndim != 2 or member.shape[1] != maps.shape[1]:
        raise ValueError(f'networks must be (n_networks, {maps.shape[1]}), not {member.shape}')
    n_mask = maps.shape[1]
    size = member.sum(axis=1).astype(np.float64)
    if statistic == 'contrast':
        return _contrast(maps, member, size)
    top = np.zeros(maps.shape, dtype=bool)
    for i, row in enumerate(maps):
        top[i] = top_voxels(row, fraction)
    n_top = top.sum(axis=1).astype(np.float64)
    overlap = top.astype(np.float32) @ member.T.astype(np.float32)  # exact below 2^24 voxels
    out = np.full((len(maps), member.shape[0]), -np.inf)
    filled = n_top > 0
    if statistic == 'logp':
        out[filled] = _minus_log10_sf(overlap[filled], n_mask, size, n_top[filled])
    else:
        with np.errstate(invalid='ignore', divide='ignore'):
            out[filled] = (overlap[filled] / n_top[filled, None]) / (size[None, :] / n_mask)
    out[:, size == 0] = np.where(filled[:, None], STATISTIC_FLOOR, -np.inf)
    return out


def _contrast(maps: np.ndarray, member: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Return the mean ``|value|`` inside each network minus outside it, ``(n_maps, n_networks)``."""
    magnitude = np.abs(maps, dtype=np.float64)
    total = magnitude.sum(axis=1, keepdims=True)
    if not np.isfinite(total).all():  # non-finite voxels count as 0
        magnitude[~np.isfinite(magnitude)] = 0.0
        total = magnitude.sum(axis=1, keepdims=True)
    inside_sum = magnitude @ member.T.astype(np.float64)
    n_mask = maps.shape[1]
    outside = np.maximum(n_mask - size, 1.0)  # a network covering M has nothing outside: 0
    with np.errstate(invalid='ignore', divide='ignore'):
        inside = np.where(size > 0, inside_sum / np.maximum(size, 1.0), 0.0)
    out = inside - (total - inside_sum) / outside
    filled = total[:, 0] > 0
    out[~filled] = -np.inf
    out[:, size == 0] = np.where(filled[:, None], STATISTIC_FLOOR, -np.inf)
    return out


def _minus_log10_sf(
    overlap: np.ndarray, n_mask: int, size: np.ndarray, n_top: np.ndarray
) -> np.ndarray:
    """Return ``-log10 P(X >= overlap)``, ``(n_maps, n_networks)``, finite even past 1e-300.

    ``hypergeom.sf`` is vectorized and exact in the tail; where it underflows, the log of the
    sum of the pmf (``hypergeom.logsf``, which scipy only takes element by element) is used.
    """
    k = np.asarray(overlap, dtype=np.float64) - 1
    good = np.broadcast_to(size[None, :], k.shape)
    draws = np.broadcast_to(np.asarray(n_top, dtype=np.float64)[:, None], k.shape)
    with np.errstate(divide='ignore'):
        out = -np.log10(hypergeom.sf(k, n_mask, good, draws))
    tiny = ~(out < _TINY_LOG10)
    if tiny.any():
        out[tiny] = [-float(hypergeom.logsf(*args)) / _LOG10
                     for args in zip(k[tiny], [n_mask] * int(tiny.sum()), good[tiny],
                                     draws[tiny], strict=True)]  # fmt: skip
    return np.maximum(out, 0.0)


def standardize(stats: np.ndarray, *, empty: float | None = None) -> np.ndarray:
    """Standardize each network's statistic over the maps (axis 0), the same for every map.

    Parameters
    ----------
    stats : ndarray of shape (n_maps, ...)
        Statistics of the real map and its nulls (axis 0), ``-inf`` for an empty map.
    empty : float, optional
        None: an empty map stays ``-inf``. A number: an empty map scores as that statistic
        (``STATISTIC_FLOOR`` for group averages, where ``-inf`` would swamp the mean).

    Returns
    -------
    ndarray like ``stats``
        ``(x - mean) / sd`` with the mean and SD (ddof 0) over the finite values of each column.
        A column whose finite values are all equal (SD 0) gives 0 for them (and for ``empty``),
        never an infinity; a column with no finite value stays ``-inf`` (or 0 with ``empty``).

    Examples
    --------
    >>> standardize(np.array([[1.0], [3.0], [-np.inf]])).ravel().tolist()
    [-1.0, 1.0, -inf]
    >>> standardize(np.array([[1.0], [3.0], [-np.inf]]), empty=0.0).ravel().tolist()
    [-1.0, 1.0, -2.0]
    >>> standardize(np.array([[2.0], [2.0]])).ravel().tolist()
    [0.0, 0.0]
    """
    stats = np.asarray(stats, dtype=np.float64)
    finite = np.isfinite(stats)
    count = finite.sum(axis=0)
    safe = np.where(finite, stats, 0.0)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean = safe.sum(axis=0) / count
        sd = np.sqrt(np.where(finite, (safe - mean) ** 2, 0.0).sum(axis=0) / count)
    scale = np.maximum(np.abs(mean), 1.0)
    flat = ~(sd > 1e-12 * scale)  # also where no value is finite (NaN)
    sd = np.where(flat, 1.0, sd)
    mean = np.where(count > 0, mean, 0.0)
    filled = np.where(finite, stats, -np.inf if empty is None else empty)
    z = (filled - mean) / sd
    if empty is None:
        return np.where(finite, np.where(flat, 0.0, z), -np.inf)
    return np.where(flat, 0.0, z)


def permutation_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Return ``(1 + #{null >= observed}) / (1 + N)`` along axis 0 of ``null``, ties counted.

    >>> permutation_p(np.array([3.0, 0.0]), np.array([[1.0, 0.0], [2.0, 5.0], [3.0, -1.0]]))
    array([0.5 , 0.75])
    """
    null = np.asarray(null)
    return (1.0 + (null >= np.asarray(observed)[None]).sum(axis=0)) / (1.0 + null.shape[0])


@dataclass(frozen=True, eq=False)
class SubjectInference:
    """One subject's calibrated annotation of one layer's clusters (``K`` of them)."""

    z: np.ndarray
    """``(K, n_networks)`` the real map's standardized statistics."""
    best: np.ndarray
    """``(K,)`` int: the network of largest ``z`` (-1 for an empty map)."""
    p: np.ndarray
    """``(K,)`` the cluster's p (max over networks against the nulls' max)."""
    p_fwe: np.ndarray
    """``(K,)`` family-wise p over the layer's clusters and networks."""
    labelled: np.ndarray
    """``(K,)`` bool: ``p < LABEL_LEVEL``."""


def subject_inference(stats: np.ndarray, *, level: float = LABEL_LEVEL) -> SubjectInference:
    """Return the calibrated p and label of each cluster from its real and null statistics.

    Parameters
    ----------
    stats : ndarray of shape (1 + N, K, n_networks)
        :func:`network_statistics` of the real maps (index 0) and the N null maps.
    level : float
        A cluster is labelled with its best network when ``p < level``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stats = rng.normal(size=(100, 2, 3)); stats[0, 0, 1] = 9.0
    >>> result = subject_inference(stats)
    >>> result.best[0], result.p[0], result.labelled.tolist()
    (np.int64(1), np.float64(0.01), [True, False])
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 3 or stats.shape[0] < 2:
        raise ValueError(f'stats must be (1 + N, K, n_networks) with N >= 1, not {stats.shape}')
    z = standardize(stats)
    cluster_max = z.max(axis=2) if z.shape[2] else np.full(z.shape[:2], -np.inf)
    p = permutation_p(cluster_max[0], cluster_max[1:])
    layer_max = cluster_max[1:].max(axis=1)  # (N,): max over clusters and networks per null
    p_fwe = permutation_p(
        cluster_max[0], np.broadcast_to(layer_max[:, None], cluster_max[1:].shape)
    )
    best = np.where(np.isfinite(cluster_max[0]), _argmax(z[0]), -1)
    return SubjectInference(z=z[0], best=best, p=p, p_fwe=p_fwe,
                            labelled=(p < level) & (best >= 0))  # fmt: skip


def draw_null_indices(n_nulls: Sequence[int], n_draws: int = N_GROUP_DRAWS, *,
                      seed: int) -> np.ndarray:  # fmt: skip
    """Return ``(n_draws, n_subjects)`` null map indices, each in ``1..N_s``, seeded.

    Every draw picks one null map per subject, independently. The same indices serve every
    cluster and layer, so the draws keep what the shifts share across them.

    >>> draw_null_indices([99, 20], 4, seed=0).shape
    (4, 2)
    """
    if any(n < 1 for n in n_nulls):
        raise ValueError(f'every subject needs at least one null, not {list(n_nulls)}')
    rng = np.random.default_rng([seed, _GROUP_STREAM])
    return np.stack([rng.integers(1, n + 1, size=n_draws) for n in n_nulls], axis=1)


@dataclass(frozen=True, eq=False)
class GroupInference:
    """The group null of one layer's clusters."""

    z: np.ndarray
    """``(K, n_networks)`` the subjects' standardized statistics of the real maps, averaged."""
    statistic: np.ndarray
    """``(K,)`` the group statistic: max over networks of ``z``."""
    null: np.ndarray
    """``(n_draws, K)`` the same statistic for each draw of one null map per subject."""
    best: np.ndarray
    """``(K,)`` the network of the group statistic."""
    p: np.ndarray
    """``(K,)`` ``(1 + #{null >= statistic}) / (1 + n_draws)``."""
    labelled: np.ndarray
    """``(K,)`` bool: ``p < LABEL_LEVEL``."""


def group_inference(
    subject_stats: Sequence[np.ndarray], indices: np.ndarray, *, level: float = LABEL_LEVEL
) -> GroupInference:
    """Return the group statistic of each cluster and its null over the draws.

    Parameters
    ----------
    subject_stats : sequence of ndarray of shape (1 + N_s, K, n_networks)
        Each subject's statistics of its real maps (index 0) and null maps, as for
        :func:`subject_inference`. An empty map counts as ``STATISTIC_FLOOR`` here.
    indices : ndarray of shape (n_draws, n_subjects)
        :func:`draw_null_indices`.
    level : float
        Level of the group label.
    """
    if indices.shape[1] != len(subject_stats):
        raise ValueError(f'{indices.shape[1]} index columns for {len(subject_stats)} subjects')
    shapes = {np.shape(s)[1:] for s in subject_stats}
    if len(shapes) != 1:
        raise ValueError(f'subjects disagree on (K, n_networks): {sorted(shapes)}')
    observed = 0.0
    null = 0.0
    for stats, column in zip(subject_stats, indices.T, strict=True):
        z = standardize(stats, empty=STATISTIC_FLOOR)
        observed = observed + z[0]
        null = null + z[column]
    n_subjects = len(subject_stats)
    z_mean = np.asarray(observed) / n_subjects
    null_max = np.asarray(null).max(axis=2) / n_subjects
    statistic = z_mean.max(axis=1)
    p = permutation_p(statistic, null_max)
    return GroupInference(z=z_mean, statistic=statistic, null=null_max, best=_argmax(z_mean),
                          p=p, labelled=p < level)  # fmt: skip


@dataclass(frozen=True)
class Similarity:
    """A CNN's brain similarity against the group null."""

    score: float
    """``(max over layers of the mean group statistic - null mean) / null SD``."""
    raw: float
    """The max over layers before standardization."""
    best_layer: str
    null_low: float
    """2.5% quantile of the standardized null draws."""
    null_high: float
    """97.5% quantile."""
    layer_scores: Mapping[str, float]
    """Each layer's mean group statistic over its clusters."""


def cnn_similarity_null(layers: Mapping[str, GroupInference]) -> Similarity:
    """Return a CNN's brain similarity from its layers' group inference (the same draws).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> def fake(shift):
    ...     null = rng.normal(size=(2000, 4))
    ...     return GroupInference(z=None, statistic=np.full(4, shift), null=null, best=None,
    ...                           p=None, labelled=None)
    >>> s = cnn_similarity_null({'a': fake(0.0), 'b': fake(3.0)})
    >>> s.best_layer, s.score > s.null_high
    ('b', True)
    """
    names = list(layers)
    if not names:
        raise ValueError('no layer')
    draws = {len(g.null) for g in layers.values()}
    if len(draws) != 1:
        raise ValueError(f'layers with different numbers of draws: {sorted(draws)}')
    observed = np.array([float(np.mean(layers[n].statistic)) for n in names])
    null = np.stack([layers[n].null.mean(axis=1) for n in names], axis=1).max(axis=1)
    best = int(np.argmax(observed))
    mean, sd = float(null.mean()), float(null.std())
    sd = sd if sd > 1e-12 * max(1.0, abs(mean)) else 1.0
    standardized = (null - mean) / sd
    low, high = np.quantile(standardized, [0.025, 0.975])
    return Similarity(score=float((observed[best] - mean) / sd), raw=float(observed[best]),
                      best_layer=names[best], null_low=float(low), null_high=float(high),
                      layer_scores=dict(zip(names, observed.tolist(), strict=True)))  # fmt: skip


def _argmax(z: np.ndarray) -> np.ndarray:
    """Return the arg-max along the last axis, first on ties, 0 on an empty axis."""
    if z.shape[-1] == 0:
        return np.zeros(z.shape[:-1], dtype=np.intp)
    return np.argmax(np.where(np.isnan(z), -np.inf, z), axis=-1)
