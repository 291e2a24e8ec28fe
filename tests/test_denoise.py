"""Denoising both sides identically: core/denoise.py and bids/bold.py (DESIGN.md section 2.3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.interfaces import fmriprep as nilearn_fmriprep

from bids_syncact.bids import bold as bold_module
from bids_syncact.bids.bold import (
    bold_to_memmap,
    clean_spec_for_run,
    intersect_run_masks,
    iter_voxel_chunks,
    load_confounds,
)
from bids_syncact.core.denoise import (
    MIN_KEPT_VOLUMES,
    CleanSpec,
    clean,
    concatenate_runs,
    sample_mask_for,
    unit_norm,
)
from bids_syncact.errors import InputDataError

NILEARN_DATA = Path(nilearn_fmriprep.__file__).parent / 'data'
BOLD_NAME = 'sub-01_task-movie_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz'
CONFOUNDS_NAME = 'sub-01_task-movie_desc-confounds_timeseries'
SHAPE = (7, 8, 9)  # unequal sides, nilearn's habit
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _fmriprep_run(folder: Path, source: str, n_vols: int = 30, json: bool = True) -> Path:
    """Copy one of nilearn's real fMRIPrep confounds files next to a tiny BOLD named to match."""
    shutil.copy(NILEARN_DATA / f'{source}.tsv', folder / f'{CONFOUNDS_NAME}.tsv')
    if json and (NILEARN_DATA / f'{source}.json').exists():
        shutil.copy(NILEARN_DATA / f'{source}.json', folder / f'{CONFOUNDS_NAME}.json')
    return _write(folder / BOLD_NAME, np.zeros((2, 2, 2, n_vols), dtype=np.float32))


def _spec(rng, n_vols=60, n_confounds=3, **kwargs):
    confounds = rng.standard_normal((n_vols, n_confounds))
    mask = sample_mask_for(n_vols, (0, 1), np.setdiff1d(np.arange(n_vols), [20, 21, 40]))
    return CleanSpec(n_vols=n_vols, t_r=2.0, sample_mask=mask, confounds=confounds, **kwargs)


# --- core/denoise.py --------------------------------------------------------------------------


def test_pure_confound_comes_out_zero_on_the_d_side(rng):
    spec = _spec(rng, high_pass=0.01)
    conf = spec.confounds
    d = np.column_stack([
        conf[:, 0],
        2 * conf[:, 1] - conf[:, 2] + 5.0,  # a linear combination plus an offset
        rng.standard_normal(spec.n_vols),
    ])  # fmt: skip
    out = clean(d, spec)
    assert out.shape == (spec.n_kept, 3)
    assert np.all(out[:, :2] == 0)
    assert np.linalg.norm(out[:, 2]) == pytest.approx(1.0, abs=1e-6)


