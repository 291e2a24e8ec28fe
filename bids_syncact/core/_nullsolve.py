"""The null stage of :func:`~bids_syncact.core.fbn.fit_layer`: every null solved, tallied, compared.

Each null shifts every run's raw activations circularly, cleans them like the real ones and
solves them against the stacked BOLD ``S`` at the real alpha (DESIGN.md 2.4). Per null only
three things are kept: which voxels' ``|null|`` reaches the real ``|a|`` (counted), the largest
``|null|`` of each unit, and the annotation statistic of the null map (which needs the whole
map: the top 5% over all voxels).

On the CPU the nulls go in batches sized by :data:`NULL_BATCH_BYTES` (their ``(B, K, V)``
float32 maps): one cleaning call per run cleans the whole batch (columns side by side), and
:func:`~bids_syncact.core.coupling.sparse_code_many` solves all of it while a voxel block of
``S`` is in memory, so ``S`` (a file of gigabytes at HCP scale) is read once per batch, not
once per null. Every output is the same, bit for bit, as solving the nulls one by one
(:func:`per_null`, which CUDA still uses).

Not done, measured (``benchmarks/bench_nulls.py``): cleaning is a projection, so the products
``D'S`` of every circular shift of a run are one cross-correlation per voxel and unit, which an
FFT gives for all shifts at once (it agrees with the direct products to 1e-8). But it computes
every shift (900 per HCP-7T run) to use 99: on a voxel block with all 99 nulls at once, its
best case, it took 1.5 times the direct products at HCP-7T scale (1.8 times at the demo's), its
inverse transforms alone as long as them; and it would need the maps of all 99 nulls at once
(6 GB at HCP-7T scale) for the annotation, against batches of 16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bids_syncact.core.coupling import sparse_code, sparse_code_many
from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.core.nulls import shift_runs

#: Memory for one batch of null maps, ``(B, K, V)`` float32 (about 16 nulls at HCP-7T scale).
NULL_BATCH_BYTES = 1_000_000_000
#: Map values passed to one call of the annotation statistic (its copy of the maps).
_STATS_VALUES = 2**24


@dataclass(frozen=True, eq=False)
class NullTally:
    """What the nulls leave behind (their maps are not kept)."""

    exceed: np.ndarray
    """``(K, V)`` int32: nulls with ``|null| >= |a|``."""
    max_null: np.ndarray
    """``(n_nulls, K)``: the largest ``|null|`` over voxels."""
    stats: np.ndarray | None
    """``(n_nulls, K, n_networks)``: the statistic of each null map; None without networks."""


def null_dictionaries(
    raw_runs: Sequence[np.ndarray], specs: Sequence[CleanSpec], shifts: np.ndarray
) -> np.ndarray:
    """Return the cleaned null dictionaries of ``shifts`` ``(B, n_runs)``, ``(B, T, K)`` float32.

    One cleaning call per run for all of them (the shifted runs side by side as columns): every
    step of the cleaning acts on each column alone, so dictionary ``j`` is
    ``clean_dictionary(shift_runs(raw_runs, shifts[j]), specs)``.
    """
    n_units = raw_runs[0].shape[1]
    wide = [
        np.hstack([np.roll(raw, int(s), axis=0) for s in shifts[:, r]])
        for r, raw in enumerate(raw_runs)
    ]
    D = concatenate_runs([clean(x, spec) for x, spec in zip(wide, specs, strict=True)])
    return np.ascontiguousarray(D.reshape(len(D), len(shifts), n_units).transpose(1, 0, 2))


def batch_size(n_units: int, n_voxels: int, budget_bytes: int = NULL_BATCH_BYTES) -> int:
    """Return how many ``(K, V)`` float32 null maps fit in ``budget_bytes`` (at least 1).

    >>> batch_size(64, 235_375)
    16
    """
    return max(1, budget_bytes // (4 * max(n_units * n_voxels, 1)))


def batched(
    raw_runs: Sequence[np.ndarray],
    specs: Sequence[CleanSpec],
    S: np.ndarray,
    alpha: float,
    shifts: np.ndarray,
    codes: np.ndarray,
    *,
    statistics: Callable[[np.ndarray], np.ndarray] | None = None,
    n_threads: int | None = None,
    budget_bytes: int = NULL_BATCH_BYTES,
) -> NullTally:
    """Solve and tally the nulls of ``shifts`` ``(n_nulls, n_runs)`` in batches (CPU).

    Parameters
    ----------
    codes : ndarray of shape (K, V)
        The real codes, whose ``|a|`` the nulls are counted against.
    statistics : callable, optional
        ``(n_maps, V)`` maps (``|null|``) to ``(n_maps, n_networks)`` statistics.
    budget_bytes : int
        Memory for one batch of ``(B, K, V)`` float32 null maps.
    """
    n_nulls, (n_units, n_voxels) = len(shifts), codes.shape
    magnitude = np.abs(codes)
    exceed = np.zeros(codes.shape, dtype=np.int32)
    max_null = np.zeros((n_nulls, n_units))
    stats = []
    size = min(batch_size(n_units, n_voxels, budget_bytes), n_nulls)
    maps = np.zeros((size, n_units, n_voxels), np.float32)
    for start in range(0, n_nulls, size):
        rows = shifts[start : start + size]
        batch = maps[: len(rows)]
        batch[...] = 0.0
        sparse_code_many(null_dictionaries(raw_runs, specs, rows), S, alpha, batch,
                         n_threads=n_threads)  # fmt: skip
        np.abs(batch, out=batch)
        for j, null in enumerate(batch):
            exceed += null >= magnitude
            max_null[start + j] = null.max(axis=1, initial=0.0)
        if statistics is not None:
            # Several maps per call where they are small (the statistic has a fixed cost per
            # call); the same values, map by map.
            step = max(1, _STATS_VALUES // max(n_units * n_voxels, 1))
            for j in range(0, len(batch), step):
                part = batch[j : j + step]
                stats.append(
                    statistics(part.reshape(-1, n_voxels)).reshape(len(part), n_units, -1)
                )
    return NullTally(exceed, max_null, np.concatenate(stats) if stats else None)


def per_null(
    raw_runs: Sequence[np.ndarray],
    specs: Sequence[CleanSpec],
    S: np.ndarray,
    alpha: float,
    shifts: np.ndarray,
    codes: np.ndarray,
    *,
    statistics: Callable[[np.ndarray], np.ndarray] | None = None,
    device: str = 'cpu',
    n_threads: int | None = None,
) -> NullTally:
    """Solve and tally the nulls one by one, each against the whole ``S`` (any device)."""
    n_nulls, n_units = len(shifts), codes.shape[0]
    magnitude = np.abs(codes)
    exceed = np.zeros(codes.shape, dtype=np.int32)
    max_null = np.zeros((n_nulls, n_units))
    stats = []
    for i, row in enumerate(shifts):
        D = concatenate_runs([clean(x, spec) for x, spec in zip(shift_runs(raw_runs, row), specs,
                                                                 strict=True)])  # fmt: skip
        null = np.abs(sparse_code(D, S, alpha, device=device, n_threads=n_threads))
        exceed += null >= magnitude
        max_null[i] = null.max(axis=1, initial=0.0)
        if statistics is not None:
            stats.append(statistics(null))
    return NullTally(exceed, max_null, np.stack(stats) if stats else None)
