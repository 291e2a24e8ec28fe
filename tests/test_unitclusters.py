"""Unit clusters in the pipeline (issue 19): from the feature cache to the cluster regressors."""

from __future__ import annotations

import numpy as np
import pytest

from bids_syncact.bids.cache import Features
from bids_syncact.bids.unitclusters import layer_clusters, stimulus_set_series
from bids_syncact.core.activations import select_units
from bids_syncact.core.coupling import sparse_code
from bids_syncact.core.sync import Segment, synchronize_segments
from bids_syncact.core.timing import acquisition_times

FRAME_RATE = 4.0


def _movie(rng, n_frames=2400, twin_r=0.98):
    """A 10-min movie's features: channel 1 a near-twin of 0 (|r| ~ ``twin_r`` after the HRF),
    channel 2 its mirror, channels 3-7 independent slow signals."""
    slow = rng.standard_normal((n_frames, 6))
    kernel = np.hanning(41)
    slow = np.stack([np.convolve(c, kernel, mode='same') for c in slow.T], axis=1)
    slow /= slow.std(axis=0)
    twin = twin_r * slow[:, 0] + np.sqrt(1 - twin_r**2) * slow[:, 1]
    acts = np.column_stack([slow[:, 0] + 5, 0.5 * twin + 3, -2 * slow[:, 0] + 1, slow[:, 2:] + 2,
                            3 * slow[:, 1]])  # fmt: skip
    times = np.arange(n_frames) / FRAME_RATE
    return Features(times, acts, acts.mean(axis=0), tuple(range(acts.shape[1])))


def _regressors(features: Features, columns: np.ndarray, onset_s: float, n_vols: int, t_r=1.0):
    acq = acquisition_times(n_vols, t_r, 0.0)
    segment = Segment(features.acts[:, columns], features.frame_times, onset=onset_s)
    return synchronize_segments([segment], features.blank[columns], acq_times=acq)


