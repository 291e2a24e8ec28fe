"""The Lasso homotopy of :mod:`bids_syncact.core._homotopy`, batched over voxels with torch (CUDA).

All voxels of a chunk follow their own exact solution paths in lock-step: one step moves every
voxel to its next event (a unit joins, a unit leaves, the target alpha is reached). The active
sets differ between voxels, so each step gathers ``G[A, A]`` padded to the largest active set of
the chunk and solves them together (``cholesky_ex``); the correlation update ``G d`` is one dense
matrix product for the chunk. The end point is polished on its signed support and checked against
the KKT conditions like on the CPU; voxels that fail the check (a degenerate path, a failed
factorisation) are handed back to the compiled CPU homotopy, so both devices return the same
solution to the tolerance.
"""

from __future__ import annotations

import numpy as np
import torch

from bids_syncact.core import _homotopy

CHUNK = 16_384


def solve_into(
    D: np.ndarray,
    S: np.ndarray,
    alpha: float,
    grid: np.ndarray,
    codes: np.ndarray,
    path: np.ndarray,
    *,
    device: str,
    tol: float,
    max_iter: int,
    chunk: int = CHUNK,
) -> tuple[int, int]:
    """Solve on ``device``, writing ``codes`` ``(K, V)`` and ``path`` ``(n_grid, K, V)``.

    Returns the numbers of voxels finished by coordinate descent and of voxels not converged.
    """
    dev = torch.device(device)
    D64 = torch.as_tensor(np.asarray(D), device=dev).double()
    gram = D64.T @ D64
    gram_np = gram.cpu().numpy()
    grid_t = torch.as_tensor(grid, device=dev, dtype=torch.float64)
    n_descent = n_bad = 0
    for start in range(0, S.shape[1], chunk):
        stop = min(start + chunk, S.shape[1])
        block = torch.as_tensor(np.asarray(S[:, start:stop]), device=dev).double()
        corr = block.T @ D64
        out, voxel_path, ok = homotopy(gram, corr, alpha, grid_t, tol)
        out_np, path_np = out.cpu().numpy(), voxel_path.cpu().numpy()
        failed = np.flatnonzero(~ok.cpu().numpy())
        if failed.size:
            status = np.zeros(failed.size, np.int8)
            cpu_out = np.zeros((out_np.shape[1], failed.size))
            cpu_path = np.zeros((grid.size, out_np.shape[1], failed.size))
            _homotopy.solve_block(
                gram_np, corr[failed].cpu().numpy(), alpha, grid, tol, max_iter, cpu_out,
                cpu_path, status,
            )  # fmt: skip
            out_np[failed], path_np[:, failed] = cpu_out.T, cpu_path.transpose(0, 2, 1)
            n_descent += int(np.count_nonzero(status == _homotopy.POLISHED_BY_DESCENT))
            n_bad += int(np.count_nonzero(status == _homotopy.NOT_CONVERGED))
        codes[:, start:stop] = out_np.T
        path[:, :, start:stop] = path_np.transpose(0, 2, 1)
    return n_descent, n_bad


