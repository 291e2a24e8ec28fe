"""The demo dataset: its planted truth is what it says, built independently of core/."""

from __future__ import annotations

import hashlib
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_syncact._demo import truth as demo_truth
from bids_syncact.demo import METHODS, DemoSpec, make_dataset, recovery_table

SMALL = DemoSpec(subjects=('01',), runs=(1,))  # the demo's clock and movie, one run


def test_hrf_is_normalised_and_peaks_near_5_s():
    hrf = demo_truth.spm_hrf(0.05)
    assert hrf.sum() == pytest.approx(1.0)
    assert 4.5 <= np.argmax(hrf) * 0.05 <= 5.5
    assert hrf[int(16 / 0.05)] < 0  # the undershoot


def test_a_flash_peaks_5_s_after_it_is_shown():
    acts = np.zeros((240, 2))  # 60 s of ticks at 4 Hz
    acts[40] = 1.0  # on screen from 10.00 to 10.25 s into the movie
    times = np.arange(0, 40, 0.01)
    regs = demo_truth.regressors(acts, np.zeros(2), tick_hz=4.0, onset_s=2.0, acq_times=times,
                                 dt=0.01)  # fmt: skip
    # onset 2 s + flash 10.125 s + the SPM HRF's peak (about 5 s after its start)
    assert times[np.argmax(regs[:, 0])] == pytest.approx(2.0 + 10.125 + 4.95, abs=0.15)


def test_blank_screen_before_and_after_the_movie():
    acts = np.ones((40, 1))  # 10 s of movie at 4 Hz
    regs = demo_truth.regressors(acts, np.array([0.25]), tick_hz=4.0, onset_s=-5.0,
                                 acq_times=np.arange(60) + 0.5, dt=0.05)  # fmt: skip
    assert regs[-1, 0] == pytest.approx(0.25, abs=1e-6)  # long after the end: the blank
    assert regs[4, 0] > 0.8  # 4.5 s: the movie (-5 to 5 s) drives it, not the blank


def test_units_include_one_collinear_pair_and_stay_identifiable(rng):
    base = rng.standard_normal(300)
    regs = np.column_stack([
        base,
        0.9 * base + 0.6 * rng.standard_normal(300),  # |r| ~ 0.83: outside the pair's range
        0.65 * base + 0.75 * rng.standard_normal(300),  # |r| ~ 0.65: the pair
        base + 0.01 * rng.standard_normal(300),  # a near-copy of the first
        rng.standard_normal((300, 6)),
    ])  # fmt: skip
    units = demo_truth.choose_units(regs, 5, (0.5, 0.8))
    assert units[:2] == [0, 2]
    assert 3 not in units
    corr = np.corrcoef(regs[:, units].T)
    assert demo_truth.variance_inflation(corr).max() < 3


@pytest.fixture(scope='module')
def small_demo(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('demo') / 'bids', SMALL)