def test_r_one_is_select_units_with_identity_weights(rng):
    movie = _movie(rng)
    got = layer_clusters({'a' * 64: movie}, min_correlation=1.0, max_units=5, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    np.testing.assert_array_equal(got.columns, select_units([movie.acts], 5))
    np.testing.assert_array_equal(got.weights, np.eye(5))
    assert got.to_sidecar()['UnitClusters'] == [[int(i)] for i in got.columns]
    # even single units say how close their nearest other kept unit is
    assert max(got.clusters.max_cross_correlation) > 0.9


def test_twins_and_mirror_form_one_signed_cluster_named_by_variance(rng):
    movie = _movie(rng)
    got = layer_clusters({'a' * 64: movie}, min_correlation=0.9, max_units=None, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    sidecar = got.to_sidecar()
    assert [2, 0, 1] in sidecar['UnitClusters']  # channel 2 varies most (SD 2)
    k = sidecar['UnitClusters'].index([2, 0, 1])
    assert sidecar['UnitClusterSigns'][k] == [1, -1, -1]
    assert sidecar['UnitIndices'][k] == 2
    assert 0.9 <= sidecar['UnitClusterMinCorrelation'][k] < 0.999
    assert sidecar['UnitClusterMaxCrossCorrelation'][k] < 0.9
    assert len(sidecar['UnitClusters']) == 6  # {2,0,1} and 3..7 alone
    np.testing.assert_array_equal(got.columns, np.arange(8))


def test_max_units_keeps_the_clusters_whose_named_members_vary_most(rng):
    movie = _movie(rng)
    got = layer_clusters({'a' * 64: movie}, min_correlation=0.9, max_units=2, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    # named members' SDs: 2 (cluster of 0-2), 3 (channel 7), 1 for the others
    assert got.to_sidecar()['UnitClusters'] == [[2, 0, 1], [7]]
    np.testing.assert_array_equal(got.columns, [0, 1, 2, 7])
    assert got.weights.shape == (4, 2)


def test_clusters_depend_on_the_stimuli_only_not_on_their_order(rng):
    movie, other = _movie(rng), _movie(np.random.default_rng(5))
    one = layer_clusters({'a' * 64: movie, 'b' * 64: other}, min_correlation=0.9,
                         max_units=None, hrf='spm', high_pass_hz=0.01)  # fmt: skip
    two = layer_clusters({'b' * 64: other, 'a' * 64: movie}, min_correlation=0.9,
                         max_units=None, hrf='spm', high_pass_hz=0.01)  # fmt: skip
    assert one.to_sidecar() == two.to_sidecar()
    np.testing.assert_array_equal(one.weights, two.weights)


def test_still_images_cluster_over_the_image_set(rng):
    base = rng.standard_normal(30)
    images = {f'{i:064d}': Features(np.zeros(1), np.array([[base[i], base[i] * 2 + 0.01 * i,
                                                            rng.standard_normal()]]),
                                    np.zeros(3), (0, 1, 2))
              for i in range(30)}  # fmt: skip
    series = stimulus_set_series(images, hrf='spm', high_pass_hz=0.008)
    assert series.shape == (30, 3)
    got = layer_clusters(images, min_correlation=0.9, max_units=None, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    assert got.to_sidecar()['UnitClusters'] == [[1, 0], [2]]


def test_cluster_regressor_is_the_synchronized_representative(rng):
    """Synchronizing is linear: the members' columns times the weights equal the representative
    (the weighted activations) synchronized, whatever the onset."""
    movie = _movie(rng)
    got = layer_clusters({'a' * 64: movie}, min_correlation=0.9, max_units=None, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    for onset in (0.0, 7.3):
        members = _regressors(movie, got.columns, onset, 700)
        rep_acts = movie.acts[:, got.columns] @ got.weights
        rep = Features(movie.frame_times, rep_acts, movie.blank[got.columns] @ got.weights,
                       tuple(range(rep_acts.shape[1])))  # fmt: skip
        direct = _regressors(rep, np.arange(rep_acts.shape[1]), onset, 700)
        np.testing.assert_allclose(members @ got.weights, direct, rtol=1e-9, atol=1e-9)


def _map_r(D: np.ndarray, S: np.ndarray, row: int, truth: np.ndarray, alpha: float) -> float:
    D = D - D.mean(axis=0)
    D = (D / np.linalg.norm(D, axis=0)).astype(np.float32)
    codes = sparse_code(D, S.astype(np.float32), alpha)
    return float(np.corrcoef(codes[row], truth)[0, 1])


def test_a_planted_twin_is_recovered_by_its_cluster_where_single_units_split_it(rng):
    """One of two units at r 0.98 drives the BOLD: the single-unit Lasso hands each voxel to
    whichever twin its noise favours; the cluster's map recovers the planted map."""
    movie = _movie(rng)
    n_vols, n_voxels = 600, 400
    single = layer_clusters({'a' * 64: movie}, min_correlation=1.0, max_units=None, hrf='spm',
                            high_pass_hz=None)  # fmt: skip
    clustered = layer_clusters({'a' * 64: movie}, min_correlation=0.9, max_units=None,
                               hrf='spm', high_pass_hz=None)  # fmt: skip
    members = _regressors(movie, single.columns, 0.0, n_vols)
    x0 = members[:, 0] - members[:, 0].mean()
    assert abs(np.corrcoef(members[:, 0], members[:, 1])[0, 1]) > 0.97
    truth = np.clip(rng.standard_normal(n_voxels), 0, None)  # a sparse positive map
    # weak coupling (amplitude 0.2 of the noise's SD), as in most voxels of real data
    S = 0.2 * np.outer(x0 / x0.std(), truth) + rng.standard_normal((n_vols, n_voxels))
    S -= S.mean(axis=0)
    alpha = 0.05 * float(np.linalg.norm(S, axis=0).max())
    r_single = _map_r(members, S, 0, truth, alpha)
    r_twin = _map_r(members, S, 1, truth, alpha)
    sidecar = clustered.to_sidecar()
    k = sidecar['UnitClusters'].index([2, 0, 1])
    sign = sidecar['UnitClusterSigns'][k][1]  # unit 0's sign in a cluster named by its mirror
    r_cluster = sign * _map_r(members[:, clustered.columns] @ clustered.weights, S, k, truth,
                              alpha)  # fmt: skip
    assert r_twin > 0.3  # the twin took part of the planted FBN
    assert r_single < 0.9
    assert r_cluster > 0.93
    assert r_cluster > r_single + 0.05


@pytest.mark.parametrize('R', [0.5, 1.01, 0.3])
def test_unit_correlation_outside_its_range_is_refused(cli, dataset, tmp_path, R):
    result = cli(dataset, tmp_path / 'out', 'participant', '--unit-correlation', str(R))
    assert result.code == 64
    assert 'must be in (0.5, 1]' in result.err


def test_r_one_regressors_are_the_sync_columns_bit_for_bit(rng, tmp_path):
    """At R = 1 the coupling reads exactly the columns it read before clusters existed, so the
    maps are today's; at R < 1 each regressor is its members' columns times the weights."""
    import json

    import pandas as pd

    from bids_syncact.bids.derivatives import sync_sidecar, unit_column, write_table
    from bids_syncact.bids.unitclusters import read_sync_tables

    movie = _movie(rng)
    plan = {'stimulus': {}, 'RepetitionTime': 1.0, 'TimingSource': 'StartTime',
            'acq_offset_s': 0.0, 'drop_volumes': []}  # fmt: skip
    for R in (1.0, 0.9):
        found = layer_clusters({'a' * 64: movie}, min_correlation=R, max_units=None, hrf='spm',
                               high_pass_hz=None)  # fmt: skip
        synced = _regressors(movie, found.columns, 0.0, 300)
        table = pd.DataFrame(synced, columns=[unit_column(int(c)) for c in found.columns])
        table.insert(0, 'acquisition_time', np.arange(300.0))
        path = tmp_path / f'sub-01_task-a_run-1_cnn-alexnet_layer-x_R{R}_desc-sync_timeseries.tsv'
        sidecar = sync_sidecar(plan, cnn='alexnet', layer='x', clusters=found, sources=[],
                               settings={})  # fmt: skip
        write_table(path, table, sidecar)
        assert json.loads(path.with_suffix('.json').read_text())['UnitColumns'] == \
            found.columns.tolist()  # fmt: skip
        tables, members, clusters, _ = read_sync_tables([path], ['sub-01_task-a_run-1'], 'x',
                                                        tmp_path)  # fmt: skip
        written = pd.read_csv(path, sep='\t').drop(columns='acquisition_time').to_numpy()
        np.testing.assert_array_equal(members[0], written)
        if R == 1.0:
            np.testing.assert_array_equal(tables[0], written)
        else:
            np.testing.assert_allclose(tables[0], written @ found.weights, rtol=1e-12)
            assert tables[0].shape[1] < written.shape[1]
        assert clusters['UnitClusters'] == found.to_sidecar()['UnitClusters']


def test_too_few_stimulus_samples_give_single_units_and_say_why(rng):
    images = {f'{i:064d}': Features(np.zeros(1), rng.standard_normal((1, 5)), np.zeros(5),
                                    tuple(range(5)))
              for i in range(3)}  # fmt: skip
    got = layer_clusters(images, min_correlation=0.9, max_units=None, hrf='spm',
                         high_pass_hz=None)  # fmt: skip
    assert got.to_sidecar()['UnitClusters'] == [[i] for i in range(5)]
    assert '3 samples' in got.to_sidecar()['UnitClusteringNote']
