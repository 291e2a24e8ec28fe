"""The sparse-coding solver against scikit-learn, its optimality conditions and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from sklearn.linear_model import Lasso

from bids_syncact.core import _batched, coupling

ALPHA = 0.02


def smooth_dictionary(rng, n_samples, n_units, *, cond=None, sigma=3.0):
    """Smooth, correlated unit-norm columns; with ``cond``, D'D has about that condition number."""
    raw = gaussian_filter1d(rng.standard_normal((n_samples, n_units)), sigma, axis=0)
    raw = raw @ (np.eye(n_units) + 0.5 * rng.standard_normal((n_units, n_units)) / n_units**0.5)
    if cond is not None:
        u, _, vt = np.linalg.svd(raw, full_matrices=False)
        raw = u @ np.diag(np.geomspace(1.0, cond**-0.5, n_units)) @ vt
    raw -= raw.mean(axis=0)
    return (raw / np.linalg.norm(raw, axis=0)).astype(np.float32)


def signals_for(rng, D, n_voxels, *, density=0.1, noise=0.05):
    codes = np.where(
        rng.random((D.shape[1], n_voxels)) < density,
        rng.standard_normal((D.shape[1], n_voxels)),
        0.0,
    )
    S = D @ codes + noise * rng.standard_normal((D.shape[0], n_voxels))
    S /= np.linalg.norm(S, axis=0)
    return S.astype(np.float32), codes


def sklearn_codes(D, S, alpha):
    n_samples = D.shape[0]
    model = Lasso(alpha=alpha / n_samples, fit_intercept=False, tol=1e-14, max_iter=1_000_000)
    return model.fit(D.astype(np.float64), S.astype(np.float64)).coef_.T


@pytest.fixture(params=[None, 1e6], ids=['easy', 'ill-conditioned'])
def problem(request, rng):
    D = smooth_dictionary(rng, 200, 24, cond=request.param)
    S, _ = signals_for(rng, D, 40)
    return D, S


def test_condition_numbers_are_as_built(rng):
    assert coupling.condition_number(smooth_dictionary(rng, 200, 24)) < 1e3
    assert 1e5 < coupling.condition_number(smooth_dictionary(rng, 200, 24, cond=1e6)) < 1e7


def test_objective_matches_scikit_learn(problem):
    D, S = problem
    ours = coupling.objective(D, S, coupling.sparse_code(D, S, ALPHA), ALPHA)
    theirs = coupling.objective(D, S, sklearn_codes(D, S, ALPHA), ALPHA)
    # float32 codes: within 1e-5 relative per voxel, never worse than 1e-5 beyond sklearn's.
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_kkt_conditions_hold_at_the_solution(problem):
    D, S = problem
    A = coupling.sparse_code(D, S, ALPHA)
    assert np.count_nonzero(A) > 0
    assert coupling.kkt_violation(D, S, A, ALPHA).max() < 1e-3
    # The same check flags a perturbed solution.
    assert coupling.kkt_violation(D, S, A * 1.05, ALPHA).max() > 1e-2


def test_kkt_conditions_in_float64_are_tight(rng):
    D = smooth_dictionary(rng, 200, 24, cond=1e6)
    S, _ = signals_for(rng, D, 20)
    solution = coupling.solve(D, S, ALPHA)
    # Checked on the float64 path through the public pieces: tiny violations only.
    assert solution.n_not_converged == 0
    assert coupling.kkt_violation(D, S, solution.codes, ALPHA).max() < 1e-4


def test_repeated_runs_and_thread_counts_give_identical_bits(problem):
    D, S = problem
    first = coupling.solve(D, S, ALPHA, n_threads=1).codes
    again = coupling.solve(D, S, ALPHA, n_threads=2).codes
    chunked = coupling.solve(D, S, ALPHA, n_threads=2, chunk=7).codes
    assert first.tobytes() == again.tobytes() == chunked.tobytes()


def test_path_equals_separate_solves(rng):
    D = smooth_dictionary(rng, 150, 16, cond=1e4)
    S, _ = signals_for(rng, D, 25)
    grid = np.geomspace(0.3, 0.005, 7)
    solution = coupling.solve(D, S, grid[-1], grid=grid)
    assert solution.path.shape == (6, 16, 25)
    for g, alpha in enumerate(grid[:-1]):
        np.testing.assert_allclose(
            solution.path[g], coupling.sparse_code(D, S, alpha), atol=2e-5, rtol=1e-4
        )


def test_large_alpha_gives_zero_and_zero_signals_stay_zero(rng):
    D = smooth_dictionary(rng, 100, 8)
    S, _ = signals_for(rng, D, 6)
    S[:, 0] = 0.0
    A = coupling.sparse_code(D, S, 0.5)
    top = np.abs(D.T @ S).max(axis=0)
    assert not A[:, top <= 0.5].any()
    assert not coupling.sparse_code(D, S, ALPHA)[:, 0].any()


def test_reads_memmapped_signals_in_chunks(rng, tmp_path):
    D = smooth_dictionary(rng, 120, 12)
    S, _ = signals_for(rng, D, 30)
    mapped = np.lib.format.open_memmap(tmp_path / 's.npy', 'w+', np.float32, S.shape)
    mapped[:] = S
    from_map = coupling.solve(D, mapped, ALPHA, chunk=8).codes
    assert from_map.tobytes() == coupling.sparse_code(D, S, ALPHA).tobytes()


def test_recovers_the_support_of_a_noiseless_sparse_code(rng):
    D = smooth_dictionary(rng, 300, 20, sigma=1.0)
    codes = np.zeros((20, 5))
    codes[[2, 7, 11], :] = [[1.0], [-0.8], [0.6]]
    S = (D @ codes).astype(np.float32)
    A = coupling.sparse_code(D, S, 0.005)
    assert set(np.flatnonzero(np.abs(A).max(axis=1) > 0.05)) == {2, 7, 11}