@pytest.mark.slow
def test_truth_files_and_checksums(small_demo):
    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    truth = json.loads((truth_dir / 'truth.json').read_text())
    assert truth['Layer'] == SMALL.truth.layer
    assert len(truth['Units']) == 6 == len(set(truth['Units']))
    assert sorted(truth['Networks'].values()) == sorted(SMALL.truth.networks)
    assert truth['MaxAbsCorrelation'] >= 0.5
    corr = np.asarray(truth['RegressorCorrelation'])
    np.testing.assert_allclose(truth['VarianceInflation'],
                               demo_truth.variance_inflation(corr), rtol=1e-2)  # fmt: skip
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
def test_regressors_rebuilt_with_nilearn_from_the_files(small_demo):
    """Hold, convolve (nilearn's SPM HRF) and sample at i*TR + StartTime, from the files alone."""
    from nilearn.glm.first_level import spm_hrf

    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    regs = pd.read_csv(truth_dir / 'desc-planted_regressors.tsv', sep='\t')
    acts = pd.read_csv(truth_dir / 'desc-activations_timeseries.tsv', sep='\t')
    blank, ticks = acts.iloc[0, 1:].astype(float).to_numpy(), acts.iloc[1:]
    sidecar = json.loads(next(small_demo.rglob('*_desc-preproc_bold.json')).read_text())
    events = pd.read_csv(next(small_demo.rglob('*_events.tsv')), sep='\t')
    onset, t_r = float(events['onset'][0]), sidecar['RepetitionTime']
    acq = np.arange(SMALL.n_vols) * t_r + sidecar['StartTime']
    dt = 0.01
    grid = np.arange(-40, acq[-1] + dt, dt)
    movie_time = ticks['movie_time'].astype(float).to_numpy()
    index = np.searchsorted(movie_time, grid - onset, side='right') - 1
    on_screen = (index >= 0) & (grid - onset < movie_time[-1] + 0.25)
    values = ticks.iloc[:, 1:].astype(float).to_numpy()
    neural = np.where(on_screen[:, None], values[np.clip(index, 0, None)], blank)
    hrf = spm_hrf(dt, oversampling=1)
    rebuilt = np.column_stack([np.interp(acq, grid, np.convolve(col, hrf)[: len(grid)])
                               for col in neural.T])  # fmt: skip
    planted = regs.drop(columns='acquisition_time').to_numpy()
    for k in range(6):
        assert np.corrcoef(rebuilt[:, k], planted[:, k])[0, 1] > 0.999, k
    np.testing.assert_allclose(regs['acquisition_time'], acq, atol=1e-6)
    # A quarter-second shift of the clock is visible: the check has teeth.
    shifted = np.column_stack([np.interp(acq + 0.5, grid, np.convolve(col, hrf)[: len(grid)])
                               for col in neural.T])  # fmt: skip
    assert min(np.corrcoef(shifted[:, k], planted[:, k])[0, 1] for k in range(6)) < 0.999


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

    baseline = y.mean(axis=0)
    design = np.column_stack([x, nuisance])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    psc = beta[:6] / baseline * 100  # % signal change per unit of regressor (peak 1)
    residual_psc = (y - design @ beta).std(axis=0) / baseline * 100
    weights = maps[mask]
    for k in range(6):
        centre = weights[:, k] > 0.9
        assert centre.sum() >= 1, k
        assert psc[k, centre].mean() == pytest.approx(SMALL.truth.peak_psc, abs=0.5), k
        elsewhere = weights[:, k] < 0.01
        assert abs(psc[k, elsewhere].mean()) < 0.1, k  # no unit's effect where it was not put
    assert np.median(residual_psc) == pytest.approx(SMALL.truth.noise_psc, abs=0.15)


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


def test_demo_never_deletes_a_folder_that_is_not_its_own(tmp_path, capsys):
    from bids_syncact.demo import main as demo_main

    folder = tmp_path / 'thesis'
    folder.mkdir()
    (folder / 'chapter1.tex').write_text('precious')
    assert demo_main([str(folder)]) == 64
    assert 'is not a demo dataset' in capsys.readouterr().err
    assert (folder / 'chapter1.tex').read_text() == 'precious'


@pytest.mark.slow
def test_the_app_s_synchronization_matches_the_planted_regressors(small_demo):
    """core.sync on the demo's saved activations reproduces its independent regressors."""
    from bids_syncact.core.sync import synchronize
    from bids_syncact.core.timing import acquisition_offset, acquisition_times

    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    acts = pd.read_csv(truth_dir / 'desc-activations_timeseries.tsv', sep='\t')
    planted = pd.read_csv(truth_dir / 'desc-planted_regressors.tsv', sep='\t')
    sidecar = json.loads(next(small_demo.rglob('*_desc-preproc_bold.json')).read_text())
    offset, source = acquisition_offset(sidecar, sidecar['RepetitionTime'])
    assert source == 'StartTime'
    ticks = acts.iloc[1:]
    out = synchronize(
        ticks.iloc[:, 1:].astype(float).to_numpy(), ticks['movie_time'].astype(float).to_numpy(),
        acts.iloc[0, 1:].astype(float).to_numpy(), onset=SMALL.onset_s,
        acq_times=acquisition_times(SMALL.n_vols, sidecar['RepetitionTime'], offset),
        duration_s=SMALL.movie_length_s,
    )  # fmt: skip
    for k in range(6):
        r = np.corrcoef(out[:, k], planted.iloc[:, k + 1])[0, 1]
        assert r > 0.9999, (k, r)


