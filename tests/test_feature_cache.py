"""The shared feature cache: once per stimulus and settings, locked, atomic, checked on reuse."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from bids_syncact.bids.cache import FeatureCache, Features, bids_label
from bids_syncact.errors import InputDataError, SyncActError

SETTINGS = {'WeightsSha256': 'ab' * 32, 'FrameRate': 4.0, 'FrameFit': 'pad', 'torch': '2.x'}


def _features(rng, n_frames=12, units=(3, 7, 11)):
    return Features(frame_times=np.arange(n_frames) / 4, acts=rng.random((n_frames, len(units))),
                    blank=rng.random(len(units)), unit_indices=units)  # fmt: skip


def _one(rng):
    return {'features.1': _features(rng)}


def _get(cache, movie, settings, compute):
    return cache.get_or_compute(movie, 'alexnet', ['features.1'], settings, compute)['features.1']


@pytest.fixture
def movie(tmp_path):
    path = tmp_path / 'movie.mp4'
    path.write_bytes(b'not decoded here' * 10)
    return path


def test_computed_once_for_two_subjects_and_read_back_exactly(tmp_path, movie, rng):
    cache, made, calls = FeatureCache(tmp_path / 'out'), _features(rng), []

    def compute():
        calls.append(1)
        return {'features.1': made, 'features.4': other}

    other = _features(rng, units=(0, 1))
    both = ['features.1', 'features.4']
    first, path = cache.get_or_compute(movie, 'alexnet', both, SETTINGS, compute)['features.1']
    second, again = _get(cache, movie, SETTINGS, compute)
    assert calls == [1]  # one forward pass made both layers
    assert path == again
    assert path.parent == tmp_path / 'out' / 'features'
    assert path.name.startswith(f'stim-{_sha(movie)[:8]}_cnn-alexnet_layer-features1_hash-')
    assert path.name.endswith('_desc-activations_timeseries.tsv')
    for loaded in (first, second):
        np.testing.assert_allclose(loaded.acts, made.acts, rtol=1e-8)
        np.testing.assert_allclose(loaded.blank, made.blank, rtol=1e-8)
        np.testing.assert_allclose(loaded.frame_times, made.frame_times)
        assert loaded.unit_indices == (3, 7, 11)
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['Layer'] == 'features.1'  # the original module name
    assert sidecar['UnitIndices'] == [3, 7, 11]


def test_other_settings_make_another_set(tmp_path, movie, rng):
    cache = FeatureCache(tmp_path / 'out')
    _, a = _get(cache, movie, SETTINGS, lambda: _one(rng))
    _, b = _get(cache, movie, SETTINGS | {'FrameRate': 2.0}, lambda: _one(rng))
    assert a != b


def test_a_mismatching_sidecar_is_refused_not_reused(tmp_path, movie, rng):
    cache = FeatureCache(tmp_path / 'out')
    _, path = _get(cache, movie, SETTINGS, lambda: _one(rng))
    sidecar = path.with_suffix('.json')
    meta = json.loads(sidecar.read_text())
    meta['Settings']['FrameFit'] = 'crop'
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(InputDataError, match='made with other Settings'):
        _get(cache, movie, SETTINGS, lambda: _one(rng))


def _worker(output_dir: str, movie: str, marker_dir: str) -> None:
    def compute():
        Path(marker_dir, f'computed-{multiprocessing.current_process().pid}').touch()
        time.sleep(1.0)
        return _one(np.random.default_rng(0))

    _get(FeatureCache(Path(output_dir)), Path(movie), SETTINGS, compute)


def test_parallel_jobs_compute_once(tmp_path, movie):
    markers = tmp_path / 'markers'
    markers.mkdir()
    context = multiprocessing.get_context('fork')
    jobs = [context.Process(target=_worker, args=(str(tmp_path / 'out'), str(movie), str(markers)))
            for _ in range(3)]  # fmt: skip
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert len(list(markers.iterdir())) == 1


def test_a_lock_file_left_by_a_dead_job_does_not_block(tmp_path, movie, rng):
    cache = FeatureCache(tmp_path / 'out', lock_timeout_s=2.0)
    path = cache.path('0' * 64, 'alexnet', 'features.1', SETTINGS)
    path.parent.mkdir(parents=True)
    cache.lock_path(_sha(movie), 'alexnet', SETTINGS).touch()
    features, _ = _get(cache, movie, SETTINGS, lambda: _one(rng))
    assert features.acts.shape == (12, 3)


def test_waiting_too_long_says_what_to_do(tmp_path, movie, rng):
    cache = FeatureCache(tmp_path / 'out', lock_timeout_s=0.3)
    lock = cache.lock_path(_sha(movie), 'alexnet', SETTINGS)
    lock.parent.mkdir(parents=True)
    context = multiprocessing.get_context('fork')
    holding, release = context.Event(), context.Event()

    def hold():
        with FileLock(str(lock)):
            holding.set()
            release.wait(30)

    holder = context.Process(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(SyncActError, match='--features-only'):
            _get(cache, movie, SETTINGS, lambda: _one(rng))
    finally:
        release.set()
        holder.join(10)


def test_labels_are_alphanumeric():
    assert bids_label('layer4.1.relu') == 'layer41relu'
    with pytest.raises(ValueError, match='no letter or digit'):
        bids_label('._')


def _sha(path):
    from bids_syncact.bids.cache import file_sha256

    return file_sha256(path)
