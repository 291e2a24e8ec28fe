"""The demo dataset: its planted truth is what it says, built independently of core/."""

from __future__ import annotations

import hashlib
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_syncact._demo import truth as demo_truth
from bids_syncact.demo import DemoSpec, make_dataset

SMALL = DemoSpec(subjects=('01',), runs=(1,), n_vols=120)


def test_hrf_is_normalised_and_peaks_near_5_s():
    hrf = demo_truth.spm_hrf(0.05)
    assert hrf.sum() == pytest.approx(1.0)
    assert 4.5 <= np.argmax(hrf) * 0.05 <= 5.5
    assert hrf[int(16 / 0.05)] < 0  # the undershoot


def test_a_flash_peaks_about_5_s_after_it_is_shown():
    acts = np.zeros((240, 2))  # 60 s of ticks at 4 Hz
    acts[40] = 1.0  # shown at 10 s into the movie
    regs = demo_truth.regressors(acts, np.zeros(2), tick_hz=4.0, onset_s=2.0,
                                 acq_times=np.arange(60) + 0.5, dt=0.05)  # fmt: skip
    assert regs.shape == (60, 2)
    assert 16.0 <= 0.5 + np.argmax(regs[:, 0]) <= 18.0  # onset 2 + flash 10 + HRF peak ~5


def test_blank_screen_before_and_after_the_movie():
    acts = np.ones((40, 1))  # 10 s of movie at 4 Hz
    regs = demo_truth.regressors(acts, np.array([0.25]), tick_hz=4.0, onset_s=-5.0,
                                 acq_times=np.arange(60) + 0.5, dt=0.05)  # fmt: skip
    assert regs[-1, 0] == pytest.approx(0.25, abs=1e-6)  # long after the end: the blank
    assert regs[4, 0] > 0.8  # 4.5 s: the movie (-5 to 5 s) drives it, not the blank


def test_units_are_distinct_and_include_a_correlated_pair(rng):
    base = rng.standard_normal((200, 1))
    acts = np.column_stack([base * 3, base * 2 + 0.8 * rng.standard_normal((200, 1)),
                            base * 3.0001, rng.standard_normal((200, 5)) * 1.5])  # fmt: skip
    units = demo_truth.choose_units(acts, 4, 8)
    assert len(set(units)) == 4
    assert units[0] in (0, 2)
    assert {0, 2} - set(units)  # a near-copy (|r| > 0.95) is never planted twice
    assert abs(np.corrcoef(acts[:, units[0]], acts[:, units[1]])[0, 1]) > 0.5


@pytest.fixture(scope='module')
def small_demo(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('demo') / 'bids', SMALL)


@pytest.mark.slow
def test_truth_files_and_checksums(small_demo):
    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    truth = json.loads((truth_dir / 'truth.json').read_text())
    assert truth['Layer'] == 'features.7'
    assert len(truth['Units']) == 6 == len(set(truth['Units']))
    assert sorted(truth['Networks'].values()) == sorted(SMALL.truth.networks)
    assert truth['MaxAbsCorrelation'] >= 0.5
    for name, digest in truth['Sha256'].items():
        path = small_demo / name if '/' in name else truth_dir / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
    import torch

    state = torch.load(truth_dir / truth['Weights'], weights_only=True)
    assert state['features.6.weight'].shape == (384, 192, 3, 3)
    maps = nb.load(truth_dir / 'space-MNI152NLin2009cAsym_desc-planted_maps.nii.gz')
    assert maps.shape[3] == 6
    assert np.allclose(maps.get_fdata().max(axis=(0, 1, 2)), 1.0)


@pytest.mark.slow
def test_regressors_are_sampled_at_the_true_acquisition_times(small_demo):
    regs = pd.read_csv(small_demo / 'sourcedata/groundtruth/desc-planted_regressors.tsv', sep='\t')
    sidecar = json.loads(next(small_demo.rglob('*_desc-preproc_bold.json')).read_text())
    np.testing.assert_allclose(regs['acquisition_time'],
                               np.arange(SMALL.n_vols) * SMALL.t_r + sidecar['StartTime'])  # fmt: skip
    units = regs.drop(columns='acquisition_time').to_numpy()
    # Before the movie starts (onset 2 s) plus the HRF's latency, only the blank screen drives it.
    assert np.ptp(units[:2], axis=0) == pytest.approx(np.zeros(6), abs=1e-9)
    assert np.abs(units).max(axis=0) == pytest.approx(np.ones(6))


@pytest.mark.slow
def test_the_planted_signal_is_in_the_bold_where_the_maps_say(small_demo):
    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    regs = pd.read_csv(truth_dir / 'desc-planted_regressors.tsv', sep='\t').iloc[:, 1:].to_numpy()
    maps = nb.load(truth_dir / 'space-MNI152NLin2009cAsym_desc-planted_maps.nii.gz').get_fdata()
    func = small_demo / 'derivatives' / 'fmriprep' / 'sub-01' / 'func'
    bold = nb.load(next(func.glob('*desc-preproc_bold.nii.gz'))).get_fdata()
    conf = pd.read_csv(next(func.glob('*desc-confounds_timeseries.tsv')), sep='\t')
    keep = conf.filter(like='non_steady_state').sum(axis=1).to_numpy() == 0
    assert (~keep).sum() == SMALL.n_dummies
    assert bold[..., ~keep].mean() > bold[..., keep].mean()  # dummies are brighter
    nuisance = conf.filter(regex=r'^(trans|rot)_[xyz]$|^white_matter$|^csf$|^cosine').to_numpy()
    nuisance = np.column_stack([nuisance[keep], np.ones(keep.sum())])
    mask = nb.load(next(func.glob('*desc-brain_mask.nii.gz'))).get_fdata() > 0
    y = bold[mask][:, keep].T
    x = regs[keep]

    def residual(a):
        return a - nuisance @ np.linalg.lstsq(nuisance, a, rcond=None)[0]

    y, x = residual(y), residual(x)
    y /= np.linalg.norm(y, axis=0)
    x /= np.linalg.norm(x, axis=0)
    corr = x.T @ y  # (6, n_voxels)
    weights = maps[mask]
    background = weights.max(axis=1) < 0.01
    assert background.sum() > 50
    for k in range(6):
        assert corr[k, weights[:, k] > 0.8].mean() > 0.3, k
        assert abs(corr[k, background].mean()) < 0.1, k


@pytest.mark.slow
def test_the_app_plans_the_demo_right(small_demo, cli, tmp_path, plan_of):
    result = cli(small_demo, tmp_path / 'out', 'participant', validate=True)
    assert result.code == 0, result.err
    (run,) = plan_of()['Runs']
    sidecar = json.loads(next(small_demo.rglob('*_desc-preproc_bold.json')).read_text())
    assert run['TimingSource'] == 'StartTime'
    assert run['acq_offset_s'] == sidecar['StartTime']
    assert run['drop_volumes'] == [0, 1, 2, 3]
    assert run['stimulus']['onset_s'] == SMALL.onset_s
    assert run['stimulus']['duration_s'] == pytest.approx(SMALL.movie_length_s, abs=0.2)