@pytest.mark.slow
def test_the_app_synchronizes_the_demo_like_its_independent_truth(small_demo, cli, tmp_path):
    """The app's features and sync (own decoder, fit, hooks, HRF grid) against the demo's own."""
    truth_dir = small_demo / 'sourcedata' / 'groundtruth'
    truth = json.loads((truth_dir / 'truth.json').read_text())
    out = tmp_path / 'out'
    result = cli(small_demo, out, 'participant', '--weights', f'alexnet={truth_dir / truth["Weights"]}',
                 '--layers', truth['Layer'], '--max-units', 'all', '--n-nulls', '0',
                 process=True)  # fmt: skip
    assert result.code == 0, result.err
    (path,) = out.glob('sub-*/func/*_desc-sync_timeseries.tsv')
    synced = pd.read_csv(path, sep='\t')
    planted = pd.read_csv(truth_dir / 'desc-planted_regressors.tsv', sep='\t')
    kept = slice(SMALL.n_dummies, None)
    for unit in truth['Units']:
        r = np.corrcoef(synced[f'unit{unit:04d}'][kept], planted[f'unit{unit:03d}'][kept])[0, 1]
        assert r > 0.995, (unit, r)
        shifted = np.corrcoef(
            synced[f'unit{unit:04d}'][kept][1:], planted[f'unit{unit:03d}'][kept][:-1]
        )[0, 1]
        assert shifted < r - 0.01  # one TR off is clearly worse: the clock is right
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['Weights']['Sha256'] == truth['WeightsSha256']

    # The FBNs (alpha auto) against the reference and baselines on the same cleaned data.
    table, clusters = recovery_table(out, small_demo, truth, SMALL.subjects, SMALL.task)
    assert len(clusters) == len(truth['Units'])
    fbn, reference, univariate, ols = (table[name].mean(axis=0) for name in METHODS)
    assert fbn[2] <= 0.05  # r, AUC, leakage
    assert reference[0] > 0.7  # the oracle dictionary recovers the planted maps
    assert fbn[0] >= 0.85 * reference[0]  # the clusters come close to it (0.92 x when made)
    assert fbn[2] < univariate[2] / 10
    assert fbn[2] < ols[2] / 10
    assert fbn[0] > univariate[0]
    assert fbn[0] > ols[0] + 0.3


@pytest.mark.slow  # the whole demo, both levels (about 3 minutes): make test-integration
def test_make_demo_labels_the_visual_unit_visual_at_group_level(tmp_path, capsys):
    from bids_syncact.demo import DemoSpec, group_labels, label_counts, main

    root = tmp_path / 'demo'
    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert 'Group-level labels of the planted units' in printed
    truth = json.loads((root / 'sourcedata' / 'groundtruth' / 'truth.json').read_text())
    labels = group_labels(root / 'derivatives' / 'syncact', truth)
    visual = [unit for unit, (planted, _, _) in labels.items() if planted == 'Visual']
    assert len(visual) == 1
    assert labels[visual[0]][2] == 'Visual'
    # and the others: the demo plants one unit per network, each labelled against the nulls
    assert all(planted == label for planted, _, label in labels.values()), labels
    assert 'Group-level labels, all layers:' in printed
    assert 'Recovery of the planted units' in printed
    assert 'reference' in printed
    counts = label_counts(root / 'derivatives' / 'syncact', truth, DemoSpec().subjects[0])
    assert sum(c[1] for c in counts.values()) >= 6  # at least the planted units
    assert (root / 'derivatives' / 'syncact' / 'group.html').is_file()
    assert (root / 'derivatives' / 'syncact' / 'sub-01.html').is_file()
