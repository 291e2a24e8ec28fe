"""Compiled per-voxel Lasso homotopy with a shared Gram matrix (the CPU engine of ``coupling``).

Every voxel solves ``min_a 1/2 a'Ga - c'a + alpha |a|_1`` (``G = D'D``, ``c = D's``), which is
``1/2 ||s - D a||^2 + alpha ||a||_1`` up to the constant ``1/2 ||s||^2``. The homotopy (LARS with
the Lasso modification; Osborne, Presnell & Turlach 2000; Efron et al. 2004) follows the exact,
piecewise-linear solution path from ``max |c|`` (where ``a = 0``) down to ``alpha``: one Cholesky
row per variable that joins, a rebuild when one leaves. It is exact and finite, whatever the
conditioning of ``G``, and passes through every value of an alpha grid on its way (the path of
cross-validation comes for free). The end point is polished by one solve on the final signed
support and checked against the KKT conditions; a voxel that fails the check (a degenerate path
on near-collinear units) finishes with coordinate descent from there.

Voxels are independent and the compiled functions release the GIL: the caller runs blocks of
voxels in threads, and the result is the same for any number of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from numba import config as numba_config
from numba import njit


def _cache_where_writable() -> None:
    """Cache compiled code in TMPDIR when the package folder is read-only (containers).

    Numba caches beside the source, else under HOME; in an Apptainer image neither need be
    writable, and numba then refuses to define a cached function at all.
    """
    if numba_config.CACHE_DIR or os.access(Path(__file__).parent, os.W_OK):
        return
    numba_config.CACHE_DIR = str(Path(tempfile.gettempdir()) / f'bids-syncact-numba-{os.getuid()}')


_cache_where_writable()

#: Status codes per voxel.
OK, POLISHED_BY_DESCENT, NOT_CONVERGED = 0, 1, 2

#: Relative and absolute floors of the path (steps, denominators); the CUDA engine uses the same.
TINY = 1e-12
_HUGE = 1e300


@njit(cache=True, nogil=True)
def _cholesky_add(chol: np.ndarray, m: int, G: np.ndarray, active: np.ndarray, j: int) -> bool:
    """Append variable ``j`` as row ``m`` of the Cholesky factor of ``G[active, active]``."""
    for i in range(m):
        acc = G[active[i], j]
        for k in range(i):
            acc -= chol[i, k] * chol[m, k]
        chol[m, i] = acc / chol[i, i]
    diag = G[j, j]
    for k in range(m):
        diag -= chol[m, k] * chol[m, k]
    if diag <= TINY * G[j, j]:
        return False
    chol[m, m] = np.sqrt(diag)
    return True


@njit(cache=True, nogil=True)
def _cholesky_rebuild(chol: np.ndarray, m: int, G: np.ndarray, active: np.ndarray) -> bool:
    for row in range(m):
        if not _cholesky_add(chol, row, G, active, active[row]):
            return False
    return True


@njit(cache=True, nogil=True)
def _forward(chol: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray, start: int = 0) -> None:
    """``out[:m] = L^-1 rhs[:m]``, rows ``start..m-1`` only (the rows above are already done)."""
    for i in range(start, m):
        acc = rhs[i]
        row = chol[i]
        for k in range(i):
            acc -= row[k] * out[k]
        out[i] = acc / row[i]


@njit(cache=True, nogil=True)
def _backward(chol: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    """``out[:m] = L^-T rhs[:m]``, by rows of ``L`` (contiguous in memory)."""
    for i in range(m):
        out[i] = rhs[i]
    for i in range(m - 1, -1, -1):
        row = chol[i]
        out[i] /= row[i]
        value = out[i]
        for k in range(i):
            out[k] -= row[k] * value


@njit(cache=True, nogil=True)
def _cholesky_solve(chol: np.ndarray, m: int, rhs: np.ndarray, out: np.ndarray) -> None:
    tmp = np.empty(m)
    _forward(chol, m, rhs, tmp)
    _backward(chol, m, tmp, out)


@njit(cache=True, nogil=True)
def _residual_correlation(G: np.ndarray, c: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
    """``r = c - G a`` using only the non-zeros of ``a``."""
    r[:] = c
    for i in range(a.shape[0]):
        if a[i] != 0.0:
            row = G[i]
            for k in range(r.shape[0]):
                r[k] -= a[i] * row[k]


@njit(cache=True, nogil=True)
def _kkt_violation(r: np.ndarray, a: np.ndarray, alpha: float) -> float:
    """Largest KKT violation, relative to ``alpha``."""
    worst = 0.0
    for j in range(a.shape[0]):
        if a[j] == 0.0:
            bad = abs(r[j]) - alpha
        else:
            bad = abs(r[j] - alpha * np.sign(a[j]))
        worst = max(worst, bad)
    return worst / alpha


@njit(cache=True, nogil=True)
def _descent(
    G: np.ndarray, c: np.ndarray, a: np.ndarray, r: np.ndarray, alpha: float, tol: float,
    max_iter: int,
) -> bool:  # fmt: skip
    """Coordinate descent from ``a`` (with ``r = c - G a``) until the KKT conditions hold.

    Stops early, unconverged, when a sweep no longer lowers the objective (a tolerance that
    rounding cannot meet on a near-singular ``G``); every sweep lowers it or leaves it.
    """
    previous = np.inf
    for _ in range(max_iter):
        for j in range(a.shape[0]):
            if G[j, j] <= 0.0:  # an all-zero unit: its code stays 0
                continue
            z = r[j] + G[j, j] * a[j]
            new = (np.sign(z) * max(abs(z) - alpha, 0.0)) / G[j, j]
            delta = new - a[j]
            if delta != 0.0:
                row = G[j]
                for k in range(r.shape[0]):
                    r[k] -= delta * row[k]
                a[j] = new
        if _kkt_violation(r, a, alpha) <= tol:
            return True
        # 1/2 a'Ga - c'a + alpha |a|_1, with G a = c - r.
        value = -0.5 * np.dot(a, c + r) + alpha * np.sum(np.abs(a))
        if previous - value <= 1e-15 * abs(value):
            return False
        previous = value
    return False


@njit(cache=True, nogil=True)
def homotopy(
    G: np.ndarray, c: np.ndarray, alpha: float, grid: np.ndarray, path: np.ndarray, tol: float,
    max_iter: int, chol: np.ndarray, a: np.ndarray,
) -> int:  # fmt: skip
    """Solve one voxel down to ``alpha``; fill ``path[g]`` for every ``grid[g] > alpha``.

    ``grid`` is decreasing; ``path`` has one row per grid value; ``chol`` is a work array of
    shape ``(K, K)``; the solution is written into ``a``. Returns a status code.
    """
    n_units = c.shape[0]
    r = c.copy()
    a[:] = 0.0
    lam = np.max(np.abs(r))
    g = 0
    while g < grid.shape[0] and grid[g] > alpha and grid[g] >= lam:
        path[g] = 0.0
        g += 1
    if lam <= alpha:
        return OK
    active = np.empty(n_units, np.int64)
    signs = np.empty(n_units)
    direction = np.empty(n_units)
    w = np.empty(n_units)
    # L^-1 signs, grown one entry per unit that joins (signs of active units never change).
    half = np.empty(n_units)
    # 0 for units that may join; _HUGE for active units and degenerate ones (never again).
    barrier = np.zeros(n_units)
    steps = np.empty(n_units)
    j = np.argmax(np.abs(r))
    m = 0
    barrier[j] = _HUGE
    if _cholesky_add(chol, 0, G, active, j):
        active[0], signs[0], m = j, np.sign(r[j]), 1
        _forward(chol, 1, signs, half)
    just_dropped = -1
    for _ in range(8 * n_units + 64):
        if m == 0:
            break
        _backward(chol, m, half, direction)
        w[:] = 0.0
        for i in range(m):
            row, scale = G[active[i]], direction[i]
            for k in range(n_units):
                w[k] += scale * row[k]
        gamma, event, who = lam - alpha, 0, -1
        tie = TINY * lam  # steps and correlations are on the scale of lam
        # The step at which |r_k - step w_k| reaches lam - step, for every unit; branch-free so
        # that it vectorises (mispredicted branches cost more than the divisions).
        for k in range(n_units):
            down, up = 1.0 - w[k], 1.0 + w[k]
            # A unit tied with the active ones (|r_k| = lam) joins now, with a step of 0.
            s1 = max((lam - r[k]) / (down if down > TINY else 1.0), 0.0)
            s2 = max((lam + r[k]) / (up if up > TINY else 1.0), 0.0)
            s1 = s1 if (down > TINY and lam - r[k] > -tie) else _HUGE
            s2 = s2 if (up > TINY and lam + r[k] > -tie) else _HUGE
            steps[k] = min(s1, s2) + barrier[k]
        if just_dropped >= 0:
            steps[just_dropped] = _HUGE
        for k in range(n_units):
            if steps[k] < gamma:
                gamma, event, who = steps[k], 1, k
        for i in range(m):
            if direction[i] != 0.0:
                step = -a[active[i]] / direction[i]
                if tie < step < gamma:
                    gamma, event, who = step, 2, i
        while g < grid.shape[0] and grid[g] > alpha and grid[g] > lam - gamma:
            path[g] = a
            for i in range(m):
                path[g, active[i]] += (lam - grid[g]) * direction[i]
            g += 1
        for i in range(m):
            a[active[i]] += gamma * direction[i]
        for k in range(n_units):
            r[k] -= gamma * w[k]
        lam -= gamma
        for i in range(m):
            r[active[i]] = lam * signs[i]
        just_dropped = -1
        if event == 0:
            break
        barrier[who if event == 1 else active[who]] = _HUGE if event == 1 else 0.0
        if event == 1:
            if _cholesky_add(chol, m, G, active, who):
                active[m], signs[m] = who, np.sign(r[who])
                m += 1
                _forward(chol, m, signs, half, m - 1)
        else:
            leaving = active[who]
            a[leaving], just_dropped = 0.0, leaving
            for i in range(who, m - 1):
                active[i], signs[i] = active[i + 1], signs[i + 1]
            m -= 1
            if not _cholesky_rebuild(chol, m, G, active):
                break
            _forward(chol, m, signs, half)
    # Polish: the exact solution on the final signed support, kept if its signs agree.
    if m > 0:
        rhs = np.empty(m)
        for i in range(m):
            rhs[i] = c[active[i]] - alpha * signs[i]
        _cholesky_solve(chol, m, rhs, direction)
        agree = True
        for i in range(m):
            agree = agree and np.sign(direction[i]) == signs[i]
        if agree:
            for i in range(m):
                a[active[i]] = direction[i]
    _residual_correlation(G, c, a, r)
    status = OK
    if _kkt_violation(r, a, alpha) > tol:
        converged = _descent(G, c, a, r, alpha, tol, max_iter)
        status = POLISHED_BY_DESCENT if converged else NOT_CONVERGED
    # Rows a degenerate path never reached (iteration cap, failed factorisation): the end point.
    while g < grid.shape[0] and grid[g] > alpha:
        path[g] = a
        g += 1
    return status


@njit(cache=True, nogil=True)
def solve_block(
    G: np.ndarray, C: np.ndarray, alpha: float, grid: np.ndarray, tol: float, max_iter: int,
    codes: np.ndarray, path: np.ndarray, status: np.ndarray,
) -> None:  # fmt: skip
    """Solve every voxel of a block (rows of ``C``, ``(n_voxels, K)``), writing into the outputs.

    ``codes`` ``(K, n_voxels)`` (zeros on entry, any dtype and strides) gets the solutions,
    ``path`` ``(n_grid, K, n_voxels)`` (zeros on entry) the path at the ``grid`` values above
    ``alpha``, ``status`` ``(n_voxels,)`` one status code per voxel. Only non-zeros are written.
    Releases the GIL: blocks run in parallel threads.
    """
    n_units = C.shape[1]
    chol = np.empty((n_units, n_units))
    a = np.empty(n_units)
    voxel_path = np.zeros((grid.shape[0], n_units))
    for v in range(C.shape[0]):
        status[v] = homotopy(G, C[v], alpha, grid, voxel_path, tol, max_iter, chol, a)
        for k in range(n_units):
            if a[k] != 0.0:
                codes[k, v] = a[k]
        for g in range(grid.shape[0]):
            for k in range(n_units):
                if voxel_path[g, k] != 0.0:
                    path[g, k, v] = voxel_path[g, k]