def _solve_active(
    gram: torch.Tensor, active: torch.Tensor, rhs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``G[A, A] x = rhs[A]`` per row of ``active`` ``(V, K)``; ``x`` is 0 off ``A``.

    Returns ``x`` ``(V, K)`` and whether each factorisation succeeded ``(V,)``.
    """
    n_voxels = active.shape[0]
    size = int(active.sum(dim=1).max())
    if size == 0:
        return torch.zeros_like(rhs), torch.ones(n_voxels, dtype=torch.bool, device=rhs.device)
    # Active indices first, in unit order (stable sort), padded with inactive ones.
    order = torch.sort((~active).to(torch.int8), dim=1, stable=True).indices[:, :size]
    valid = torch.gather(active, 1, order)
    sub = gram[order[:, :, None], order[:, None, :]]
    pair = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(size, dtype=sub.dtype, device=sub.device)
    sub = torch.where(pair, sub, eye.expand_as(sub))
    chol, info = torch.linalg.cholesky_ex(sub)
    good = info == 0
    chol = torch.where(good[:, None, None], chol, eye.expand_as(chol))
    b = torch.where(valid, torch.gather(rhs, 1, order), 0.0)
    x = torch.cholesky_solve(b[:, :, None], chol)[:, :, 0]
    full = torch.zeros_like(rhs).scatter_(1, order, torch.where(valid, x, 0.0))
    return full, good


def homotopy(
    gram: torch.Tensor, corr: torch.Tensor, alpha: float, grid: torch.Tensor, tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Follow every voxel's path (rows of ``corr`` ``(V, K)``) down to ``alpha``.

    Returns the solutions ``(V, K)``, the path at the ``grid`` values above alpha
    ``(n_grid, V, K)``, and which voxels meet the KKT tolerance ``(V,)``.
    """
    n_voxels, n_units = corr.shape
    rows = torch.arange(n_voxels, device=corr.device)
    a = torch.zeros_like(corr)
    r = corr.clone()
    path = torch.zeros((grid.numel(), n_voxels, n_units), dtype=corr.dtype, device=corr.device)
    lam, first = r.abs().max(dim=1)
    running = lam > alpha
    active = torch.zeros_like(a, dtype=torch.bool)
    active[rows[running], first[running]] = True
    signs = torch.where(active, torch.sign(r), 0.0)
    healthy = torch.ones(n_voxels, dtype=torch.bool, device=corr.device)
    just_dropped = torch.full((n_voxels,), -1, device=corr.device)
    for _ in range(8 * n_units + 64):
        if not bool(running.any()):
            break
        direction, good = _solve_active(gram, active & running[:, None], signs)
        healthy &= good | ~running
        running &= good
        w = direction @ gram
        inactive = ~active & (torch.arange(n_units, device=corr.device) != just_dropped[:, None])
        lam_ = lam[:, None]
        tie = (_homotopy.TINY * lam)[:, None]  # as on the CPU: ties join now, with a step of 0
        nums = torch.stack((lam_ - r, lam_ + r))
        dens = torch.stack((1.0 - w, 1.0 + w))
        steps = (nums / torch.where(dens > _homotopy.TINY, dens, 1.0)).clamp(min=0.0)
        steps = torch.where((dens > _homotopy.TINY) & (nums > -tie) & inactive, steps, torch.inf)
        join_step, join_who = steps.min(dim=0).values.min(dim=1)
        drops = torch.where(active & (direction != 0), -a / direction, torch.inf)
        drops = torch.where(drops > tie, drops, torch.inf)
        drop_step, drop_who = drops.min(dim=1)
        end_step = lam - alpha
        gamma = torch.minimum(torch.minimum(join_step, drop_step), end_step)
        gamma = torch.where(running, gamma, 0.0)
        for g in range(grid.numel()):
            hit = running & (grid[g] <= lam) & (grid[g] > lam - gamma) & (grid[g] > alpha)
            path[g] = torch.where(hit[:, None], a + (lam - grid[g])[:, None] * direction, path[g])
        a = a + gamma[:, None] * direction
        r = r - gamma[:, None] * w
        lam = lam - gamma
        r = torch.where(active, lam[:, None] * signs, r)
        # Ties between events broken as on the CPU: a drop only when strictly first.
        leaves = running & (drop_step < torch.minimum(join_step, end_step))
        joins = running & ~leaves & (join_step < end_step)
        running &= ~((end_step <= join_step) & (end_step <= drop_step))
        active[rows[joins], join_who[joins]] = True
        signs[rows[joins], join_who[joins]] = torch.sign(r[rows[joins], join_who[joins]])
        active[rows[leaves], drop_who[leaves]] = False
        signs[rows[leaves], drop_who[leaves]] = 0.0
        a[rows[leaves], drop_who[leaves]] = 0.0
        just_dropped = torch.where(leaves, drop_who, -1)
    healthy &= ~running
    polished, good = _solve_active(gram, active, corr - alpha * signs)
    agree = ((torch.sign(polished) == signs) | ~active).all(dim=1) & good
    a = torch.where(agree[:, None], polished, a)
    r = corr - a @ gram
    bad = torch.where(a == 0, r.abs() - alpha, (r - alpha * torch.sign(a)).abs())
    ok = healthy & (bad.max(dim=1).values / alpha <= tol)
    return a, path, ok
