"""Coupling: every voxel as a sparse code over a fixed dictionary of CNN units (DESIGN.md 2.4).

With ``S`` ``(T, V)`` (cleaned BOLD) and ``D`` ``(T, K)`` (cleaned, synchronized unit
activations), both with unit-norm columns, every voxel ``v`` gets

``a_v = argmin_a 1/2 ||s_v - D a||_2^2 + alpha ||a||_1``

and row ``k`` of ``A = [a_1 ... a_V]`` ``(K, V)`` is the functional brain network of unit ``k``.
``D`` is shared by all voxels, so the solver works on the Gram matrix ``G = D'D`` ``(K, K)`` and
the correlations ``C = D'S`` (one matrix product per chunk of voxels) and never touches ``T``
again: on the CPU a compiled Lasso homotopy per voxel (exact, finite, unaffected by
conditioning; :mod:`bids_syncact.core._homotopy`), on CUDA the same problem batched over
voxels (:mod:`bids_syncact.core._batched`). :func:`sparse_code_many` solves several dictionaries
(the nulls) against one ``S``, reading each block of voxels once for all of them.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from bids_syncact.core import _homotopy

#: Voxels per block: one thread reads them from ``S`` and solves them whole.
DEFAULT_CHUNK = 256
DEFAULT_TOL = 1e-6
DEFAULT_MAX_ITER = 10_000


@dataclass(frozen=True)
class Solution:
    """What :func:`solve` found, beyond the codes."""

    codes: np.ndarray
    """``(K, V)`` float32: row ``k`` is the map of unit ``k``."""
    path: np.ndarray
    """``(n_grid, K, V)`` float32: the codes at every grid value above ``alpha``."""
    n_descent: int
    """Voxels whose homotopy needed coordinate descent to meet the KKT conditions."""
    n_not_converged: int
    """Voxels that still miss them after ``max_iter`` sweeps (left as they are)."""


def sparse_code(
    D: np.ndarray,
    S: np.ndarray,
    alpha: float,
    *,
    device: str = 'cpu',
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    n_threads: int | None = None,
) -> np.ndarray:
    """Return the sparse codes of every voxel over the dictionary ``D``.

    For every column ``s_v`` of ``S`` the code ``a_v`` minimises exactly

    ``1/2 ||s_v - D a_v||_2^2 + alpha ||a_v||_1``

    (no scaling by ``T``; scikit-learn's ``Lasso`` minimises the same with its
    ``alpha = alpha / T``). Callers pass unit-norm columns, which makes ``alpha`` a fraction of the
    largest possible correlation and independent of ``T``.

    Parameters
    ----------
    D : ndarray of shape (T, K)
        The dictionary (float32; unit-norm columns).
    S : ndarray of shape (T, V)
        The signals (float32), e.g. voxel time series; may be a memmap (read in chunks).
    alpha : float
        Weight of the L1 penalty, > 0.
    device : {'cpu', 'cuda', 'cuda:N'}
        Where to solve. Results agree across devices to the tolerance.
    tol : float
        Largest accepted violation of the KKT conditions, relative to ``alpha``: on zero
        coefficients ``|d_k'(s - Da)| <= alpha (1 + tol)``, on non-zeros
        ``|d_k'(s - Da) - alpha sign(a_k)| <= alpha tol``.
    max_iter : int
        Sweeps of coordinate descent allowed for a voxel whose homotopy path was degenerate.
    n_threads : int, optional
        CPU threads (default: every CPU this process may use); ignored on CUDA.

    Returns
    -------
    ndarray of shape (K, V), float32
        ``A``; row ``k`` is the map of unit ``k``. Deterministic: the same inputs give the same
        bits, whatever the number of threads.
    """
    return solve(D, S, alpha, device=device, tol=tol, max_iter=max_iter, n_threads=n_threads).codes


def solve(
    D: np.ndarray,
    S: np.ndarray,
    alpha: float,
    *,
    grid: np.ndarray | None = None,
    device: str = 'cpu',
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    chunk: int = DEFAULT_CHUNK,
    n_threads: int | None = None,
) -> Solution:
    """Solve as :func:`sparse_code`, also returning the path at ``grid`` values above ``alpha``.

    The homotopy passes through every larger alpha on its way down, so the path costs only its
    storage (``grid`` must be decreasing; values ``<= alpha`` are ignored).
    """
    if not alpha > 0:
        raise ValueError(f'alpha must be > 0, got {alpha}')
    D = _check_matrix(D, 'D')
    if S.ndim != 2 or S.shape[0] != D.shape[0]:
        raise ValueError(f'S must be (T, V) with T = {D.shape[0]}, got {S.shape}')
    grid = np.asarray([] if grid is None else grid, dtype=np.float64)
    grid = grid[grid > alpha]
    if np.any(np.diff(grid) >= 0):
        raise ValueError('grid must be strictly decreasing')
    n_units, n_voxels = D.shape[1], S.shape[1]
    codes = np.zeros((n_units, n_voxels), np.float32)
    path = np.zeros((grid.size, n_units, n_voxels), np.float32)
    if device.startswith('cuda'):
        from bids_syncact.core import _batched

        counts = _batched.solve_into(
            D, S, alpha, grid, codes, path, device=device, tol=tol, max_iter=max_iter
        )
    elif device == 'cpu':
        counts = _solve_cpu(
            D,
            S,
            float(alpha),
            grid,
            codes,
            path,
            float(tol),
            int(max_iter),
            chunk,
            n_threads or default_threads(),
        )
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    n_descent, n_bad = counts
    if n_bad:
        warnings.warn(
            f'{n_bad} of {n_voxels} voxels missed the KKT tolerance {tol:g} after {max_iter} '
            'sweeps; their codes are the last iterate',
            RuntimeWarning,
            stacklevel=2,
        )
    return Solution(codes, path, n_descent, n_bad)


def _check_matrix(D: np.ndarray, name: str) -> np.ndarray:
    D = np.asarray(D)
    if D.ndim != 2:
        raise ValueError(f'{name} must be 2-D, got shape {D.shape}')
    if not np.all(np.isfinite(D)):
        raise ValueError(f'{name} holds NaN or infinite values')
    return D


def _solve_cpu(
    D: np.ndarray,
    S: np.ndarray,
    alpha: float,
    grid: np.ndarray,
    codes: np.ndarray,
    path: np.ndarray,
    tol: float,
    max_iter: int,
    chunk: int,
    n_threads: int,
) -> tuple[int, int]:
    D64 = D.astype(np.float64)
    gram = D64.T @ D64
    status = np.zeros(S.shape[1], np.int8)

    def job(cols: slice) -> None:
        # D's products with this block of voxels (the only step that touches T) in float64,
        # like everything after it: float32 products would move the codes of an ill-conditioned
        # D by more than 1e-5. Each thread does its own, so BLAS never competes with the solver.
        corr = np.asarray(S[:, cols], dtype=np.float64).T @ D64
        if not np.isfinite(corr).all():
            raise ValueError(
                f'S holds NaN or infinite values (voxels {cols.start}-{cols.stop - 1})'
            )
        _homotopy.solve_block(
            gram, corr, alpha, grid, tol, max_iter, codes[:, cols], path[:, :, cols], status[cols]
        )

    # Fixed blocks, each solved whole by one thread: the same bits for any thread count.
    blocks = [slice(b, min(b + chunk, S.shape[1])) for b in range(0, S.shape[1], chunk)]
    with threadpool_limits(1, user_api='blas'), ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(job, blocks))  # re-raises a block's error here
    n_descent = int(np.count_nonzero(status == _homotopy.POLISHED_BY_DESCENT))
    return n_descent, int(np.count_nonzero(status == _homotopy.NOT_CONVERGED))


def sparse_code_many(
    Ds: np.ndarray,
    S: np.ndarray,
    alpha: float,
    out: np.ndarray,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    chunk: int = DEFAULT_CHUNK,
    n_threads: int | None = None,
) -> int:
    """Solve several dictionaries against the same ``S``, reading each voxel block of it once.

    ``out[j]`` gets ``sparse_code(Ds[j], S, alpha)``, the same bits (CPU only): every block of
    ``S`` is read and converted to float64 once, then its products with all the dictionaries
    are one matrix product, and each dictionary's codes are found by the same compiled homotopy
    from the same correlations. What the null stage of :func:`~bids_syncact.core.fbn.fit_layer`
    runs: ``S`` is a file read page by page, and reading it again for every null cost more than
    solving it.

    Parameters
    ----------
    Ds : ndarray of shape (B, T, K)
        The dictionaries (float32; unit-norm columns).
    S : ndarray of shape (T, V)
        The signals, as for :func:`sparse_code`; may be a memmap.
    alpha : float
        Weight of the L1 penalty, > 0, the same for every dictionary.
    out : ndarray of shape (B, K, V), float32
        Zeros on entry; receives the codes.
    tol, max_iter, chunk, n_threads
        As for :func:`solve`.

    Returns
    -------
    int
        Voxels (over all dictionaries) that missed the KKT tolerance (a warning says so too).
    """
    if not alpha > 0:
        raise ValueError(f'alpha must be > 0, got {alpha}')
    Ds = np.asarray(Ds)
    if Ds.ndim != 3 or not np.all(np.isfinite(Ds)):
        raise ValueError(f'Ds must be finite (B, T, K), got shape {Ds.shape}')
    n_dicts, n_samples, n_units = Ds.shape
    if S.ndim != 2 or S.shape[0] != n_samples:
        raise ValueError(f'S must be (T, V) with T = {n_samples}, got {S.shape}')
    if out.shape != (n_dicts, n_units, S.shape[1]) or out.dtype != np.float32:
        raise ValueError(f'out must be float32 {(n_dicts, n_units, S.shape[1])}, not {out.shape}')
    # Side by side: column j * K + k is unit k of dictionary j. One float64 product of a block
    # with all of them gives each dictionary the bits a product of its own gives (OpenBLAS sums
    # over T in blocks set by T alone; tests/test_null_speed.py checks the bits), and runs
    # faster than B narrow ones.
    wide = np.ascontiguousarray(Ds.astype(np.float64).transpose(1, 0, 2)).reshape(n_samples, -1)
    grams = [D64.T @ D64 for D64 in (Ds[j].astype(np.float64) for j in range(n_dicts))]
    grid = np.zeros(0)
    path = np.zeros((0, n_units, S.shape[1]), np.float32)
    status = np.zeros((n_dicts, S.shape[1]), np.int8)

    def job(cols: slice) -> None:
        corr = np.asarray(S[:, cols], dtype=np.float64).T @ wide
        if not np.isfinite(corr).all():
            raise ValueError(
                f'S holds NaN or infinite values (voxels {cols.start}-{cols.stop - 1})'
            )
        for j in range(n_dicts):
            _homotopy.solve_block(
                grams[j], np.ascontiguousarray(corr[:, j * n_units : (j + 1) * n_units]),
                alpha, grid, tol, max_iter, out[j][:, cols], path[:, :, cols], status[j, cols],
            )  # fmt: skip

    blocks = [slice(b, min(b + chunk, S.shape[1])) for b in range(0, S.shape[1], chunk)]
    with (
        threadpool_limits(1, user_api='blas'),
        ThreadPoolExecutor(n_threads or default_threads()) as pool,
    ):
        list(pool.map(job, blocks))
    n_bad = int(np.count_nonzero(status == _homotopy.NOT_CONVERGED))
    if n_bad:
        warnings.warn(
            f'{n_bad} of {n_dicts} x {S.shape[1]} voxels missed the KKT tolerance {tol:g} after '
            f'{max_iter} sweeps; their codes are the last iterate',
            RuntimeWarning,
            stacklevel=2,
        )
    return n_bad


def default_threads() -> int:
    """Return the number of CPUs this process may use."""
    return len(os.sched_getaffinity(0))


def objective(D: np.ndarray, S: np.ndarray, A: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``1/2 ||s_v - D a_v||^2 + alpha ||a_v||_1`` per voxel, in float64 ``(V,)``."""
    D64, S64, A64 = (np.asarray(x, dtype=np.float64) for x in (D, S, A))
    residual = S64 - D64 @ A64
    return 0.5 * np.einsum('tv,tv->v', residual, residual) + alpha * np.abs(A64).sum(axis=0)


