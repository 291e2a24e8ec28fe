"""``--alpha auto``: blocked folds with a gap, and a choice that beats the extremes of the grid."""

from __future__ import annotations

import numpy as np
import pytest

from bids_syncact.core import coupling, selection
from bids_syncact.errors import InputDataError
from tests.test_coupling import smooth_dictionary


def two_runs(n_per_run, t_r):
    times = np.concatenate([np.arange(n_per_run) * t_r] * 2)
    runs = np.repeat([0, 1], n_per_run)
    return times, runs


def test_folds_hold_out_every_sample_once_with_the_gap():
    times, runs = two_runs(300, 1.0)
    folds = selection.blocked_folds(times, runs, n_folds=5, gap_s=60.0)
    tested = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tested), np.arange(600))
    for train, test in folds:
        assert np.all(np.diff(test) == 1)  # contiguous
        for run in np.unique(runs[test]):
            held = times[test][runs[test] == run]
            kept = times[train][runs[train] == run]
            gaps = np.abs(kept[:, None] - held[None, :])
            assert gaps.size == 0 or gaps.min() >= 60.0
    # A block inside run 0 keeps every sample of run 1 for training.
    train, test = folds[0]
    assert set(np.flatnonzero(runs == 1)) <= set(train)


def test_too_short_for_the_gap_is_refused():
    times, runs = np.arange(100) * 1.0, np.zeros(100)
    with pytest.raises(InputDataError, match='--alpha FLOAT'):
        selection.blocked_folds(times, runs, n_folds=5, gap_s=60.0)


def make_planted():
    rng = np.random.default_rng(3)
    n_per_run, n_units, n_voxels = 400, 30, 300
    D = smooth_dictionary(rng, 2 * n_per_run, n_units, sigma=2.0)
    codes = np.where(
        rng.random((n_units, n_voxels)) < 0.1, rng.standard_normal((n_units, n_voxels)), 0.0
    )
    signal = D @ codes
    S = signal + 0.6 * signal.std() * rng.standard_normal(signal.shape)
    S /= np.linalg.norm(S, axis=0)
    times, runs = two_runs(n_per_run, 1.5)
    return D, S.astype(np.float32), codes, times, runs


@pytest.fixture(scope='module')
def planted():
    return make_planted()


def recovery_error(D, S, codes, alpha):
    A = coupling.sparse_code(D, S, alpha).astype(np.float64)
    # Compare maps up to each voxel's scale: the error of the best rescaled estimate.
    truth = codes / np.linalg.norm(codes, axis=0, keepdims=True).clip(1e-12)
    est = A / np.linalg.norm(A, axis=0, keepdims=True).clip(1e-12)
    return float(np.mean(np.sum((truth - est) ** 2, axis=0)))


def test_auto_alpha_recovers_a_planted_code_better_than_the_grid_extremes(planted):
    D, S, codes, times, runs = planted
    choice = selection.choose_alpha(D, S, times, runs)
    assert len(choice.r2) == len(selection.ALPHA_GRID) == len(choice.grid)
    assert choice.grid[0] == pytest.approx(0.3)
    assert choice.grid[-1] == pytest.approx(0.005)
    assert choice.alpha not in (choice.grid[0], choice.grid[-1])
    assert choice.r2[choice.grid.index(choice.alpha)] == max(choice.r2)
    chosen = recovery_error(D, S, codes, choice.alpha)
    assert chosen < recovery_error(D, S, codes, 0.3)
    assert chosen < recovery_error(D, S, codes, 0.005)


def test_choice_is_deterministic_and_records_its_curve(planted):
    D, S, _, times, runs = planted
    first = selection.choose_alpha(D, S, times, runs, max_voxels=100, seed=7)
    again = selection.choose_alpha(D, S, times, runs, max_voxels=100, seed=7)
    assert first == again
    record = first.to_sidecar()
    assert record['n_voxels'] == 100
    assert record['gap_s'] == 60.0
    assert len(record['r2_per_fold']) == record['n_folds'] == 5


def test_too_few_samples_for_the_blocks_are_refused():
    with pytest.raises(InputDataError, match='at least 10 retained volumes'):
        selection.blocked_folds(np.arange(8.0), np.zeros(8), n_folds=5, gap_s=0.0)
