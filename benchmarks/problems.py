"""Synthetic coupling problems for the solver benchmark (DESIGN.md section 9, first bullet).

The standard problem: ``T=900`` volumes (one HCP-7T run at TR 1 s), ``K=256`` units,
``V=230,000`` voxels, alpha 0.02, smooth correlated unit-norm columns with cond(DᵀD) about 1e6,
about 9% non-zeros in the lasso solution.

How ``D`` is made (seconds, deterministic from ``seed``):

1. Neural series on a 0.5 s grid: a movie cut into shots (exponential lengths, mean 4 s); a few
   latent visual features, each with a level per shot plus a slow AR(1) drift within shots.
2. Units: softplus (ReLU-like, non-negative like post-ReLU spatial means) of random mixtures of
   the latent features plus a small unit-specific AR(1) part, so units are strongly correlated.
3. Convolved with the canonical SPM HRF (nilearn's ``spm_hrf`` formula, a difference of gammas)
   and sampled at TR 1 s; each column centred and scaled to unit L2 norm, as the app does.
4. Conditioning: with ``D = U diag(s) Vᵀ`` the spectrum is raised to a power, ``s_1 (s/s_1)^p``
   (the shape of the natural decay, and so the correlations, are kept; only the span changes),
   the columns are renormalised, and ``p`` is found by the secant method until cond(DᵀD) is
   within 0.25% of ``cond_target``. Every column stays in the span of the HRF-convolved,
   centred unit series, so it stays smooth and centred.

How ``S`` is made: per voxel a sparse ``a_true`` (1 + Poisson(2) units drawn uniformly, signed
Gaussian weights), the signal ``D a_true`` scaled to explain a Beta(2, 4)-distributed share of the
variance (mean 1/3), plus mildly autocorrelated noise (AR(1), rho 0.1: denoised BOLD); each column
centred and scaled to unit L2 norm as the app does per run. These constants were tuned so that the
lasso solution at alpha 0.02 has about 9% non-zeros (the noise's autocorrelation matters most: with
rho 0.3 it is about 12%). Voxels are made in fixed chunks of ``CHUNK`` with their own seeds, so a
problem with fewer voxels is the leading columns of a bigger one (same ``D``).

Achieved (seed 0): cond(DᵀD) = 1.000e6, median |correlation| between units 0.44 (max 0.92),
lag-1 autocorrelation of the columns 0.98; non-zeros at alpha 0.02: 9.15% over all 230,000
voxels (SPAMS, exact), 9.11% on the first 2,000 (scikit-learn). The full problem takes about 5 s.

``python benchmarks/problems.py [--voxels N] [--check-voxels M]`` prints the achieved condition
number and the non-zero fraction of the lasso solution at alpha 0.02 on ``M`` voxels
(scikit-learn's coordinate descent, to a tight tolerance).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.special import gammaln

ALPHA = 0.02
CHUNK = 8192
DT = 0.5  # s, the neural grid
TR = 1.0  # s
HRF_LENGTH_S = 32.0
N_LATENT = 16  # latent visual features driving the units
SHARED = 1.0  # weight of the feature that drives every unit (luminance, contrast, motion)
N_ACTIVE_MEAN = 3.0  # mean number of truly coupled units per voxel (1 + Poisson)
R2_BETA = (2.0, 4.0)  # Beta parameters of the variance share the coupled units explain
NOISE_RHO = 0.1  # AR(1) coefficient of the voxel noise


def spm_hrf(dt: float, time_length: float = HRF_LENGTH_S) -> np.ndarray:
    """Nilearn's ``spm_hrf(dt, oversampling=1)`` without importing nilearn (about 3 s)."""
    t = np.linspace(0.0, time_length, round(time_length / dt)) - dt

    def gamma_pdf(shape: float) -> np.ndarray:
        out = np.zeros_like(t)
        pos = t > 0
        out[pos] = np.exp((shape - 1) * np.log(t[pos]) - t[pos] - gammaln(shape))
        return out

    hrf = gamma_pdf(6.0) - 0.167 * gamma_pdf(16.0)
    return hrf / hrf.sum()


def _ar1(rng: np.random.Generator, n: int, m: int, rho: float) -> np.ndarray:
    """``m`` AR(1) series of length ``n`` (unit innovations), shape ``(n, m)``, float32."""
    out = rng.standard_normal((n, m), dtype=np.float32)
    out[0] /= np.sqrt(1 - rho**2)
    for i in range(1, n):
        out[i] += rho * out[i - 1]
    return out


