"""FBNs of a layer and their significance: core/nulls.py, core/fbn.py, bids/runs.py, bids/boldmaps.py.

Synthetic, seeded and small: a planted problem whose voxels copy chosen units, tiny NIfTI runs.
"""

from __future__ import annotations

import gzip
import json
import os
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.stats import norm

from bids_syncact.bids.boldmaps import (
    boldmap_bytes,
    boldmap_path,
    common_entities,
    write_boldmap,
)
from bids_syncact.bids.runs import clean_bold, load_clean_spec, save_clean_spec, stack_runs
from bids_syncact.core.coupling import sparse_code
from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.core.fbn import clean_dictionary, fit_layer
from bids_syncact.core.nulls import (
    MIN_SHIFT_S,
    allowed_shifts,
    draw_shifts,
    empirical_p,
    fwe_minimum_nulls,
    fwe_threshold,
    p_to_z,
)
from bids_syncact.errors import InputDataError

ALPHA = 0.05
N_NULLS = 19
N_VOLS = 200
N_UNITS = 6
N_VOXELS = 300
#: Voxels copying a unit (plus noise): unit -> voxels; the others are noise only.
PLANTED = {2: slice(0, 30), 4: slice(30, 60)}
NOISE = slice(60, N_VOXELS)
GRID = (5, 6, 4)
AFFINE = np.array(
    [[2.0, 0.0, 0.0, -10.0], [0.0, 2.5, 0.0, 20.0], [0.0, 0.0, 3.0, -7.0], [0.0, 0.0, 0.0, 1.0]]
)


def _brute_shifts(n_vols, t_r, min_shift_s=MIN_SHIFT_S):
    step, least = Fraction(str(t_r)), Fraction(str(min_shift_s))
    return [s for s in range(1, n_vols) if min(s, n_vols - s) * step >= least]  # never 0


def _planted(rng, *, n_runs=2, constant_unit=None):
    """Raw activations per run, the runs' specs and the cleaned, stacked BOLD ``S``."""
    specs = [
        CleanSpec(N_VOLS, 1.0, sample_mask=np.arange(2, N_VOLS), name=f'sub-01_run-{r + 1}')
        for r in range(n_runs)
    ]
    raw, bold = [], []
    for _ in range(n_runs):
        units = gaussian_filter1d(rng.standard_normal((N_VOLS, N_UNITS)), 2.0, axis=0)
        units = 5.0 * units + 10.0
        if constant_unit is not None:
            units[:, constant_unit] = 3.0
        standard = (units - units.mean(axis=0)) / np.where(units.std(axis=0) > 0, units.std(0), 1)
        voxels = rng.standard_normal((N_VOLS, N_VOXELS)) + 100.0
        for unit, where in PLANTED.items():
            voxels[:, where] += 2.0 * standard[:, [unit]]
        raw.append(units)
        bold.append(voxels)
    S = concatenate_runs([clean(b, spec) for b, spec in zip(bold, specs, strict=True)])
    return raw, specs, S


@pytest.fixture(scope='module')
def planted():
    return _planted(np.random.default_rng(20240611))


@pytest.fixture(scope='module')
def null_fit(planted):
    raw, specs, S = planted
    return fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=7)


# --- core/nulls.py ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('n_vols', 't_r'),
    [(130, 1.0), (120, 1.0), (119, 1.0), (300, 0.8), (151, 0.8), (150, 0.8), (61, 2.0),
     (60, 2.0), (59, 2.0), (400, 0.72), (200, 0.7), (100, 1.5), (10, 2.0), (90, 1.0)],
)  # fmt: skip
def test_allowed_shifts_are_exactly_those_far_enough_from_zero(n_vols, t_r):
    shifts = allowed_shifts(n_vols, t_r)
    assert shifts.tolist() == _brute_shifts(n_vols, t_r)
    assert np.issubdtype(shifts.dtype, np.integer)
    assert all(min(s, n_vols - s) * t_r >= MIN_SHIFT_S - 1e-9 for s in shifts.tolist())