def test_pure_confound_voxel_comes_out_zero_on_the_bold_side(rng, tmp_path):
    n_vols = 40
    spec = _spec(rng, n_vols=n_vols)
    data = (rng.standard_normal((*SHAPE, n_vols)) * 10 + 1000).astype(np.float32)
    data[3, 4, 5] = 1000 + 20 * spec.confounds[:, 1] - 7 * spec.confounds[:, 0]
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:5, 3:6, 4:7] = 1
    bold = _write(tmp_path / BOLD_NAME, data)
    voxels = bold_to_memmap(bold, nib.Nifti1Image(mask, AFFINE), tmp_path / 'bold.npy', None)
    column = int(np.flatnonzero(np.flatnonzero(mask) == np.ravel_multi_index((3, 4, 5), SHAPE))[0])
    out = clean(voxels, spec)
    assert np.all(out[:, column] == 0)
    others = np.delete(out, column, axis=1)
    np.testing.assert_allclose(np.linalg.norm(others, axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize('chunk_dtype', [np.float64, np.float32])
def test_column_of_d_is_cleaned_the_same_inside_a_voxel_chunk(rng, chunk_dtype):
    spec = _spec(rng, n_vols=80, n_confounds=5, high_pass=0.01)
    d = rng.standard_normal((spec.n_vols, 6)).cumsum(axis=0) + 3.0  # drifting activations
    chunk = (rng.standard_normal((spec.n_vols, 50)) * 5 + 800).astype(chunk_dtype)
    chunk[:, 17] = d[:, 2]
    d_as_chunk = d.astype(chunk_dtype)  # what the voxel side would have stored
    from_d = clean(d_as_chunk, spec)[:, 2]
    from_chunk = clean(chunk, spec)[:, 17]
    np.testing.assert_allclose(from_chunk, from_d, rtol=1e-5, atol=1e-7)
    # And chunking the voxels changes nothing either.
    halves = np.hstack([clean(chunk[:, :20], spec), clean(chunk[:, 20:], spec)])
    np.testing.assert_allclose(halves, clean(chunk, spec), rtol=1e-5, atol=1e-7)


def test_unit_norm_per_column_per_run(rng):
    first, second = _spec(rng, n_vols=50), _spec(rng, n_vols=70, n_confounds=2)
    runs = []
    for spec in (first, second):
        x = rng.standard_normal((spec.n_vols, 4)) + 10
        x[:, 3] = 2.5  # constant
        runs.append(clean(x, spec))
    both = concatenate_runs(runs)
    assert both.shape == (first.n_kept + second.n_kept, 4)
    assert both.dtype == np.float32
    # Each run centred with equal weight; the stacked columns back at unit norm.
    for block in (both[: first.n_kept], both[first.n_kept :]):
        np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(block, axis=0), [0.5**0.5] * 3 + [0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(both, axis=0), [1, 1, 1, 0], atol=1e-5)


def test_unit_norm_leaves_zero_and_constant_columns_zero_without_nan():
    x = np.column_stack([np.zeros(5), np.full(5, 7.0), np.arange(5.0)])
    out = unit_norm(x)
    assert np.isfinite(out).all()
    assert np.all(out[:, :2] == 0)
    assert np.linalg.norm(out[:, 2]) == pytest.approx(1.0)


def test_sample_mask_merges_dummies_and_scrubbing():
    scrubbed = np.setdiff1d(np.arange(30), [0, 10, 11, 29])  # nilearn: non-steady 0, outliers
    kept = sample_mask_for(30, (0, 1, 2), scrubbed)
    assert kept.tolist() == [i for i in range(30) if i not in {0, 1, 2, 10, 11, 29}]
    assert sample_mask_for(30, (), None).tolist() == list(range(30))
    as_bool = np.isin(np.arange(30), scrubbed)
    assert sample_mask_for(30, (0, 1, 2), as_bool).tolist() == kept.tolist()


def test_sample_mask_refuses_too_few_volumes():
    with pytest.raises(InputDataError, match=r'sub-01: only 9 of 30 volumes remain') as info:
        sample_mask_for(30, tuple(range(21)), None, name='sub-01')
    assert '\n' not in str(info.value)
    assert sample_mask_for(30, tuple(range(30 - MIN_KEPT_VOLUMES)), None).size == MIN_KEPT_VOLUMES
    with pytest.raises(InputDataError):
        sample_mask_for(30, (), np.zeros(0, dtype=int))  # everything scrubbed


def test_cosine_high_pass_removes_slow_drift_and_keeps_faster_sinusoid():
    t_r, n_vols = 1.0, 300
    times, n = np.arange(n_vols) * t_r, np.arange(n_vols)
    # Slow cosines at 1/600 and 3/600 Hz, below the 0.008 Hz cut-off (in the DCT's span).
    drift = 5 * np.cos(np.pi * (n + 0.5) / n_vols) + 3 * np.cos(3 * np.pi * (n + 0.5) / n_vols)
    fast = np.sin(2 * np.pi * 0.05 * times)
    spec = CleanSpec(n_vols=n_vols, t_r=t_r, sample_mask=np.arange(n_vols), high_pass=0.008)
    out = clean(np.column_stack([drift + fast, drift, fast]), spec)
    assert abs(np.corrcoef(drift + fast, fast)[0, 1]) < 0.3  # the drift dominates the input
    assert np.all(out[:, 1] == 0)  # nothing left of the drift alone
    np.testing.assert_allclose(out[:, 0], out[:, 2], atol=1e-6)  # as if there were no drift
    assert np.corrcoef(out[:, 2], fast)[0, 1] > 0.99  # the faster sinusoid is kept
    unfiltered = CleanSpec(n_vols=n_vols, t_r=t_r, sample_mask=np.arange(n_vols))
    assert np.corrcoef(clean(np.c_[drift + fast], unfiltered)[:, 0], fast)[0, 1] < 0.5


def test_clean_spec_refuses_too_many_confounds(rng):
    with pytest.raises(InputDataError, match='degrees of freedom'):
        CleanSpec(n_vols=30, t_r=2.0, sample_mask=np.arange(30),
                  confounds=rng.standard_normal((30, 25)))  # fmt: skip


def test_clean_spec_is_read_only(rng):
    spec = _spec(rng)
    with pytest.raises(ValueError, match='read-only'):
        spec.confounds[0, 0] = 1.0
    with pytest.raises(ValueError, match='sorted'):
        CleanSpec(n_vols=30, t_r=2.0, sample_mask=np.array([3, 2, 5]))


# --- bids/bold.py: confounds ------------------------------------------------------------------

EXPECTED = {  # nilearn 0.14 presets on its own test file: (n_confounds, dropped volumes)
    'simple': 30,  # 24 motion + csf, white_matter + 4 cosines
    'scrubbing': 36,  # 24 motion + 8 wm_csf + 4 cosines; FD/DVARS outliers -> sample mask
    'compcor': 85,  # 24 motion + 57 aCompCor (50% variance) + 4 cosines
}


@pytest.mark.parametrize('strategy', ['simple', 'scrubbing', 'compcor', 'none'])
def test_load_confounds_on_nilearn_fmriprep_files(tmp_path, strategy):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    confounds, kept = load_confounds(bold, strategy, 30, (1, 2))
    if strategy == 'none':  # reads no file: its non-steady-state flags come with drop_volumes
        assert confounds is None
        assert kept.tolist() == [0, *range(3, 30)]
        return
    # The file flags volume 0 as non-steady-state: it joins the dropped ones in the mask.
    assert kept.tolist() == list(range(3, 30))
    assert confounds.shape == (30, EXPECTED[strategy])
    assert np.isfinite(confounds).all()
    np.testing.assert_allclose(confounds[1:].mean(axis=0), 0, atol=1e-8)  # demeaned, kept rows


def test_load_confounds_scrubbing_flags_outliers(tmp_path):
    bold = _fmriprep_run(tmp_path, 'test-v21_desc-confounds_timeseries')
    table = pd.read_csv(tmp_path / f'{CONFOUNDS_NAME}.tsv', sep='\t')
    table['std_dvars'] = 1.0
    table['framewise_displacement'] = 0.1
    table.loc[15, 'framewise_displacement'] = 0.9  # one outlier in the middle
    table.to_csv(tmp_path / f'{CONFOUNDS_NAME}.tsv', sep='\t', index=False, na_rep='n/a')
    confounds, kept = load_confounds(bold, 'scrubbing', 30, ())
    assert confounds.shape[0] == 30
    # Non-steady-state 0-2; the outlier 15; nothing else (segments of at least 5 remain).
    assert kept.tolist() == [i for i in range(30) if i not in {0, 1, 2, 15}]


def test_load_confounds_refuses_a_run_scrubbed_away(tmp_path):
    # nilearn's v21 test file has high DVARS everywhere: every volume is an outlier.
    bold = _fmriprep_run(tmp_path, 'test-v21_desc-confounds_timeseries')
    with pytest.raises(InputDataError, match='only 0 of 30 volumes remain'):
        load_confounds(bold, 'scrubbing', 30, ())


def test_load_confounds_refuses_a_missing_column(tmp_path):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    path = tmp_path / f'{CONFOUNDS_NAME}.tsv'
    pd.read_csv(path, sep='\t').drop(columns=['csf']).to_csv(path, sep='\t', index=False)
    with pytest.raises(InputDataError, match=rf'{CONFOUNDS_NAME}\.tsv: .*csf') as info:
        load_confounds(bold, 'simple', 30, ())
    assert '\n' not in str(info.value)
    assert info.value.exit_code == 65


def test_load_confounds_refuses_scrubbing_without_framewise_displacement(tmp_path):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    path = tmp_path / f'{CONFOUNDS_NAME}.tsv'
    table = pd.read_csv(path, sep='\t').drop(columns=['framewise_displacement'])
    table.to_csv(path, sep='\t', index=False)
    with pytest.raises(InputDataError, match='framewise_displacement'):
        load_confounds(bold, 'scrubbing', 30, ())


def test_load_confounds_refuses_compcor_without_its_json(tmp_path):
    bold = _fmriprep_run(tmp_path, 'no_nonsteady_desc-confounds_regressors')
    with pytest.raises(InputDataError, match='json'):
        load_confounds(bold, 'compcor', 30, ())


@pytest.mark.parametrize('content', [b'', b'\x00\xff\xfe binary \x00', None])
def test_load_confounds_refuses_unreadable_or_missing_files(tmp_path, content):
    bold = _write(tmp_path / BOLD_NAME, np.zeros((2, 2, 2, 30), dtype=np.float32))
    if content is not None:
        (tmp_path / f'{CONFOUNDS_NAME}.tsv').write_bytes(content)
    with pytest.raises(InputDataError, match='cannot load') as info:
        load_confounds(bold, 'simple', 30, ())
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('n_vols', [20, 40])
def test_load_confounds_refuses_a_wrong_row_count(tmp_path, n_vols):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    with pytest.raises(InputDataError, match=f'has 30 rows for {n_vols} volumes'):
        load_confounds(bold, 'scrubbing', n_vols, ())


def test_load_confounds_refuses_missing_values(tmp_path):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    path = tmp_path / f'{CONFOUNDS_NAME}.tsv'
    table = pd.read_csv(path, sep='\t')
    table.loc[10, 'csf'] = np.nan  # nilearn only fills the first row (derivatives)
    table.to_csv(path, sep='\t', index=False, na_rep='n/a')
    with pytest.raises(InputDataError, match='missing values in csf'):
        load_confounds(bold, 'simple', 30, ())


def test_compcor_on_a_30_volume_run_is_refused_for_degrees_of_freedom(tmp_path):
    bold = _fmriprep_run(tmp_path, 'test_desc-confounds_regressors')
    with pytest.raises(InputDataError, match='degrees of freedom'):
        clean_spec_for_run(bold, strategy='compcor', t_r=2.0, n_vols=30, drop_volumes=(),
                           high_pass=None)  # fmt: skip
    spec = clean_spec_for_run(bold, strategy='none', t_r=2.0, n_vols=30, drop_volumes=(),
                              high_pass=0.008)  # fmt: skip
    assert spec.confounds is None
    assert spec.sample_mask.tolist() == list(range(30))  # none reads no file


# --- bids/bold.py: masks and memmaps ----------------------------------------------------------


def test_intersect_run_masks(tmp_path):
    first, second = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    first[1:5, 1:5, 1:5], second[3:7, 3:7, 3:7] = 1, 1
    # An island in one mask only: a plain intersection, not nilearn's largest component.
    first[0, 0, 0] = second[0, 0, 0] = 1
    paths = [_write(tmp_path / f'run{i}_mask.nii.gz', m) for i, m in enumerate((first, second))]
    out = intersect_run_masks(paths)
    np.testing.assert_array_equal(np.asarray(out.dataobj), first & second)
    np.testing.assert_array_equal(out.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(intersect_run_masks(paths[:1]).dataobj), first)


def test_intersect_run_masks_refuses_different_grids_and_empty_overlap(tmp_path):
    mask = np.ones(SHAPE, np.uint8)
    base = _write(tmp_path / 'a_mask.nii.gz', mask)
    shifted = _write(tmp_path / 'b_mask.nii.gz', mask, AFFINE + np.diag([0, 0, 0.5, 0]))
    resized = _write(tmp_path / 'c_mask.nii.gz', np.ones((7, 8, 10), np.uint8))
    for other in (shifted, resized):
        with pytest.raises(InputDataError, match='not on the grid'):
            intersect_run_masks([base, other])
    empty = _write(tmp_path / 'd_mask.nii.gz', np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputDataError, match='share no voxel'):
        intersect_run_masks([base, empty])


def test_bold_to_memmap_round_trip_and_smoothing(rng, tmp_path):
    data = (rng.standard_normal((*SHAPE, 12)) * 10 + 500).astype(np.float32)
    mask = (rng.random(SHAPE) > 0.4).astype(np.uint8)
    bold = _write(tmp_path / BOLD_NAME, data)
    mask_img = nib.Nifti1Image(mask, AFFINE)
    out = tmp_path / 'work' / 'bold.npy'
    voxels = bold_to_memmap(bold, mask_img, out, None)
    assert isinstance(voxels, np.memmap)
    assert voxels.dtype == np.float32
    assert voxels.shape == (12, int(mask.sum()))
    np.testing.assert_array_equal(voxels, data[mask > 0].T)
    assert not voxels.flags.writeable
    assert sorted(p.name for p in out.parent.iterdir()) == ['bold.npy']  # no temp file left
    np.testing.assert_array_equal(np.load(out, mmap_mode='r'), voxels)

    smoothed = bold_to_memmap(bold, mask_img, tmp_path / 'work' / 'smooth.npy', 6.0)
    assert smoothed.shape == voxels.shape
    assert not np.allclose(smoothed, voxels)
    assert smoothed.std(axis=1).mean() < voxels.std(axis=1).mean()  # smoother in space
    assert sorted(p.name for p in out.parent.iterdir()) == ['bold.npy', 'smooth.npy']


def test_bold_to_memmap_reads_scaled_integers(tmp_path):
    data = np.arange(np.prod(SHAPE) * 3, dtype=np.int16).reshape((*SHAPE, 3))
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, tmp_path / BOLD_NAME)
    mask = nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE)
    voxels = bold_to_memmap(tmp_path / BOLD_NAME, mask, tmp_path / 'bold.npy', None)
    np.testing.assert_allclose(voxels, data.reshape(-1, 3).T * 0.5 + 10.0)


