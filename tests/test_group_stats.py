"""Group statistics on synthetic maps with known answers (core/group.py)."""

from __future__ import annotations

import itertools
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.second_level import non_parametric_inference
from scipy.stats import ttest_1samp

from bids_syncact.core.group import (
    MIN_SUBJECTS,
    consistency,
    leave_one_out_consistency,
    sign_flip_group_map,
)

N_VOXELS = 300
BLOB = slice(0, 30)
FWE_05 = -np.log10(0.05)


def _maps(rng, n_subjects: int, n_with_effect: int, effect: float = 2.5) -> np.ndarray:
    maps = rng.standard_normal((n_subjects, N_VOXELS))
    maps[:n_with_effect, BLOB] += effect
    return maps


def test_an_effect_in_every_subject_is_found_family_wise(rng):
    group = sign_flip_group_map(_maps(rng, 10, 10), n_permutations=2000, seed=1)
    assert np.all(group.t[BLOB] > 0)
    assert np.mean(group.logp_fwe[BLOB] > FWE_05) > 0.8
    assert np.mean(group.logp_fwe[BLOB.stop :] > FWE_05) <= 0.02
    # 2 ** 9 distinct flips (f and -f give the same |t|) fit in 2000: enumerated, exact
    assert group.exact
    assert group.h0_max_t.shape == (512,)
    assert group.smallest_p == 1 / 512
    assert group.logp_fwe.max() <= np.log10(512) + 1e-6


def test_an_effect_in_few_subjects_is_weaker_than_in_all(rng):
    few = sign_flip_group_map(_maps(rng, 10, 2), n_permutations=1000, seed=1)
    rng2 = np.random.default_rng(7)
    all_ = sign_flip_group_map(_maps(rng2, 10, 10), n_permutations=1000, seed=1)
    assert np.mean(few.logp_fwe[BLOB] > FWE_05) < 0.2
    assert np.median(few.t[BLOB]) < np.median(all_.t[BLOB]) / 2


def test_the_group_map_agrees_with_nilearn_s_non_parametric_inference(rng):
    maps = _maps(rng, 7, 7, effect=0.8).astype(np.float32)
    maps[:, 40:45] = 0.0  # zero in every subject, as sparse maps are
    shape = (5, 6, 10)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    images = [nib.Nifti1Image(m.reshape(shape), affine) for m in maps]
    mask = nib.Nifti1Image(np.ones(shape, dtype=np.uint8), affine)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected = non_parametric_inference(
            images, design_matrix=pd.DataFrame({'intercept': np.ones(7)}), mask=mask,
            n_perm=4000, two_sided_test=True, random_state=3, n_jobs=1, threshold=0.001,
        )  # fmt: skip
    group = sign_flip_group_map(maps, n_permutations=4000, seed=3)
    assert group.exact  # 64 distinct flips
    np.testing.assert_allclose(
        group.t, expected['t'].get_fdata().ravel(), rtol=1e-4, equal_nan=True
    )
    # nilearn draws 4000 random flips: its p estimates the exact one within Monte Carlo error
    p_nilearn = 10.0 ** -expected['logp_max_t'].get_fdata().ravel()
    np.testing.assert_allclose(10.0**-group.logp_fwe, p_nilearn, atol=0.03)
    assert np.all(np.isnan(group.t[40:45]))  # no t where every subject is zero
    assert np.all(group.logp_fwe[40:45] == 0)


@pytest.mark.parametrize('n_subjects', [3, 5, 8])
def test_exact_p_values_equal_a_brute_force_enumeration(rng, n_subjects):
    maps = rng.standard_normal((n_subjects, 25)) + 0.5
    group = sign_flip_group_map(maps)
    observed = np.abs(ttest_1samp(maps, 0.0).statistic)
    maxima = [
        np.abs(ttest_1samp(maps * np.array(signs)[:, None], 0.0).statistic).max()
        for signs in itertools.product([-1.0, 1.0], repeat=n_subjects)
    ]  # every flip, f and -f both
    expected = [np.mean(np.array(maxima) >= t - 1e-9) for t in observed]
    np.testing.assert_allclose(group.t, ttest_1samp(maps, 0.0).statistic, rtol=1e-5)
    np.testing.assert_allclose(10.0**-group.logp_fwe, expected, rtol=1e-5)
    assert group.smallest_p == 2.0 / 2**n_subjects


@pytest.mark.parametrize('n_subjects', [1, 2])
def test_fewer_than_three_subjects_are_refused(rng, n_subjects):
    assert MIN_SUBJECTS == 3
    with pytest.raises(ValueError, match='at least 3 subjects'):
        sign_flip_group_map(rng.standard_normal((n_subjects, 10)))


def test_non_finite_maps_are_refused(rng):
    maps = rng.standard_normal((4, 10))
    maps[1, 3] = np.nan
    with pytest.raises(ValueError, match='finite'):
        sign_flip_group_map(maps)


def test_an_empty_map_is_all_zero_t_nan_and_no_consistency():
    maps = np.zeros((4, 50))
    group = sign_flip_group_map(maps, n_permutations=100)
    assert np.all(np.isnan(group.t))
    assert np.all(group.logp_fwe == 0)
    per_subject = leave_one_out_consistency(maps)
    assert np.all(np.isnan(per_subject))
    value, n_used = consistency(per_subject)
    assert np.isnan(value)
    assert n_used == 0


def test_consistency_is_high_for_a_shared_map_and_low_for_noise(rng):
    shared = rng.standard_normal(N_VOXELS)
    same = shared + 0.3 * rng.standard_normal((6, N_VOXELS))
    noise = rng.standard_normal((6, N_VOXELS))
    assert consistency(leave_one_out_consistency(same))[0] > 0.9
    assert abs(consistency(leave_one_out_consistency(noise))[0]) < 0.15


def test_leave_one_out_leaves_the_subject_out(rng):
    maps = rng.standard_normal((5, 40))
    per_subject = leave_one_out_consistency(maps)
    for i in range(5):
        others = np.delete(maps, i, axis=0).mean(axis=0)
        assert per_subject[i] == pytest.approx(np.corrcoef(maps[i], others)[0, 1], abs=1e-12)


def test_an_empty_subject_is_left_out_of_the_consistency_and_counted(rng):
    shared = rng.standard_normal(N_VOXELS)
    maps = shared + 0.2 * rng.standard_normal((5, N_VOXELS))
    maps[2] = 0.0
    per_subject = leave_one_out_consistency(maps)
    assert np.isnan(per_subject[2])
    value, n_used = consistency(per_subject)
    assert n_used == 4
    assert value == pytest.approx(np.mean(np.delete(per_subject, 2)))
