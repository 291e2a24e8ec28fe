"""The participant level's stimulus side end to end on a tiny dataset (random, seeded weights)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout
from skimage import data as skdata
from skimage import io as skio

from bids_syncact.bids.cache import read_features
from bids_syncact.bids.derivatives import PYBIDS_CONFIG
from bids_syncact.core.sync import Segment, synchronize_segments
from bids_syncact.core.timing import acquisition_times
from bids_syncact.demo import make_dataset

from .conftest import TINY, assert_refused

FAST = (
    '--weights',
    'none',
    '--layers',
    'features.1',
    'features.4',
    '--max-units',
    '8',
    '--confounds-strategy',
    'none',
    '--alpha',
    '0.05',
    '--n-nulls',
    '0',
)  # 18 volumes: too few for the defaults


def _sync_files(out: Path) -> list[Path]:
    return sorted(out.glob('sub-*/func/*_desc-sync_timeseries.tsv'))


def _features(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / 'features').glob('*.tsv')}


def test_every_run_gets_synchronized_activations_from_one_extraction(cli, dataset, tmp_path,
                                                                      plan_of):  # fmt: skip
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, process=True)
    assert result.code == 0, result.err
    runs = {run['name']: run for run in plan_of()['Runs']}
    files = _sync_files(out)
    assert len(files) == len(runs) * 2  # every run, both layers
    assert len(_features(out)) == 2  # one movie shown to 2 subjects x 2 runs: one extraction
    units = set()
    for path in files:
        table = pd.read_csv(path, sep='\t')
        sidecar = json.loads(path.with_suffix('.json').read_text())
        run = runs[path.name.split('_cnn-')[0]]
        assert len(table) == TINY.n_vols  # one row per stored volume, dummies included
        expected = acquisition_times(run['n_vols'], run['RepetitionTime'], run['acq_offset_s'])
        np.testing.assert_allclose(table['acquisition_time'], expected, atol=1e-9)
        assert sidecar['TimingSource'] == run['TimingSource'] == 'StartTime'
        assert sidecar['NonSteadyStateVolumes'] == run['drop_volumes'] == [0, 1]
        assert sidecar['Weights']['Kind'] == 'none'
        assert 'RANDOM' in sidecar['Weights']['Warning']
        assert sidecar['Layer'] in ('features.1', 'features.4')
        assert len(sidecar['UnitIndices']) == 8
        assert list(table.columns[1:]) == [f'unit{i:04d}' for i in sidecar['UnitColumns']]
        assert {i for m in sidecar['UnitClusters'] for i in m} == set(sidecar['UnitColumns'])
        assert sidecar['Sources'][0].startswith('bids:fmriprep:sub-')
        units.add((sidecar['Layer'], json.dumps(sidecar['UnitClusters'])))
    assert len(units) == 2  # the same clusters in every run and subject, per layer
    # pybids with the shipped config finds every output by its entities.
    layout = BIDSLayout(out, validate=False, config=['bids', 'derivatives', str(PYBIDS_CONFIG)])
    for path in files:
        sidecar = json.loads(path.with_suffix('.json').read_text())
        entities = dict(part.split('-', 1) for part in path.name.split('_')[:-1])
        found = layout.get(
            subject=entities['sub'], task=entities['task'], run=int(entities['run']),
            cnn='alexnet', layer=sidecar['Layer'].replace('.', ''), desc='sync',
            suffix='timeseries', extension='.tsv', return_type='filename',
        )  # fmt: skip
        assert found == [str(path)]
        assert layout.get_file(path).get_metadata()['UnitIndices'] == sidecar['UnitIndices']
    cached = layout.get(desc='activations', suffix='timeseries', extension='.tsv')
    assert sorted(f.filename for f in cached) == sorted(_features(out))
    assert {f.entities['layer'] for f in cached} == {'features1', 'features4'}
    assert all(len(f.entities['stim']) == len(f.entities['hash']) == 8 for f in cached)
    description = json.loads((out / 'dataset_description.json').read_text())
    assert description['DatasetType'] == 'derivative'
    assert description['GeneratedBy'][0]['Name'] == 'bids-syncact'


@pytest.mark.slow  # a whole participant run: make test-integration
def test_the_cache_is_shared_by_subjects_and_refused_when_its_settings_differ(cli, dataset,
                                                                              tmp_path):  # fmt: skip
    out = tmp_path / 'out'
    first = cli(dataset, out, 'participant', '--participant-label', '01', *FAST,
                '-w', tmp_path / 'w1', process=True)  # fmt: skip
    assert first.code == 0, first.err
    cached = _features(out)
    second = cli(dataset, out, 'participant', '--participant-label', '02', *FAST,
                 '-w', tmp_path / 'w2', process=True)  # fmt: skip
    assert second.code == 0, second.err
    assert _features(out) == cached  # reused, not recomputed
    assert {p.name.split('_')[0] for p in _sync_files(out)} == {'sub-01', 'sub-02'}
    sidecar = next((out / 'features').glob('*features1*.json'))
    meta = json.loads(sidecar.read_text())
    meta['Settings']['FrameFit'] = 'crop'
    sidecar.write_text(json.dumps(meta))
    refused = cli(dataset, out, 'participant', *FAST, '-w', tmp_path / 'w3', process=True)
    assert_refused(refused, 65, 'made with other Settings', 'not reused silently')


def test_features_only_fills_the_cache_and_nothing_else(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, '--features-only', process=True)
    assert result.code == 0, result.err
    assert len(_features(out)) == 2
    assert not list(out.glob('sub-*'))
    assert 'feature cache' in result.out


def test_other_settings_make_other_cache_entries(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    for fit in ('pad', 'crop'):
        result = cli(dataset, out, 'participant', *FAST, '--features-only', '--frame-fit', fit,
                     process=True)  # fmt: skip
        assert result.code == 0, result.err
    assert len(_features(out)) == 4


@pytest.mark.parametrize(('argv', 'code', 'fragment'), [
    (('--cnn', 'inception_v3'), 64, 'use one of alexnet,'),
    (('--weights', 'none', '--layers', 'features.99'), 64, 'its preset features.1 features.4'),
    (('--weights', 'none', '--layers', 'resnet18:layer1'), 64, 'which --cnn does not run'),
    (('--weights', 'alexnet=/nonexistent/w.pth'), 66, 'no such file'),
])  # fmt: skip
def test_bad_cnn_settings_are_one_line_before_any_work(cli, dataset, tmp_path, argv, code,
                                                       fragment):  # fmt: skip
    out = tmp_path / 'out'
    assert_refused(cli(dataset, out, 'participant', *argv, process=True), code, fragment)
    assert not (out / 'features').exists()


def test_default_weights_offline_are_one_line(cli, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    with mock.patch('torchvision.models._api.WeightsEnum.get_state_dict',
                    side_effect=OSError('no network')):  # fmt: skip
        result = cli(dataset, tmp_path / 'out', 'participant', process=True)
    assert_refused(result, 66, 'AlexNet_Weights.IMAGENET1K_V1', 'bids_syncact.resources')


def test_a_corrupt_movie_is_exit_65_from_inside_the_workflow(cli, dataset, tmp_path):
    movie = dataset / 'stimuli' / 'movie.mp4'
    movie.write_bytes(movie.read_bytes()[:2000])  # cut: probed as long enough, fails decoding
    result = cli(dataset, tmp_path / 'out', 'participant', *FAST, process=True)
    assert result.code in (65,), result.err
    assert len(result.err_lines) == 1
    assert 'Traceback' not in result.err


@pytest.mark.slow  # a whole participant run: make test-integration
def test_an_image_sequence_is_placed_at_its_onsets(cli, dataset, tmp_path):
    images = {'a.png': skdata.astronaut(), 'b.png': skdata.coffee()}
    for name, image in images.items():
        skio.imsave(dataset / 'stimuli' / name, image, check_contrast=False)
    onsets, durations = [1.0, 9.0], [4.0, 3.0]
    for sub in TINY.subjects:
        for run in TINY.runs:
            events = dataset / f'sub-{sub}' / 'func' / f'sub-{sub}_task-movie_run-{run}_events.tsv'
            pd.DataFrame({'onset': onsets, 'duration': durations,
                          'stim_file': list(images)}).to_csv(events, sep='\t', index=False)  # fmt: skip
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, process=True)
    assert result.code == 0, result.err
    path = (
        out
        / 'sub-01'
        / 'func'
        / 'sub-01_task-movie_run-1_cnn-alexnet_layer-features4_desc-sync_timeseries.tsv'
    )
    table = pd.read_csv(path, sep='\t')
    sidecar = json.loads(path.with_suffix('.json').read_text())
    units = sidecar['UnitColumns']
    # two images cannot say which units correlate: single units, and the sidecar says why
    assert units == sidecar['UnitIndices']
    assert 'fewer than the 20' in sidecar['UnitClusteringNote']
    cached = {}
    for tsv in (out / 'features').glob('*features4*.tsv'):
        meta, features = read_features(tsv)
        cached[Path(meta['Sources'][0]).name] = features
    assert set(cached) == set(images)
    segments = [Segment(cached[name].acts[:, units], cached[name].frame_times, onset=onset,
                        end=duration)
                for name, onset, duration in zip(images, onsets, durations, strict=True)]  # fmt: skip
    expected = synchronize_segments(segments, cached['a.png'].blank[units],
                                    acq_times=table['acquisition_time'].to_numpy())  # fmt: skip
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, rtol=1e-6, atol=1e-7)
    blank_level = synchronize_segments([], cached['a.png'].blank[units],
                                       acq_times=table['acquisition_time'].to_numpy())  # fmt: skip
    assert not np.allclose(expected, blank_level)  # the images do change the units


@pytest.mark.slow  # a whole participant run: make test-integration
def test_outputs_removed_since_the_last_run_are_made_again(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    assert cli(dataset, out, 'participant', *FAST, process=True).code == 0
    made = {p.name: p.read_bytes() for p in _sync_files(out)}
    for path in _sync_files(out)[:3]:
        path.unlink()
    for path in (out / 'features').glob('*.tsv'):
        path.unlink()
    result = cli(dataset, out, 'participant', *FAST, process=True)  # the same work dir
    assert result.code == 0, result.err
    assert {p.name: p.read_bytes() for p in _sync_files(out)} == made  # whole and identical


def test_sequence_items_without_a_positive_duration_are_refused(cli, dataset, tmp_path):
    skio.imsave(dataset / 'stimuli' / 'a.png', skdata.astronaut(), check_contrast=False)
    events = dataset / 'sub-01' / 'func' / 'sub-01_task-movie_run-1_events.tsv'
    pd.DataFrame({'onset': [1.0], 'duration': [0.0], 'stim_file': ['a.png']}).to_csv(
        events, sep='\t', index=False
    )
    result = cli(dataset, tmp_path / 'out', 'participant', *FAST, process=True)
    assert_refused(result, 65, 'has duration 0 s')


def test_clusters_are_the_same_for_subjects_with_other_onsets_and_dummies(cli, tmp_path):
    """The clusters come from the stimuli alone: another onset and more dummy volumes change
    sub-02's regressors, not its clusters (the group level pairs the subjects' maps by them)."""
    # a 40 s movie: enough seconds to estimate correlations (the tiny one has 19)
    dataset = make_dataset(tmp_path / 'bids', dataclasses.replace(TINY, movie_s=40.0))
    for events in dataset.glob('sub-02/func/*_events.tsv'):
        table = pd.read_csv(events, sep='\t')
        table['onset'] = table['onset'] + 3.0
        table.to_csv(events, sep='\t', index=False)
    for confounds in dataset.glob(
        'derivatives/fmriprep/sub-02/func/*_desc-confounds_timeseries.tsv'
    ):
        table = pd.read_csv(confounds, sep='\t')
        extra = np.zeros(len(table))
        extra[2] = 1.0  # a third non-steady-state volume
        table['non_steady_state_outlier99'] = extra
        table.to_csv(confounds, sep='\t', index=False, na_rep='n/a')
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, '--unit-correlation', '0.6', process=True)
    assert result.code == 0, result.err
    by_subject: dict[str, set] = {'01': set(), '02': set()}
    drops = {}
    for path in _sync_files(out):
        sidecar = json.loads(path.with_suffix('.json').read_text())
        subject = path.name[4:6]
        by_subject[subject].add((sidecar['Layer'], json.dumps(sidecar['UnitClusters']),
                                 json.dumps(sidecar['UnitClusterWeights'])))  # fmt: skip
        drops[subject] = sidecar['NonSteadyStateVolumes']
        assert sidecar['UnitCorrelation'] == 0.6
    assert drops == {'01': [0, 1], '02': [0, 1, 2]}
    assert by_subject['01'] == by_subject['02']
    # at R 0.6 some units of a random AlexNet share a cluster: the check is not vacuous
    assert any(len(m) > 1 for _, c, _ in by_subject['01'] for m in json.loads(c))