def test_bold_to_memmap_leaves_nothing_after_a_crash(rng, tmp_path, monkeypatch):
    bold = _write(tmp_path / 'in' / BOLD_NAME, rng.standard_normal((*SHAPE, 5)).astype('f4'))
    calls = []

    def failing_smooth(img, fwhm):
        calls.append(fwhm)
        if len(calls) == 3:
            raise RuntimeError('killed')
        return img

    monkeypatch.setattr(bold_module, 'smooth_img', failing_smooth)
    mask = nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE)
    with pytest.raises(RuntimeError, match='killed'):
        bold_to_memmap(bold, mask, tmp_path / 'work' / 'bold.npy', 4.0)
    assert list((tmp_path / 'work').iterdir()) == []


def test_bold_to_memmap_refuses_a_mask_on_another_grid(rng, tmp_path):
    bold = _write(tmp_path / BOLD_NAME, rng.standard_normal((*SHAPE, 4)).astype('f4'))
    for mask in (nib.Nifti1Image(np.ones((7, 8, 10), np.uint8), AFFINE),
                 nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.diag([2.0, 2, 2, 1]))):  # fmt: skip
        with pytest.raises(InputDataError, match='not on the grid'):
            bold_to_memmap(bold, mask, tmp_path / 'bold.npy', None)
    empty = nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE)
    with pytest.raises(InputDataError, match='holds no voxel'):
        bold_to_memmap(bold, empty, tmp_path / 'bold.npy', None)
    assert not (tmp_path / 'bold.npy').exists()


def test_iter_voxel_chunks_covers_every_voxel_once():
    chunks = list(iter_voxel_chunks(10, 3))
    assert [c.stop - c.start for c in chunks] == [3, 3, 3, 1]
    assert np.concatenate([np.arange(10)[c] for c in chunks]).tolist() == list(range(10))
    assert list(iter_voxel_chunks(0, 3)) == []
    with pytest.raises(ValueError, match='at least 1'):
        list(iter_voxel_chunks(10, 0))