def test_allowed_shifts_other_minimum():
    assert allowed_shifts(20, 2.0, min_shift_s=10.0).tolist() == _brute_shifts(20, 2.0, 10.0)
    assert allowed_shifts(7, 1.0, min_shift_s=0.0).tolist() == list(range(1, 7))


def test_draw_shifts_seeded_distinct_and_allowed():
    n_vols, t_r = [300, 250, 400], [1.0, 2.0, 0.8]
    shifts = draw_shifts(n_vols, t_r, 40, seed=3)
    assert shifts.shape == (40, 3)
    np.testing.assert_array_equal(shifts, draw_shifts(n_vols, t_r, 40, seed=3))
    other = draw_shifts(n_vols, t_r, 40, seed=4)
    for r, (n, tr) in enumerate(zip(n_vols, t_r, strict=True)):
        assert len(set(shifts[:, r].tolist())) == 40
        assert set(shifts[:, r].tolist()) <= set(_brute_shifts(n, tr))
        assert not np.array_equal(shifts[:, r], other[:, r])
    # Runs get their own draws, not one shift copied across runs.
    assert not np.array_equal(shifts[:, 0], shifts[:, 1])


def test_draw_shifts_uses_every_allowed_shift_when_asked_for_all():
    allowed = allowed_shifts(130, 1.0)
    shifts = draw_shifts([130], [1.0], allowed.size, seed=0)
    assert sorted(shifts[:, 0].tolist()) == allowed.tolist()


def test_draw_shifts_refuses_a_run_too_short():
    names = ['sub-01_task-movie_run-1', 'sub-01_task-movie_run-2']
    with pytest.raises(InputDataError, match=r'sub-01_task-movie_run-2: .*allow only 11 ') as err:
        draw_shifts([300, 12], [1.0, 1.0], 12, seed=0, names=names)  # shifts 1..11
    assert 'run-1' not in str(err.value)
    assert 'at most 11' in str(err.value)
    with pytest.raises(InputDataError, match=r'^run 1: .*allow only 0 '):
        draw_shifts([1, 300], [1.0, 1.0], 1, seed=0)
    # with a smallest distance from zero, as before issue 18
    with pytest.raises(InputDataError, match=r'allow only 11 .*at least 60 s from zero'):
        draw_shifts([300, 130], [1.0, 1.0], 12, seed=0, min_shift_s=60.0)


def test_empirical_p_range_and_values():
    counts = np.arange(N_NULLS + 1)
    p = empirical_p(counts, N_NULLS)
    assert p.min() == pytest.approx(1 / (N_NULLS + 1))
    assert p.max() == 1.0
    np.testing.assert_allclose(p, (1 + counts) / (1 + N_NULLS))
    assert np.all(np.diff(p) > 0)


def test_p_to_z_monotone_finite_and_anchored():
    for n_nulls in (19, 99, 1000):
        p = empirical_p(np.arange(n_nulls + 1), n_nulls)
        z = p_to_z(p, n_nulls)
        assert np.all(np.isfinite(z))
        assert np.all(np.diff(z) < 0)
        assert z[-1] < 0
        assert z[0] == pytest.approx(norm.isf(1 / (n_nulls + 1)))
        np.testing.assert_allclose(norm.sf(z[:-1]), p[:-1], rtol=1e-9)
        assert abs(float(p_to_z(np.array([0.5]), n_nulls)[0])) < 1e-12
    assert p_to_z(np.array([0.05]), N_NULLS)[0] == pytest.approx(1.6448536, abs=1e-6)


def test_fwe_threshold_controls_the_family_wise_rate(rng):
    n_nulls, n_voxels, scales = 4000, 50, np.array([1.0, 2.0, 0.5])
    max_null = np.abs(rng.standard_normal((n_nulls, n_voxels, 3))).max(axis=1) * scales
    threshold = fwe_threshold(max_null)
    assert threshold.shape == (3,)
    exceed = (max_null > threshold).mean(axis=0)
    assert np.all(exceed <= 0.05)
    assert np.all(exceed >= 0.045)  # not much more conservative than asked
    # The known quantile of the largest of 50 |N(0, 1)|: (2 Phi(t) - 1) ** 50 = 0.95.
    expected = norm.ppf((1 + 0.95 ** (1 / n_voxels)) / 2) * scales
    np.testing.assert_allclose(threshold, expected, rtol=0.03)


