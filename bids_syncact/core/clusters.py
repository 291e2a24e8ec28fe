"""Unit clusters: channels the data cannot tell apart, as one regressor (DESIGN.md 2.4, issue 19).

Channels of a layer are strongly correlated once convolved with the HRF, and no estimator can
split near-identical regressors, so the unit of inference is a cluster of them (Buhlmann,
Rutimann, van de Geer and Zhang 2013, "Correlated variables in regression: clustering and sparse
estimation", J. Stat. Plan. Inference 143). The clusters come from the stimuli alone, so every
subject who saw the same stimuli gets the same ones:

1. :func:`stimulus_series`: each stimulus's activations held from frame to frame (the first
   frame also before the start: no onset ramp), convolved with the canonical HRF and taken on a
   1 s grid over the stimulus's own duration (no blank screen),
   DCT high-passed, standardized per stimulus;
2. :func:`cluster_units`: the stimuli concatenated (the caller orders them, by sha256), channels
   of zero variance dropped, hierarchical clustering on ``1 - |r|`` cut at ``1 - R``; with
   complete linkage every pair inside a cluster has ``|r| >= R``, and for ``R > 0.5`` the signs
   inside a cluster are consistent, so anti-correlated channels join with their sign;
3. :func:`representative_weights`: the representative is the fixed linear combination
   ``sum_i s_i x_i / (m sigma_i)`` of the members' raw activations (``s_i`` the sign, ``sigma_i``
   the stimulus-side SD, ``m`` the size), synchronized like a unit, so the null shifts stay linear.

The pipeline's side (the feature cache, the sync tables, the sidecars) is
:mod:`bids_syncact.bids.unitclusters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.signal import fftconvolve
from scipy.spatial.distance import squareform

from bids_syncact.core.denoise import cosine_regressors
from bids_syncact.core.sync import hrf_kernel

Linkage = Literal['complete', 'average', 'single']
#: The grid the stimulus series are put on (s).
GRID_S = 1.0
#: Fine step of the held activations before the HRF (s).
_DT = 0.05
#: Channels convolved at a time (bounds the fine grid's memory: 10 min x 256 x 8 B ~ 25 MB).
_CHANNEL_BLOCK = 256


def stimulus_series(
    acts: np.ndarray,
    frame_times_s: np.ndarray,
    duration_s: float,
    *,
    hrf: Literal['spm', 'glover'] = 'spm',
    high_pass_hz: float = 0.008,
) -> np.ndarray:
    """Return one stimulus's HRF-convolved activations on a 1 s grid, high-passed, standardized.

    Parameters
    ----------
    acts : ndarray of shape (n_frames, n_channels)
        Activations of the frames sampled at ``--frame-rate``.
    frame_times_s : ndarray of shape (n_frames,)
        When each frame appears (s from the stimulus's start, ascending, the first at 0); each
        is held until the next.
    duration_s : float
        The stimulus's duration (s): the grid is ``0, 1, ...`` below it.
    hrf : {'spm', 'glover'}
        Nilearn's canonical HRF.
    high_pass_hz : float
        Cut-off of the DCT high-pass (0: none).

    Returns
    -------
    ndarray of shape (n_seconds, n_channels), float64
        Each column centred with unit SD; a column of zero variance stays 0.

    Examples
    --------
    >>> acts = np.array([[0.0, 1.0], [1.0, 0.0]])  # two channels, one the other's mirror
    >>> x = stimulus_series(acts, np.array([0.0, 10.0]), 40.0, high_pass_hz=0.0)
    >>> x.shape, np.round(x.std(axis=0), 6).tolist(), round(float(np.corrcoef(x.T)[0, 1]), 6)
    ((40, 2), [1.0, 1.0], -1.0)
    """
    acts = np.asarray(acts, dtype=np.float64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if acts.ndim != 2 or len(acts) != len(times) or not len(times):
        raise ValueError(f'acts {acts.shape} and frame_times_s {times.shape} must pair frames')
    fine = np.arange(0.0, duration_s, _DT)
    rows = np.clip(np.searchsorted(times, fine, side='right') - 1, 0, len(times) - 1)
    kernel = hrf_kernel(hrf, _DT)[:, None]
    grid = np.arange(0.0, duration_s, GRID_S)
    sampled = len(kernel) + np.minimum(np.round(grid / _DT).astype(int), len(fine) - 1)
    series = np.empty((len(grid), acts.shape[1]))
    for start in range(0, acts.shape[1], _CHANNEL_BLOCK):  # the fine grid a block at a time
        block = acts[:, start : start + _CHANNEL_BLOCK]
        # the first frame as if it had been on for the HRF's length: no onset ramp, which every
        # channel would share (the blank screen before a stimulus is left out)
        padded = np.concatenate([np.repeat(block[:1], len(kernel), axis=0), block[rows]])
        series[:, start : start + _CHANNEL_BLOCK] = fftconvolve(padded, kernel, axes=0)[sampled]
    if high_pass_hz > 0:
        drift = cosine_regressors(len(grid), GRID_S, high_pass_hz)
        if drift.size:
            series = series - drift @ np.linalg.lstsq(drift, series, rcond=None)[0]
    series = series - series.mean(axis=0)
    sd = series.std(axis=0)
    return np.where(sd > 1e-12 * max(float(np.abs(series).max(initial=0.0)), 1.0),
                    series / np.where(sd > 0, sd, 1.0), 0.0)  # fmt: skip


@dataclass(frozen=True)
class UnitClusters:
    """Clusters of a layer's channels."""

    members: tuple[tuple[int, ...], ...]
    """Per cluster the member channel indices, the named member first, then ascending."""
    signs: tuple[tuple[int, ...], ...]
    """Per cluster each member's sign (+1 or -1) relative to the named member."""
    min_correlation: np.ndarray
    """``(n_clusters,)``: the smallest ``|r|`` between two members (1 for a single unit)."""
    max_cross_correlation: np.ndarray
    """``(n_clusters,)``: the largest ``|r|`` between a member and a member of another cluster."""
    dropped: tuple[int, ...]
    """Channels of zero variance, in no cluster."""

    @property
    def names(self) -> np.ndarray:
        """Each cluster's named member."""
        return np.array([m[0] for m in self.members], dtype=int)


def cluster_units(
    series: np.ndarray,
    raw_variance: np.ndarray,
    min_correlation: float,
    *,
    method: Linkage = 'complete',
) -> UnitClusters:
    """Return the clusters of channels whose series correlate at ``|r| >= min_correlation``.

    Parameters
    ----------
    series : ndarray of shape (n_samples, n_channels)
        The stimuli's :func:`stimulus_series`, concatenated.
    raw_variance : ndarray of shape (n_channels,)
        Each channel's raw activation variance over the frames: the one of largest variance names
        its cluster (ties by index).
    min_correlation : float
        ``R`` in (0.5, 1]; 1 gives one cluster per channel.
    method : {'complete', 'average', 'single'}
        Linkage; only ``complete`` guarantees ``|r| >= R`` for every pair inside a cluster.

    Returns
    -------
    UnitClusters
        Ordered by named member.

    Examples
    --------
    >>> t = np.linspace(0, 6, 50)
    >>> x = np.column_stack([np.sin(t), -np.sin(t) + 0.01 * np.cos(3 * t), np.cos(t)])
    >>> c = cluster_units(x, np.array([1.0, 2.0, 1.0]), 0.9)
    >>> c.members, c.signs
    (((1, 0), (2,)), ((1, -1), (1,)))
    """
    x = np.asarray(series, dtype=np.float64)
    variance = np.asarray(raw_variance, dtype=np.float64)
    if not 0.5 < min_correlation <= 1.0:
        raise ValueError(f'min_correlation must be in (0.5, 1], not {min_correlation}')
    if x.ndim != 2 or variance.shape != (x.shape[1],):
        raise ValueError(f'series {x.shape} and raw_variance {variance.shape} disagree')
    alive = (x.std(axis=0) > 0) & (variance > 0)
    kept = np.flatnonzero(alive)
    dropped = tuple(int(i) for i in np.flatnonzero(~alive))
    if kept.size == 0:
        return UnitClusters((), (), np.zeros(0), np.zeros(0), dropped)
    r = np.corrcoef(x[:, kept], rowvar=False) if kept.size > 1 else np.ones((1, 1))
    r = np.clip(np.atleast_2d(r), -1.0, 1.0)
    if min_correlation >= 1.0 or kept.size == 1:
        labels = np.arange(kept.size)
    else:
        distance = 1.0 - np.abs(r)
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(np.maximum(distance, 0.0), checks=False), method=method)
        # distances at the cut count as inside: |r| == R joins
        labels = fcluster(tree, 1.0 - min_correlation + 1e-12, criterion='distance') - 1
    groups = []
    for label in np.unique(labels):
        local = np.flatnonzero(labels == label)
        named = local[np.lexsort((kept[local], -variance[kept[local]]))[0]]
        rest = sorted(set(local.tolist()) - {int(named)}, key=lambda i: kept[i])
        order = [int(named), *rest]
        signs = tuple(1 if r[named, i] >= 0 else -1 for i in order)
        groups.append((int(kept[named]), order, signs))
    groups.sort()
    members, sign_lists, within, across = [], [], [], []
    label_of = np.empty(kept.size, dtype=int)
    for g, (_, order, _) in enumerate(groups):
        label_of[order] = g
    for g, (_, order, signs) in enumerate(groups):
        members.append(tuple(int(kept[i]) for i in order))
        sign_lists.append(signs)
        block = np.abs(r[np.ix_(order, order)])
        within.append(float(block.min()) if len(order) > 1 else 1.0)
        others = np.flatnonzero(label_of != g)
        across.append(float(np.abs(r[np.ix_(order, others)]).max()) if others.size else 0.0)
    return UnitClusters(tuple(members), tuple(sign_lists), np.array(within), np.array(across),
                        dropped)  # fmt: skip