def test_batched_engine_matches_the_compiled_one(rng):
    # The CUDA engine's algorithm, run by torch on the CPU: the same solution and path.
    D = smooth_dictionary(rng, 150, 16, cond=1e6)
    S, _ = signals_for(rng, D, 60)
    grid = np.geomspace(0.3, ALPHA, 6)[:-1]
    ref = coupling.solve(D, S, ALPHA, grid=grid)
    codes, path = np.zeros_like(ref.codes), np.zeros_like(ref.path)
    _batched.solve_into(
        D, S, ALPHA, grid, codes, path, device='cpu', tol=1e-6, max_iter=1000, chunk=32
    )
    np.testing.assert_allclose(codes, ref.codes, atol=1e-5)
    np.testing.assert_allclose(path, ref.path, atol=1e-5)


@pytest.mark.gpu
def test_cuda_matches_cpu(rng):
    D = smooth_dictionary(rng, 300, 64, cond=1e6)
    S, _ = signals_for(rng, D, 500)
    on_gpu = coupling.sparse_code(D, S, ALPHA, device='cuda')
    np.testing.assert_allclose(on_gpu, coupling.sparse_code(D, S, ALPHA), atol=1e-5)
    assert on_gpu.tobytes() == coupling.sparse_code(D, S, ALPHA, device='cuda').tobytes()


def test_bad_arguments_are_refused(rng):
    D = smooth_dictionary(rng, 50, 4)
    S, _ = signals_for(rng, D, 3)
    with pytest.raises(ValueError, match='alpha'):
        coupling.sparse_code(D, S, 0.0)
    with pytest.raises(ValueError, match='T = 50'):
        coupling.sparse_code(D, S[:40], ALPHA)
    with pytest.raises(ValueError, match='device'):
        coupling.sparse_code(D, S, ALPHA, device='tpu')
    D[0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        coupling.sparse_code(D, S, ALPHA)


def test_variance_inflation(rng):
    orthogonal = np.linalg.qr(rng.standard_normal((50, 4)))[0]
    orthogonal -= orthogonal.mean(axis=0)
    assert np.allclose(coupling.variance_inflation(orthogonal), 1.0, atol=0.2)
    D = rng.standard_normal((50, 3))
    D[:, 2] = D[:, 0] + 0.1 * rng.standard_normal(50)
    vif = coupling.variance_inflation(D)
    assert vif[1] < 1.5
    assert vif[0] > 20
    D[:, 2] = D[:, 0]
    assert coupling.variance_inflation(D)[0] > 1e10


def test_compiled_code_is_cached_in_tmpdir_when_the_package_is_read_only(monkeypatch, tmp_path):
    from bids_syncact.core import _homotopy

    monkeypatch.setattr(_homotopy.numba_config, 'CACHE_DIR', '')
    monkeypatch.setattr(_homotopy.os, 'access', lambda path, mode: False)
    monkeypatch.setattr(_homotopy.tempfile, 'gettempdir', lambda: str(tmp_path))
    _homotopy._cache_where_writable()
    assert _homotopy.numba_config.CACHE_DIR.startswith(str(tmp_path / 'bids-syncact-numba-'))
    # A cache directory chosen by the user (NUMBA_CACHE_DIR) is left alone.
    monkeypatch.setattr(_homotopy.numba_config, 'CACHE_DIR', '/somewhere')
    _homotopy._cache_where_writable()
    assert _homotopy.numba_config.CACHE_DIR == '/somewhere'


def _tied():
    D = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    S = np.array([[0.7], [0.7], [0.0], [0.0]], dtype=np.float32)
    return D, S


def test_an_all_zero_unit_gets_zero_codes():
    # Cleaning leaves dead or confound-explained units at zero: they must not break the solve.
    D, S = _tied()
    np.testing.assert_allclose(coupling.sparse_code(D, S, 0.1)[:, 0], [0.6, 0.6, 0.0], atol=1e-6)


@pytest.mark.parametrize('engine', ['compiled', 'batched'])
def test_tied_units_join_together_on_the_path(engine):
    # Orthonormal units: the path is soft-thresholding, both units tied all along it.
    D, S = _tied()
    D, grid = D[:, :2], np.array([0.5, 0.3])
    if engine == 'compiled':
        solution = coupling.solve(D, S, 0.1, grid=grid)
        codes, path = solution.codes, solution.path
        assert solution.n_descent == 0
    else:
        codes, path = np.zeros((2, 1), np.float32), np.zeros((2, 2, 1), np.float32)
        _batched.solve_into(D, S, 0.1, grid, codes, path, device='cpu', tol=1e-6, max_iter=100)
    np.testing.assert_allclose(path[:, :, 0], [[0.2, 0.2], [0.4, 0.4]], atol=1e-6)
    np.testing.assert_allclose(codes[:, 0], [0.6, 0.6], atol=1e-6)


def test_the_scale_of_the_signals_does_not_matter(rng):
    D = smooth_dictionary(rng, 120, 12, cond=1e4)
    S, _ = signals_for(rng, D, 20)
    small = coupling.solve(D, S * 1e-9, ALPHA * 1e-9)
    assert small.n_descent == 0
    np.testing.assert_allclose(small.codes * 1e9, coupling.sparse_code(D, S, ALPHA), atol=1e-5)


def test_non_finite_signals_are_refused(rng):
    D = smooth_dictionary(rng, 50, 4)
    S, _ = signals_for(rng, D, 3)
    S[5, 1] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        coupling.sparse_code(D, S, ALPHA)