def _unit_norm(x: np.ndarray) -> np.ndarray:
    """Centre each column and scale it to unit L2 norm (in place when possible)."""
    x -= x.mean(axis=0, keepdims=True)
    x /= np.sqrt(np.einsum('ij,ij->j', x, x))
    return x


def gram_condition(D: np.ndarray) -> float:
    """cond(DᵀD): ratio of the extreme eigenvalues of the Gram matrix, in float64."""
    D = np.asarray(D, dtype=np.float64)
    eig = np.linalg.eigvalsh(D.T @ D)
    return float(eig[-1] / eig[0])


def unit_time_courses(T: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """HRF-convolved, TR-sampled, centred, unit-norm CNN-like unit series, ``(T, K)`` float64."""
    up = round(TR / DT)
    pad = round(HRF_LENGTH_S / DT)
    n = T * up + pad
    # Shots: exponential lengths (mean 4 s); a level per shot and feature, plus slow drift.
    lengths = np.maximum(1, rng.exponential(4.0 / DT, size=n)).astype(int)
    shot = np.repeat(np.arange(lengths.size), lengths)[:n]
    levels = rng.standard_normal((shot[-1] + 1, N_LATENT))
    latent = levels[shot] + 0.5 * _ar1(rng, n, N_LATENT, 0.95).astype(np.float64) * np.sqrt(
        1 - 0.95**2
    )
    mixing = rng.standard_normal((N_LATENT, K)) * (rng.random((N_LATENT, K)) < 0.5)
    mixing /= np.linalg.norm(mixing, axis=0, keepdims=True) + 1e-12
    mixing[0] = SHARED * (0.5 + rng.random(K))
    private = _ar1(rng, n, K, 0.8).astype(np.float64) * np.sqrt(1 - 0.8**2)
    drive = latent @ mixing + 0.3 * private + rng.normal(0.0, 0.5, size=K)
    neural = np.logaddexp(0.0, 2.0 * drive) / 2.0  # softplus: non-negative, ReLU-like
    hrf = spm_hrf(DT)
    bold = np.empty_like(neural)
    for k in range(K):
        bold[:, k] = np.convolve(neural[:, k], hrf)[:n]
    sampled = bold[pad::up][:T]
    return _unit_norm(sampled)


def condition_dictionary(
    D: np.ndarray, cond_target: float, *, tol: float = 1e-3, max_iter: int = 50
) -> np.ndarray:
    """Reshape the singular value spectrum of ``D`` so that cond(DᵀD) ≈ ``cond_target``.

    With ``D = U diag(s) Vᵀ`` the spectrum becomes ``s_1 (s / s_1)^p``, which keeps the shape of
    the natural decay (and so the correlations between units) while setting its span; the
    columns are then renormalised, which moves the condition number a little, so ``p`` is found
    by the secant method on ``log10 cond`` until ``|log10(cond / cond_target)| < tol``.
    """
    D = np.asarray(D, dtype=np.float64)
    eig, V = np.linalg.eigh(D.T @ D)  # DᵀD = V diag(s²) Vᵀ, ascending
    s = np.sqrt(eig[::-1])
    V = V[:, ::-1]
    goal = np.log10(cond_target)

    def make(p: float) -> np.ndarray:
        # U diag(s1 (s/s1)^p) Vᵀ = D V diag((s/s1)^p / s) Vᵀ, up to the scale renormalised away
        return _unit_norm(D @ ((V * ((s / s[0]) ** p / s)) @ V.T))

    def miss(p: float) -> float:
        return np.log10(gram_condition(make(p))) - goal

    p0 = goal / np.log10((s[0] / s[-1]) ** 2)
    p1 = p0 * 1.05
    f0, f1 = miss(p0), miss(p1)
    for _ in range(max_iter):
        if abs(f1) < tol or f1 == f0:
            break
        p0, p1 = p1, p1 - f1 * (p1 - p0) / (f1 - f0)
        f0, f1 = f1, miss(p1)
    return make(p1)


def make_dictionary(
    T: int = 900, K: int = 256, *, seed: int = 0, cond_target: float = 1e6
) -> np.ndarray:
    """Smooth correlated unit-norm dictionary ``(T, K)`` float32 with cond(DᵀD) ≈ target."""
    rng = np.random.default_rng([seed, 0])
    D = condition_dictionary(unit_time_courses(T, K, rng), cond_target)
    return np.ascontiguousarray(D, dtype=np.float32)


def _voxel_chunk(D: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` voxel series ``(T, n)`` float32: sparse signal plus AR(1) noise, unit norm."""
    T, K = D.shape
    n_active = 1 + rng.poisson(N_ACTIVE_MEAN - 1, size=n)
    A = np.zeros((K, n), dtype=np.float32)
    # Units drawn with replacement: a repeat (rare) merges into one coefficient.
    rows = rng.integers(K, size=n_active.sum())
    cols = np.repeat(np.arange(n), n_active)
    np.add.at(A, (rows, cols), rng.standard_normal(rows.size, dtype=np.float32))
    r2 = rng.beta(*R2_BETA, size=n).astype(np.float32)
    signal = _unit_norm(D @ A)
    noise = _unit_norm(_ar1(rng, T, n, NOISE_RHO))
    signal *= np.sqrt(r2)
    noise *= np.sqrt(1 - r2)
    signal += noise
    return _unit_norm(signal)


def make_voxels(D: np.ndarray, V: int, *, seed: int = 0) -> np.ndarray:
    """``S`` ``(T, V)`` float32, voxel chunks of ``CHUNK`` seeded by ``(seed, 1, chunk)``."""
    T = D.shape[0]
    S = np.empty((T, V), dtype=np.float32)

    def fill(c: int) -> None:
        start, stop = c * CHUNK, min((c + 1) * CHUNK, V)
        chunk = _voxel_chunk(D, np.random.default_rng([seed, 1, c]), CHUNK)
        S[:, start:stop] = chunk[:, : stop - start]

    # NumPy's random fills and BLAS release the GIL; each chunk has its own seed.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(-(-V // CHUNK))))
    return S


def standard_problem(
    T: int = 900, K: int = 256, V: int = 230_000, *, seed: int = 0, cond_target: float = 1e6
) -> tuple[np.ndarray, np.ndarray]:
    """The standard problem of DESIGN.md section 9: ``D`` ``(T, K)``, ``S`` ``(T, V)``, float32.

    ``D`` has smooth, correlated, centred, unit-norm columns with cond(DᵀD) ≈ ``cond_target``;
    ``S`` has centred unit-norm columns; at alpha 0.02 about 9% of the lasso coefficients are
    non-zero.
    """
    D = make_dictionary(T, K, seed=seed, cond_target=cond_target)
    return D, make_voxels(D, V, seed=seed)


def small_problem(
    T: int = 900, K: int = 256, V: int = 5_000, *, seed: int = 0, cond_target: float = 1e6
) -> tuple[np.ndarray, np.ndarray]:
    """The standard problem with fewer voxels (the leading ``V`` of it), for quick runs."""
    return standard_problem(T, K, V, seed=seed, cond_target=cond_target)


PROBLEMS = {'standard': standard_problem, 'small': small_problem}


def lasso_nonzero_fraction(
    D: np.ndarray, S: np.ndarray, alpha: float = ALPHA, *, tol: float = 1e-10
) -> float:
    """Non-zero fraction of the lasso solution on the columns of ``S`` (scikit-learn CD)."""
    from sklearn.linear_model import Lasso

    D64 = np.asfortranarray(D, dtype=np.float64)
    model = Lasso(
        alpha=alpha / D.shape[0],
        fit_intercept=False,
        precompute=D64.T @ D64,
        tol=tol,
        max_iter=100_000,
    )
    model.fit(D64, np.asarray(S, dtype=np.float64))
    return float(np.mean(model.coef_ != 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--problem', choices=sorted(PROBLEMS), default='standard')
    parser.add_argument('--voxels', type=int, default=None, help='override V')
    parser.add_argument('--check-voxels', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {'seed': args.seed} if args.voxels is None else {'seed': args.seed, 'V': args.voxels}
    start = time.perf_counter()
    D, S = PROBLEMS[args.problem](**kwargs)
    elapsed = time.perf_counter() - start
    print(f'{args.problem}: D {D.shape}, S {S.shape}, made in {elapsed:.2f} s')
    print(f'cond(DᵀD) = {gram_condition(D):.4g}')
    corr = D.T @ D
    off = np.abs(corr[~np.eye(D.shape[1], dtype=bool)])
    print(f'|corr| between units: median {np.median(off):.3f}, max {off.max():.3f}')
    m = min(args.check_voxels, S.shape[1])
    start = time.perf_counter()
    frac = lasso_nonzero_fraction(D, S[:, :m])
    elapsed = time.perf_counter() - start
    print(f'lasso non-zeros at alpha {ALPHA}: {100 * frac:.2f}% ({m} voxels, {elapsed:.1f} s)')


if __name__ == '__main__':
    main()