def test_fwe_threshold_is_per_unit(rng):
    max_null = rng.gamma(2.0, size=(99, 4)) * np.array([1.0, 10.0, 0.1, 3.0])
    threshold = fwe_threshold(max_null)
    for k in range(4):
        assert threshold[k] == fwe_threshold(max_null[:, [k]])[0]
        assert threshold[k] in max_null[:, k]
    order = [2, 0, 3, 1]
    np.testing.assert_array_equal(fwe_threshold(max_null[:, order]), threshold[order])
    changed = max_null.copy()
    changed[:, 1] *= 5.0
    np.testing.assert_array_equal(fwe_threshold(changed)[[0, 2, 3]], threshold[[0, 2, 3]])


@pytest.mark.parametrize('n_nulls', [19, 20, 21, 39, 99, 100, 1000])
def test_fwe_threshold_at_most_level_exceed(n_nulls, rng):
    max_null = rng.permutation(np.arange(1.0, n_nulls + 1.0))[:, None]
    threshold = fwe_threshold(max_null)
    assert (max_null > threshold).mean() <= 0.05


@pytest.mark.parametrize('n_nulls', [19, 20, 30, 39, 40, 99, 100, 137])
def test_fwe_threshold_holds_the_rate_under_exchangeability(n_nulls):
    # Under the null, the real maximum is one of N + 1 exchangeable values: each rank is equally
    # likely, so the exact rate is the share of ranks whose value exceeds the other N's threshold.
    values = np.arange(1.0, n_nulls + 2.0)
    exceed = [
        values[i] > fwe_threshold(np.delete(values, i)[:, None])[0] for i in range(n_nulls + 1)
    ]
    rate = np.mean(exceed)
    assert rate <= 0.05
    assert rate == np.floor(0.05 * (n_nulls + 1) + 1e-9) / (n_nulls + 1)  # no more conservative


@pytest.mark.parametrize('n_nulls', [1, 10, 18])
def test_fwe_threshold_is_nan_below_19_nulls(n_nulls):
    assert fwe_minimum_nulls() == 19
    assert np.all(np.isnan(fwe_threshold(np.ones((n_nulls, 3)))))


# --- core/fbn.py ------------------------------------------------------------------------------


def test_clean_dictionary_cleans_each_run_then_stacks(planted):
    raw, specs, _ = planted
    D = clean_dictionary(raw, specs)
    expected = concatenate_runs([clean(x, spec) for x, spec in zip(raw, specs, strict=True)])
    np.testing.assert_array_equal(D, expected)
    assert D.shape == (sum(spec.n_kept for spec in specs), N_UNITS)
    np.testing.assert_allclose(np.linalg.norm(D, axis=0), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match='2 runs of activations for 1 clean specs'):
        clean_dictionary(raw, specs[:1])


def test_fit_layer_codes_are_the_sparse_codes(planted):
    raw, specs, S = planted
    fit = fit_layer(raw, specs, S, alpha=ALPHA)
    np.testing.assert_array_equal(fit.codes, sparse_code(clean_dictionary(raw, specs), S, ALPHA))
    assert fit.codes.shape == (N_UNITS, N_VOXELS)
    assert fit.codes.dtype == np.float32
    assert fit.alpha == ALPHA
    assert fit.alpha_choice is None
    assert fit.z is None
    assert fit.fwe_threshold is None
    assert fit.shifts is None
    assert not fit.zero_units.any()
    assert fit.variance_inflation.shape == (N_UNITS,)
    assert np.all(np.isfinite(fit.variance_inflation))
    assert np.all(fit.variance_inflation >= 1.0)
    assert np.isfinite(fit.condition_number)
    assert fit.condition_number >= 1.0