def representative_weights(
    clusters: UnitClusters, raw_sd: np.ndarray, n_channels: int
) -> np.ndarray:
    """Return ``W`` ``(n_channels, n_clusters)``: representative ``k`` is ``acts @ W[:, k]``.

    ``W[i, k] = s_i / (m_k sigma_i)`` for member ``i`` of cluster ``k`` (``s_i`` its sign,
    ``sigma_i`` its raw activation SD over the stimuli, ``m_k`` the cluster's size), 0 elsewhere:
    the mean of the members' sign-aligned, scaled activations, fixed before any synchronization,
    so synchronizing (held frames, HRF, sampling) and the nulls' circular shifts commute with it.

    Examples
    --------
    >>> c = UnitClusters(((1, 0), (2,)), ((1, -1), (1,)), np.ones(2), np.zeros(2), ())
    >>> representative_weights(c, np.array([2.0, 1.0, 4.0]), 3).tolist()
    [[-0.25, 0.0], [0.5, 0.0], [0.0, 0.25]]
    """
    sd = np.asarray(raw_sd, dtype=np.float64)
    weights = np.zeros((n_channels, len(clusters.members)))
    for k, (members, signs) in enumerate(zip(clusters.members, clusters.signs, strict=True)):
        for i, s in zip(members, signs, strict=True):
            if not sd[i] > 0:
                raise ValueError(f'channel {i} has no variance: it cannot be a member')
            weights[i, k] = s / (len(members) * sd[i])
    return weights
