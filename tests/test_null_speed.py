"""The batched null stage (core/_nullsolve.py, coupling.sparse_code_many) against the old one.

The reference below is ``fit_layer``'s null loop as it was before the nulls were batched: per
null, clean the shifted dictionary, solve it against the whole ``S``, tally. The batched stage
must give the same bits: the same exceed counts, maxima, annotation statistics, z maps.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from bids_syncact.core import _nullsolve
from bids_syncact.core.calibration import network_statistics
from bids_syncact.core.coupling import sparse_code, sparse_code_many
from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.core.fbn import clean_dictionary, fit_layer
from bids_syncact.core.nulls import draw_shifts, empirical_p, fwe_threshold, p_to_z, shift_runs

ALPHA = 0.04
N_UNITS = 5
N_VOXELS = 230
N_NULLS = 7
#: Voxels copying unit 1 (plus noise); the rest are noise.
COUPLED = slice(0, 25)


def _problem(seed=0, *, constant_unit=None):
    """Two runs of unequal length with confounds, a high-pass, dropped volumes, no detrend."""
    rng = np.random.default_rng(seed)
    lengths = (150, 170)
    specs = [
        CleanSpec(150, 1.0, sample_mask=np.r_[3:70, 72:150],
                  confounds=rng.standard_normal((150, 3)), high_pass=0.01, name='run-1'),
        CleanSpec(170, 1.0, sample_mask=np.arange(2, 170), confounds=None, high_pass=None,
                  detrend=False, name='run-2'),
    ]  # fmt: skip
    raw, bold = [], []
    for n in lengths:
        units = 4.0 * gaussian_filter1d(rng.standard_normal((n, N_UNITS)), 2.0, axis=0) + 10.0
        if constant_unit is not None:
            units[:, constant_unit] = 2.0
        voxels = gaussian_filter1d(rng.standard_normal((n, N_VOXELS)), 1.0, axis=0) + 50.0
        voxels[:, COUPLED] += (units[:, [1]] - 10.0) / 2.0
        raw.append(units)
        bold.append(voxels)
    S = concatenate_runs([clean(b, s) for b, s in zip(bold, specs, strict=True)],
                         drop_silent=True)  # fmt: skip
    networks = np.zeros((3, N_VOXELS), np.float32)
    networks[0, :40], networks[1, 60:140], networks[2, 150:] = 1.0, 1.0, 0.7
    return raw, specs, S, networks


@pytest.fixture(scope='module')
def problem():
    return _problem()


def _shifts(raw, specs, n_nulls=N_NULLS, seed=3):
    return draw_shifts([len(x) for x in raw], [s.t_r for s in specs], n_nulls, seed=seed)


def _reference(raw, specs, S, alpha, shifts, codes, statistics=None):
    """The null loop of fit_layer before batching: one null at a time against the whole S."""
    magnitude = np.abs(codes)
    exceed = np.zeros(codes.shape, dtype=np.int32)
    max_null = np.zeros((len(shifts), codes.shape[0]))
    stats, maps = [], []
    for i, row in enumerate(shifts):
        null = np.abs(sparse_code(clean_dictionary(shift_runs(raw, row), specs), S, alpha))
        exceed += null >= magnitude
        max_null[i] = null.max(axis=1, initial=0.0)
        maps.append(null)
        if statistics is not None:
            stats.append(statistics(null))
    return exceed, max_null, np.stack(stats) if stats else None, np.stack(maps)


class CountingArray:
    """``S`` that counts how often it is read (as ``bids.io.PagedArray`` is: by slices)."""

    def __init__(self, array):
        self._array = array
        self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype
        self.reads = 0

    def __len__(self):
        return len(self._array)

    def __getitem__(self, key):
        self.reads += 1
        return np.array(self._array[key])


def test_null_dictionaries_are_each_null_cleaned_alone(problem):
    raw, specs, _, _ = problem
    shifts = _shifts(raw, specs)
    Ds = _nullsolve.null_dictionaries(raw, specs, shifts)
    assert Ds.shape == (N_NULLS, sum(s.n_kept for s in specs), N_UNITS)
    assert Ds.dtype == np.float32
    for D, row in zip(Ds, shifts, strict=True):
        assert D.tobytes() == clean_dictionary(shift_runs(raw, row), specs).tobytes()


def test_null_dictionaries_keep_a_zero_unit_zero():
    raw, specs, _, _ = _problem(1, constant_unit=3)
    Ds = _nullsolve.null_dictionaries(raw, specs, _shifts(raw, specs))
    assert not Ds[:, :, 3].any()
    assert np.all(np.abs(Ds[:, :, [0, 1, 2, 4]]).sum(axis=1) > 0)


@pytest.mark.parametrize(('chunk', 'n_threads'), [(256, 1), (32, 2), (17, 3)])
def test_sparse_code_many_equals_sparse_code_bit_for_bit(problem, chunk, n_threads):
    raw, specs, S, _ = problem
    Ds = _nullsolve.null_dictionaries(raw, specs, _shifts(raw, specs))
    out = np.zeros((len(Ds), N_UNITS, N_VOXELS), np.float32)
    assert sparse_code_many(Ds, CountingArray(S), ALPHA, out, chunk=chunk,
                            n_threads=n_threads) == 0  # fmt: skip
    for D, codes in zip(Ds, out, strict=True):
        assert codes.tobytes() == sparse_code(D, S, ALPHA).tobytes()
    assert np.count_nonzero(out) > 0


def test_sparse_code_many_reads_each_block_once(problem):
    raw, specs, S, _ = problem
    Ds = _nullsolve.null_dictionaries(raw, specs, _shifts(raw, specs))
    counting = CountingArray(S)
    sparse_code_many(Ds, counting, ALPHA, np.zeros((len(Ds), N_UNITS, N_VOXELS), np.float32),
                     chunk=64)  # fmt: skip
    assert counting.reads == -(-N_VOXELS // 64)


def test_sparse_code_many_refuses_bad_inputs(problem):
    raw, specs, S, _ = problem
    Ds = _nullsolve.null_dictionaries(raw, specs, _shifts(raw, specs, 2))
    out = np.zeros((2, N_UNITS, N_VOXELS), np.float32)
    with pytest.raises(ValueError, match='alpha'):
        sparse_code_many(Ds, S, 0.0, out)
    with pytest.raises(ValueError, match=r'S must be \(T, V\)'):
        sparse_code_many(Ds, S[1:], ALPHA, out)
    with pytest.raises(ValueError, match='out must be float32'):
        sparse_code_many(Ds, S, ALPHA, out[:1])
    with pytest.raises(ValueError, match='out must be float32'):
        sparse_code_many(Ds, S, ALPHA, out.astype(np.float64))
    bad = Ds.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match='finite'):
        sparse_code_many(bad, S, ALPHA, out)
    broken = S.copy()
    broken[5, 100] = np.inf
    with pytest.raises(ValueError, match='NaN or infinite'):
        sparse_code_many(Ds, broken, ALPHA, out)


@pytest.mark.parametrize('n_per_batch', [1, 3, N_NULLS, 50])
def test_batched_nulls_equal_the_reference(problem, n_per_batch):
    raw, specs, S, networks = problem
    codes = sparse_code(clean_dictionary(raw, specs), S, ALPHA)
    shifts = _shifts(raw, specs)

    def statistics(maps):
        return network_statistics(maps, networks)

    exceed, max_null, stats, maps = _reference(raw, specs, S, ALPHA, shifts, codes, statistics)
    counting = CountingArray(S)
    budget = n_per_batch * 4 * N_UNITS * N_VOXELS
    tally = _nullsolve.batched(raw, specs, counting, ALPHA, shifts, codes,
                               statistics=statistics, budget_bytes=budget)  # fmt: skip
    np.testing.assert_array_equal(tally.exceed, exceed)
    assert tally.exceed.dtype == np.int32
    assert tally.max_null.tobytes() == max_null.tobytes()
    assert tally.stats.tobytes() == stats.tobytes()
    # S read once per batch, not once per null
    n_batches = -(-N_NULLS // min(n_per_batch, N_NULLS))
    assert counting.reads == n_batches * -(-N_VOXELS // 256)
    # the nulls are real maps: some coefficients, some reaching the real ones
    assert maps.any()
    assert 0 < exceed[:, COUPLED.stop :].mean() < N_NULLS
    assert exceed[1, COUPLED].max() == 0  # the coupled unit beats every null there


def test_per_null_equals_the_reference(problem):
    raw, specs, S, _ = problem
    codes = sparse_code(clean_dictionary(raw, specs), S, ALPHA)
    shifts = _shifts(raw, specs, 3)
    exceed, max_null, _, _ = _reference(raw, specs, S, ALPHA, shifts, codes)
    tally = _nullsolve.per_null(raw, specs, S, ALPHA, shifts, codes)
    np.testing.assert_array_equal(tally.exceed, exceed)
    assert tally.max_null.tobytes() == max_null.tobytes()
    assert tally.stats is None


def test_fit_layer_nulls_equal_the_reference():
    """End to end, with annotated voxels and a unit that cleaning zeroes."""
    raw, specs, S, networks = _problem(2, constant_unit=4)
    annotated = np.ones(N_VOXELS, dtype=bool)
    annotated[::7] = False
    fit = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=5,
                    networks=networks[:, annotated], annotated=annotated)  # fmt: skip
    shifts = _shifts(raw, specs, seed=5)
    np.testing.assert_array_equal(fit.shifts, shifts)

    def statistics(maps):
        return network_statistics(maps[:, annotated], networks[:, annotated])

    exceed, max_null, stats, null_maps = _reference(raw, specs, S, ALPHA, shifts, fit.codes,
                                                    statistics)  # fmt: skip
    z = p_to_z(empirical_p(exceed, N_NULLS), N_NULLS).astype(np.float32)
    assert fit.z.tobytes() == z.tobytes()
    assert fit.max_null.tobytes() == max_null.tobytes()
    np.testing.assert_array_equal(fit.fwe_threshold, fwe_threshold(max_null))
    assert fit.network_stats.shape == (1 + N_NULLS, N_UNITS, 3)
    assert fit.network_stats[1:].tobytes() == stats.tobytes()
    np.testing.assert_array_equal(fit.network_stats[0], statistics(fit.codes))
    # the subject-level label's statistic, from the same null maps
    contrast = [network_statistics(m[:, annotated], networks[:, annotated], statistic='contrast')
                for m in null_maps]  # fmt: skip
    np.testing.assert_allclose(fit.subject_stats[1:], np.stack(contrast), rtol=1e-12)
    np.testing.assert_array_equal(
        fit.subject_stats[0],
        network_statistics(fit.codes[:, annotated], networks[:, annotated], statistic='contrast'),
    )
    assert not fit.max_null[:, 4].any()  # the zeroed unit: zero in every null
    assert fit.seconds_per_null > 0


def test_batch_size_fits_the_budget():
    assert _nullsolve.batch_size(64, 235_375) * 64 * 235_375 * 4 <= _nullsolve.NULL_BATCH_BYTES
    assert _nullsolve.batch_size(64, 3_644) >= 99  # the demo: all nulls in one batch
    assert _nullsolve.batch_size(10, 10, budget_bytes=1) == 1


@pytest.mark.gpu
def test_fit_layer_nulls_on_cuda_agree(problem):
    raw, specs, S, _ = problem
    cpu = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=3)
    gpu = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=3, device='cuda')
    np.testing.assert_array_equal(gpu.shifts, cpu.shifts)
    np.testing.assert_allclose(gpu.max_null, cpu.max_null, rtol=1e-4, atol=1e-6)
    assert np.mean(gpu.z == cpu.z) > 0.99