def test_fit_layer_finds_the_planted_units(planted):
    raw, specs, S = planted
    codes = fit_layer(raw, specs, S, alpha=ALPHA).codes
    for unit, where in PLANTED.items():
        assert np.all(np.argmax(np.abs(codes[:, where]), axis=0) == unit)
        assert np.all(codes[unit, where] > 0.5)
        assert np.abs(codes[unit, NOISE]).max() < 0.2
    assert np.abs(codes[:, NOISE]).mean() < 0.05


def test_fit_layer_chooses_alpha(planted):
    raw, specs, S = planted
    fit = fit_layer(raw, specs, S, alpha=None)
    assert fit.alpha_choice is not None
    assert fit.alpha == fit.alpha_choice.alpha
    assert fit.alpha in fit.alpha_choice.grid
    assert len(fit.alpha_choice.r2) == len(fit.alpha_choice.grid)
    np.testing.assert_array_equal(
        fit.codes, sparse_code(clean_dictionary(raw, specs), S, fit.alpha)
    )


def test_fit_layer_refuses_mismatched_samples(planted):
    raw, specs, S = planted
    with pytest.raises(ValueError, match='samples'):
        fit_layer(raw, specs, S[:-1], alpha=ALPHA)


def test_fit_layer_constant_unit_has_a_zero_map():
    raw, specs, S = _planted(np.random.default_rng(5), constant_unit=5)
    fit = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=1)
    np.testing.assert_array_equal(fit.zero_units, np.arange(N_UNITS) == 5)
    assert np.all(fit.codes[5] == 0)
    assert fit.variance_inflation.shape == (N_UNITS,)
    assert np.isnan(fit.variance_inflation[5])
    assert np.all(np.isfinite(fit.variance_inflation[:5]))
    assert np.isfinite(fit.condition_number)
    # A zero coefficient is never significant: p = 1, the lowest z.
    np.testing.assert_array_equal(fit.z[5], np.float32(p_to_z(np.array([1.0]), N_NULLS)[0]))
    assert fit.z[5, 0] < 0
    for unit, where in PLANTED.items():
        assert np.all(fit.codes[unit, where] > 0.5)


def test_fit_layer_nulls_shapes(null_fit):
    fit = null_fit
    assert fit.z.shape == (N_UNITS, N_VOXELS)
    assert fit.z.dtype == np.float32
    assert fit.fwe_threshold.shape == (N_UNITS,)
    assert np.all(fit.fwe_threshold > 0)
    assert fit.shifts.shape == (N_NULLS, 2)
    np.testing.assert_array_equal(
        fit.shifts, draw_shifts([N_VOLS, N_VOLS], [1.0, 1.0], N_NULLS, seed=7)
    )
    assert fit.seconds_per_null is not None
    assert fit.seconds_per_null > 0


def test_fit_layer_nulls_match_a_direct_computation(planted, null_fit):
    """Each null: the raw runs rolled by their shift, cleaned and solved at the same alpha."""
    raw, specs, S = planted
    fit = null_fit
    magnitude = np.abs(fit.codes)
    exceed = np.zeros(magnitude.shape, dtype=int)
    max_null = np.zeros((N_NULLS, N_UNITS))
    for i, row in enumerate(fit.shifts):
        rolled = [np.roll(x, int(s), axis=0) for x, s in zip(raw, row, strict=True)]
        null = np.abs(sparse_code(clean_dictionary(rolled, specs), S, ALPHA))
        exceed += null >= magnitude
        max_null[i] = null.max(axis=1)
    z = p_to_z((1.0 + exceed) / (1.0 + N_NULLS), N_NULLS).astype(np.float32)
    np.testing.assert_array_equal(fit.z, z)
    np.testing.assert_array_equal(fit.fwe_threshold, fwe_threshold(max_null))


def test_fit_layer_nulls_separate_signal_from_noise(null_fit):
    fit = null_fit
    z_best = np.float32(p_to_z(np.array([1.0 / (N_NULLS + 1)]), N_NULLS)[0])
    assert z_best > 1.6
    for unit, where in PLANTED.items():
        assert np.all(fit.z[unit, where] == z_best)  # beats every null
        assert np.all(np.abs(fit.codes[unit, where]) > fit.fwe_threshold[unit])
    noise_z = fit.z[:, NOISE]
    assert (noise_z >= z_best).mean() <= 0.1  # p <= 0.05 about 5% of the time
    assert np.median(noise_z) < 0


