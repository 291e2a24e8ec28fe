"""``--alpha auto``: the sparsity chosen by blocked cross-validation (DESIGN.md section 2.4).

The concatenated samples are cut into contiguous blocks of time. Each block is held out in turn;
the model is fitted on the samples at least ``gap_s`` seconds away from every held-out sample of
the same run (samples of other runs are independent and always kept), along the whole alpha grid
in one homotopy pass, and scored by the held-out R² pooled over voxels. The alpha with the best
mean R² wins (ties: the larger, sparser one); the whole curve is returned for the sidecar.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bids_syncact.core.coupling import solve
from bids_syncact.errors import InputDataError

#: The grid of DESIGN.md section 2.4, decreasing.
ALPHA_GRID = tuple(float(a) for a in np.geomspace(0.3, 0.005, 13))
MIN_GAP_S = 60.0
N_FOLDS = 5
#: Voxels drawn (seeded) to score the grid; all of them when there are fewer.
MAX_CV_VOXELS = 4000
#: Smallest training set, in samples, as a multiple of the held-out block.
_MIN_TRAIN_RATIO = 1.0


@dataclass(frozen=True)
class AlphaChoice:
    """The chosen alpha and the cross-validation curve behind it."""

    alpha: float
    grid: tuple[float, ...]
    r2: tuple[float, ...]
    """Held-out R² per grid value, mean over folds."""
    r2_per_fold: tuple[tuple[float, ...], ...]
    n_folds: int
    gap_s: float
    n_voxels: int
    """Voxels the curve was computed on."""

    def to_sidecar(self) -> dict[str, Any]:
        """Return the JSON-ready record (``AlphaSelection`` in the sidecars)."""
        record = asdict(self)
        record['method'] = 'blocked cross-validation, held-out R2 pooled over voxels'
        return record


def blocked_folds(
    times_s: np.ndarray, runs: np.ndarray, *, n_folds: int = N_FOLDS, gap_s: float = MIN_GAP_S
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(train, test)`` sample indices of each fold.

    Parameters
    ----------
    times_s : ndarray of shape (T,)
        Acquisition time of each retained sample on its run's clock (s).
    runs : ndarray of shape (T,)
        Run of each sample (any labels); the rows are the runs concatenated in order.
    n_folds : int
        Contiguous blocks of the concatenated samples, each held out once.
    gap_s : float
        Smallest distance in time between a training sample and the held-out samples of its run.

    Raises
    ------
    InputDataError
        When a fold keeps fewer training samples than it holds out: the data are too short for
        this gap, and ``--alpha`` needs a number.
    """
    times_s, runs = np.asarray(times_s, float), np.asarray(runs)
    n_samples = times_s.size
    if n_samples < 2 * n_folds:
        raise InputDataError(
            f'--alpha auto needs at least {2 * n_folds} retained volumes for {n_folds} blocks, '
            f'not {n_samples}; give --alpha FLOAT (e.g. 0.02)'
        )
    bounds = np.linspace(0, n_samples, n_folds + 1).round().astype(int)
    folds = []
    for lo, hi in itertools.pairwise(bounds):
        test = np.arange(lo, hi)
        keep = np.ones(n_samples, dtype=bool)
        keep[test] = False
        for run in np.unique(runs[test]):
            held = test[runs[test] == run]
            same = runs == run
            near = (times_s >= times_s[held].min() - gap_s) & (
                times_s <= times_s[held].max() + gap_s
            )
            keep &= ~(same & near)
        train = np.flatnonzero(keep)
        if train.size < _MIN_TRAIN_RATIO * test.size:
            raise InputDataError(
                f'--alpha auto needs more data: with {n_folds} blocks and a {gap_s:g} s gap, a '
                f'fold trains on {train.size} samples and tests on {test.size}; give --alpha '
                'FLOAT (e.g. 0.02), or more runs'
            )
        folds.append((train, test))
    return folds


def choose_alpha(
    D: np.ndarray,
    S: np.ndarray,
    times_s: np.ndarray,
    runs: np.ndarray,
    *,
    grid: tuple[float, ...] = ALPHA_GRID,
    n_folds: int = N_FOLDS,
    gap_s: float = MIN_GAP_S,
    max_voxels: int = MAX_CV_VOXELS,
    seed: int = 0,
    device: str = 'cpu',
    n_threads: int | None = None,
) -> AlphaChoice:
    """Return the alpha of ``grid`` with the best held-out R², and the curve.

    Parameters
    ----------
    D : ndarray of shape (T, K)
        Cleaned synchronized activations, runs concatenated.
    S : ndarray of shape (T, V)
        Cleaned voxel time series, the same rows; may be a memmap.
    times_s, runs : ndarray of shape (T,)
        Each row's acquisition time on its run's clock and its run, for the blocks and the gap.
    seed : int
        Draws the voxels scored when there are more than ``max_voxels``.

    Notes
    -----
    Within a fold the training rows of ``D`` and ``S`` are rescaled to unit-norm columns, so
    ``alpha`` means the same as on the full data; the codes are scaled back before predicting the
    held-out rows.
    """
    grid_arr = np.sort(np.asarray(grid, dtype=np.float64))[::-1]
    n_voxels = S.shape[1]
    rng = np.random.default_rng(seed)
    voxels = np.arange(n_voxels)
    if n_voxels > max_voxels:
        voxels = np.sort(rng.choice(n_voxels, max_voxels, replace=False))
    signals = np.asarray(S[:, voxels], dtype=np.float64)
    dictionary = np.asarray(D, dtype=np.float64)
    folds = blocked_folds(times_s, runs, n_folds=n_folds, gap_s=gap_s)
    scores = np.zeros((len(folds), grid_arr.size))
    for f, (train, test) in enumerate(folds):
        d_norm = _norms(dictionary[train])
        s_norm = _norms(signals[train])
        solution = solve(
            (dictionary[train] / d_norm).astype(np.float32),
            (signals[train] / s_norm).astype(np.float32),
            grid_arr[-1],
            grid=grid_arr,
            device=device,
            n_threads=n_threads,
        )
        codes = np.concatenate([solution.path, solution.codes[None]], axis=0)
        held = signals[test]
        total = np.sum((held - held.mean(axis=0)) ** 2)
        if total <= 0:
            scores[f] = np.nan  # a held-out block without signal scores nothing
            continue
        for g in range(grid_arr.size):
            coef = codes[g].astype(np.float64) / d_norm[:, None] * s_norm[None, :]
            scores[f, g] = 1.0 - np.sum((held - dictionary[test] @ coef) ** 2) / total
    if np.isnan(scores).all():
        raise InputDataError(
            '--alpha auto: no held-out block has any signal in the voxels scored; give --alpha '
            'FLOAT (e.g. 0.02), and check the brain mask'
        )
    mean = np.nanmean(scores, axis=0)
    best = int(np.flatnonzero(mean == mean.max())[0])  # decreasing grid: the largest alpha
    return AlphaChoice(
        alpha=float(grid_arr[best]),
        grid=tuple(float(a) for a in grid_arr),
        r2=tuple(float(x) for x in mean),
        r2_per_fold=tuple(tuple(float(x) for x in row) for row in scores),
        n_folds=n_folds,
        gap_s=gap_s,
        n_voxels=int(voxels.size),
    )


def _norms(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=0)
    return np.where(norms > 0, norms, 1.0)