def kkt_violation(D: np.ndarray, S: np.ndarray, A: np.ndarray, alpha: float) -> np.ndarray:
    """Return the largest violation of the Lasso's KKT conditions per voxel, relative to alpha.

    Zero for an exact solution: ``|d_k'r| <= alpha`` where ``a_k = 0`` and
    ``d_k'r = alpha sign(a_k)`` elsewhere, with ``r = s - D a``.
    """
    D64, S64, A64 = (np.asarray(x, dtype=np.float64) for x in (D, S, A))
    corr = D64.T @ (S64 - D64 @ A64)
    bad = np.where(A64 == 0, np.abs(corr) - alpha, np.abs(corr - alpha * np.sign(A64)))
    return np.maximum(bad.max(axis=0), 0.0) / alpha


def condition_number(D: np.ndarray) -> float:
    """Return the condition number of ``D'D`` (ratio of its extreme eigenvalues).

    Infinite when ``D'D`` is singular, NaN when ``D`` has no column (every unit was zero).

    >>> condition_number(np.eye(3)[:, :2] * [1.0, 2.0])
    4.0
    >>> condition_number(np.zeros((5, 0)))
    nan
    """
    if D.shape[1] == 0:
        return float('nan')
    eig = np.linalg.eigvalsh(np.asarray(D, dtype=np.float64).T @ np.asarray(D, np.float64))
    return float(np.inf if eig[0] <= 0 else eig[-1] / eig[0])


def variance_inflation(D: np.ndarray) -> np.ndarray:
    """Return each unit's variance inflation factor ``1 / (1 - R_k^2)`` ``(K,)``.

    ``R_k^2`` is from regressing centred column ``k`` on the other centred columns: the diagonal
    of the inverse correlation matrix. Infinite for a unit that the others explain exactly.
    """
    D64 = np.asarray(D, dtype=np.float64)
    centred = D64 - D64.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    vif = np.full(D64.shape[1], np.inf)
    ok = norms > 0
    corr = (centred[:, ok] / norms[ok]).T @ (centred[:, ok] / norms[ok])
    try:
        inverse = np.linalg.inv(corr)
    except np.linalg.LinAlgError:
        return vif
    diag = np.diag(inverse)
    vif[ok] = np.where(diag > 0, diag, np.inf)
    return vif