def test_fit_layer_nulls_are_seeded(planted, null_fit):
    raw, specs, S = planted
    again = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=7)
    np.testing.assert_array_equal(again.shifts, null_fit.shifts)
    assert again.z.tobytes() == null_fit.z.tobytes()
    np.testing.assert_array_equal(again.fwe_threshold, null_fit.fwe_threshold)
    other = fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=N_NULLS, seed=8)
    assert not np.array_equal(other.shifts, null_fit.shifts)
    np.testing.assert_array_equal(other.codes, null_fit.codes)


def test_fit_layer_refuses_too_many_nulls(planted):
    raw, specs, S = planted
    # 200 volumes at TR 1 s: shifts 1..199, 199 of them.
    with pytest.raises(InputDataError, match=r'sub-01_run-1: .*allow only 199 '):
        fit_layer(raw, specs, S, alpha=ALPHA, n_nulls=200)


# --- bids/runs.py -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('n_confounds', 'high_pass', 'detrend'), [(0, None, True), (3, 0.02, False), (2, None, True)]
)
def test_clean_spec_roundtrip(tmp_path, rng, n_confounds, high_pass, detrend):
    confounds = rng.standard_normal((60, n_confounds)) if n_confounds else None
    spec = CleanSpec(
        n_vols=60, t_r=2.0, sample_mask=np.r_[3:20, 25:60], confounds=confounds,
        high_pass=high_pass, detrend=detrend, name='sub-01_ses-a_task-movie_run-2',
    )  # fmt: skip
    path = tmp_path / 'specs' / 'run-2_cleanspec.npz'
    assert save_clean_spec(path, spec) == path
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    loaded = load_clean_spec(path)
    assert loaded.n_vols == spec.n_vols
    assert loaded.t_r == spec.t_r
    np.testing.assert_array_equal(loaded.sample_mask, spec.sample_mask)
    if confounds is None:
        assert loaded.confounds is None
    else:
        np.testing.assert_array_equal(loaded.confounds, spec.confounds)
    assert loaded.high_pass == high_pass
    assert loaded.detrend is detrend
    assert loaded.name == spec.name
    signals = rng.standard_normal((60, 4))
    np.testing.assert_array_equal(clean(signals, loaded), clean(signals, spec))


def _nifti_run(path: Path, rng, mask: np.ndarray, n_vols: int) -> np.ndarray:
    data = (rng.standard_normal((*GRID, n_vols)) + 100.0).astype(np.float32)
    data += np.linspace(0.0, 3.0, n_vols, dtype=np.float32)  # a drift for the detrend
    data[~mask] = 0.0
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return data


@pytest.fixture
def bold_runs(tmp_path, rng):
    mask = rng.random(GRID) < 0.6
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    runs = []
    for r in (1, 2):
        n_vols = 40 if r == 1 else 36
        path = tmp_path / f'sub-01_task-movie_run-{r}_desc-preproc_bold.nii.gz'
        data = _nifti_run(path, rng, mask, n_vols)
        spec = CleanSpec(
            n_vols=n_vols, t_r=2.0, sample_mask=np.arange(2, n_vols),
            confounds=rng.standard_normal((n_vols, 2)), high_pass=0.01, name=f'run-{r}',
        )  # fmt: skip
        runs.append((path, data, spec))
    return mask, mask_img, runs


def _leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(('.tmp', '_raw.npy')))


def test_clean_bold_equals_clean_of_the_masked_voxels(tmp_path, bold_runs):
    mask, mask_img, runs = bold_runs
    path, data, spec = runs[0]
    work = tmp_path / 'work'
    out = clean_bold(path, mask_img, spec, work / 'run-1_bold.npy', chunk=7)
    n_voxels = int(mask.sum())
    assert out.shape == (spec.n_kept, n_voxels)
    assert out.dtype == np.float32
    voxels = data.reshape(-1, data.shape[-1])[np.flatnonzero(mask)].T  # mask's C order
    np.testing.assert_array_equal(voxels, data[mask].T)
    np.testing.assert_allclose(out, clean(voxels, spec), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), 1.0, rtol=1e-5)
    assert sorted(os.listdir(work)) == ['run-1_bold.npy']
    np.testing.assert_array_equal(np.load(work / 'run-1_bold.npy'), out)


def test_clean_bold_refuses_a_spec_of_other_length(tmp_path, bold_runs):
    _, mask_img, runs = bold_runs
    path, _, _ = runs[0]
    wrong = runs[1][2]  # 36 volumes for a 40-volume run
    work = tmp_path / 'work'
    with pytest.raises(ValueError, match='40 volumes, its spec 36'):
        clean_bold(path, mask_img, wrong, work / 'run-1_bold.npy')
    assert os.listdir(work) == []


def test_stack_runs_equals_concatenate_runs(tmp_path, bold_runs):
    _, mask_img, runs = bold_runs
    work = tmp_path / 'work'
    paths, cleaned = [], []
    for r, (path, _, spec) in enumerate(runs, start=1):
        out_path = work / f'run-{r}_bold.npy'
        cleaned.append(np.array(clean_bold(path, mask_img, spec, out_path)))
        paths.append(out_path)
    stacked = stack_runs(paths, work / 'stacked.npy', chunk=5)
    expected = concatenate_runs(cleaned)
    assert (
        stacked.shape == expected.shape == (sum(s.n_kept for *_, s in runs), cleaned[0].shape[1])
    )
    assert stacked.dtype == np.float32
    np.testing.assert_allclose(stacked, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(stacked, axis=0), 1.0, rtol=1e-5)
    assert _leftovers(work) == []
    assert sorted(os.listdir(work)) == ['run-1_bold.npy', 'run-2_bold.npy', 'stacked.npy']


def test_stack_runs_refuses_different_voxel_counts(tmp_path):
    np.save(tmp_path / 'a.npy', np.zeros((5, 3), dtype=np.float32))
    np.save(tmp_path / 'b.npy', np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r'different voxel counts: \[3, 4\]'):
        stack_runs([tmp_path / 'a.npy', tmp_path / 'b.npy'], tmp_path / 'out.npy')
    assert sorted(os.listdir(tmp_path)) == ['a.npy', 'b.npy']


# --- bids/boldmaps.py -------------------------------------------------------------------------


@pytest.fixture
def mask_img(rng):
    mask = rng.random(GRID) < 0.5
    return nib.Nifti1Image(mask.astype(np.uint8), AFFINE)


def test_boldmap_bytes_puts_rows_back_in_the_mask(tmp_path, rng, mask_img):
    inside = np.asarray(mask_img.dataobj) > 0
    maps = rng.standard_normal((3, int(inside.sum())))
    data = boldmap_bytes(maps, mask_img, 'z')
    path = tmp_path / 'map.nii.gz'
    path.write_bytes(data)
    img = nib.load(path)
    assert img.shape == (*GRID, 3)
    volume = np.asarray(img.dataobj)
    assert volume.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(volume[..., k][inside], maps[k].astype(np.float32))
        assert np.all(np.isnan(volume[..., k][~inside]))  # no data outside the brain mask
    np.testing.assert_allclose(img.affine, mask_img.affine)
    assert img.header.get_zooms()[:3] == pytest.approx((2.0, 2.5, 3.0))
    assert img.header.get_intent()[0] == 'z score'
    with pytest.raises(ValueError, match='voxels of maps'):
        boldmap_bytes(maps[:, 1:], mask_img, 'z')


def test_boldmap_bytes_are_reproducible(rng, mask_img):
    maps = rng.standard_normal((2, int((np.asarray(mask_img.dataobj) > 0).sum())))
    first = boldmap_bytes(maps, mask_img, 'coef')
    assert first == boldmap_bytes(maps.copy(), mask_img, 'coef')
    assert first[:2] == b'\x1f\x8b'
    assert first[4:8] == b'\x00\x00\x00\x00'  # gzip mtime 0
    assert first != boldmap_bytes(maps + 1.0, mask_img, 'coef')
    assert len(gzip.decompress(first)) > 348


def test_write_boldmap_writes_the_sidecar_and_skips_identical_content(tmp_path, rng, mask_img):
    maps = rng.standard_normal((2, int((np.asarray(mask_img.dataobj) > 0).sum())))
    data = boldmap_bytes(maps, mask_img, 'coef')
    path = tmp_path / 'sub-01' / 'func' / 'sub-01_task-movie_stat-coef_boldmap.nii.gz'
    sidecar = {'UnitIndices': [0, 1], 'Sources': [Path('a/b.tsv')], 'Alpha': 0.05}
    assert write_boldmap(path, data, sidecar) == path
    json_path = path.with_name('sub-01_task-movie_stat-coef_boldmap.json')
    assert json.loads(json_path.read_text()) == {
        'UnitIndices': [0, 1], 'Sources': ['a/b.tsv'], 'Alpha': 0.05,
    }  # fmt: skip
    assert path.read_bytes() == data
    assert sorted(os.listdir(path.parent)) == sorted([path.name, json_path.name])
    old = 1_000_000_000 * 10**9
    for p in (path, json_path):
        os.utime(p, ns=(old, old))
    write_boldmap(path, data, sidecar)
    assert path.stat().st_mtime_ns == old
    assert json_path.stat().st_mtime_ns == old
    changed = boldmap_bytes(maps * 2.0, mask_img, 'coef')
    write_boldmap(path, changed, sidecar)
    assert path.read_bytes() == changed
    assert path.stat().st_mtime_ns != old


def test_boldmap_path_orders_the_entities():
    entities = {'subject': '01', 'session': 'a', 'task': 'movie', 'acquisition': 'mb', 'run': 2}
    path = boldmap_path(
        Path('/out'), entities, space='MNI152NLin2009cAsym', res='2', cnn='alexnet',
        layer='features.1', stat='z',
    )  # fmt: skip
    assert path == Path(
        '/out/sub-01/ses-a/func/sub-01_ses-a_task-movie_acq-mb_space-MNI152NLin2009cAsym_res-2'
        '_cnn-alexnet_layer-features1_stat-z_boldmap.nii.gz'
    )
    plain = boldmap_path(
        Path('/out'), {'subject': '02', 'task': 'movie'}, space='T1w', res=None,
        cnn='resnet18', layer='layer4.1', stat='coef',
    )  # fmt: skip
    assert plain == Path(
        '/out/sub-02/func/sub-02_task-movie_space-T1w_cnn-resnet18_layer-layer41_stat-coef'
        '_boldmap.nii.gz'
    )


def test_common_entities_keep_only_what_all_runs_share():
    base = {'subject': '01', 'task': 'movie'}
    same = [
        {**base, 'run': 1, 'session': 'a', 'acquisition': 'mb'},
        {**base, 'run': 2, 'session': 'a', 'acquisition': 'mb'},
    ]
    assert common_entities(same) == {**base, 'session': 'a', 'acquisition': 'mb'}
    differ = [{**same[0], 'session': 'b'}, same[1]]
    assert common_entities(differ) == {**base, 'acquisition': 'mb'}
    partly = [{**base, 'run': 1, 'session': 'a'}, {**base, 'run': 2}]
    assert common_entities(partly) == base
    assert common_entities([{**base, 'run': 1}]) == base
    assert 'run' not in common_entities(same)


def test_stack_runs_saves_the_voxels_left_out(tmp_path, rng):
    runs = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(2)]
    runs[0][:, 1] = 0.0  # silent in one run: left out of both
    runs[0][:, 3] = runs[1][:, 3] = 0.0  # silent in both
    for r, run in enumerate(runs):
        np.save(tmp_path / f'{r}.npy', run)
    stacked = stack_runs([tmp_path / '0.npy', tmp_path / '1.npy'], tmp_path / 'S.npy', chunk=2,
                         silent_path=tmp_path / 'silent.npy')  # fmt: skip
    silent = np.load(tmp_path / 'silent.npy')
    assert silent.tolist() == [False, True, False, True, False]
    assert silent.tolist() == (~np.asarray(stacked).any(axis=0)).tolist()
