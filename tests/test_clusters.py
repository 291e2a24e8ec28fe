"""Unit clusters from the stimuli (issue 19, item 1): :mod:`bids_syncact.core.clusters`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bids_syncact.core.clusters import (
    cluster_units,
    representative_weights,
    stimulus_series,
)


def _channels(rng, n_samples=400):
    """Three families of near-copies (one member flipped), an independent one, a dead one."""
    base = rng.standard_normal((n_samples, 3)).cumsum(axis=0)
    cols = []
    for f, size in enumerate((3, 2, 4)):
        for j in range(size):
            sign = -1.0 if (f, j) == (0, 2) else 1.0
            cols.append(
                sign * base[:, f] + 0.1 * base[:, f].std() * rng.standard_normal(n_samples)
            )
    cols.append(rng.standard_normal(n_samples))
    cols.append(np.zeros(n_samples))
    return np.column_stack(cols)


@pytest.mark.parametrize('R', [0.6, 0.8, 0.9, 0.95])
def test_complete_linkage_keeps_every_pair_inside_above_r(R):
    rng = np.random.default_rng(0)
    x = _channels(rng)
    variance = x.var(axis=0)
    clusters = cluster_units(x, variance, R)
    r = np.corrcoef(x[:, :-1], rowvar=False)
    for members, within in zip(clusters.members, clusters.min_correlation, strict=True):
        pairs = [abs(r[i, j]) for i, j in itertools.combinations(members, 2)]
        assert all(p >= R - 1e-9 for p in pairs)
        assert within == pytest.approx(min(pairs) if pairs else 1.0)
    covered = sorted(i for m in clusters.members for i in m)
    assert covered == list(range(x.shape[1] - 1))  # every live channel once
    assert clusters.dropped == (x.shape[1] - 1,)


def test_families_found_with_their_signs_and_named_by_variance():
    rng = np.random.default_rng(1)
    x = _channels(rng)
    variance = x.var(axis=0)
    clusters = cluster_units(x, variance, 0.9)
    families = [set(m) for m in clusters.members]
    assert families == [{0, 1, 2}, {3, 4}, {5, 6, 7, 8}, {9}]
    for members, signs in zip(clusters.members, clusters.signs, strict=True):
        assert members[0] == max(members, key=lambda i: (variance[i], -i))
        assert signs[0] == 1
        ref = x[:, members[0]]
        for i, s in zip(members, signs, strict=True):
            assert s == np.sign(np.corrcoef(ref, x[:, i])[0, 1])
    # the largest |r| across clusters is a cross-family pair's
    r = np.abs(np.corrcoef(x[:, :-1], rowvar=False))
    for k, members in enumerate(clusters.members):
        others = [i for m in clusters.members if m != members for i in m]
        assert clusters.max_cross_correlation[k] == pytest.approx(r[np.ix_(members, others)].max())


def test_r_one_gives_single_units():
    rng = np.random.default_rng(2)
    x = _channels(rng)
    clusters = cluster_units(x, x.var(axis=0), 1.0)
    assert clusters.members == tuple((i,) for i in range(x.shape[1] - 1))
    assert (clusters.min_correlation == 1).all()
    np.testing.assert_array_equal(clusters.names, np.arange(x.shape[1] - 1))


@pytest.mark.parametrize('R', [0.5, 0.3, 1.01])
def test_cut_outside_its_range_is_refused(R):
    with pytest.raises(ValueError, match=r'\(0.5, 1\]'):
        cluster_units(np.ones((5, 2)), np.ones(2), R)


def test_representative_is_the_mean_of_aligned_scaled_members():
    rng = np.random.default_rng(3)
    acts = _channels(rng)
    sd = acts.std(axis=0)
    clusters = cluster_units(acts, acts.var(axis=0), 0.9)
    W = representative_weights(clusters, sd, acts.shape[1])
    reps = acts @ W
    for k, (members, signs) in enumerate(zip(clusters.members, clusters.signs, strict=True)):
        expect = np.mean([s * acts[:, i] / sd[i] for i, s in zip(members, signs, strict=True)],
                         axis=0)  # fmt: skip
        np.testing.assert_allclose(reps[:, k], expect, rtol=1e-12, atol=1e-12)
    # a fixed linear map: it commutes with any linear step (here a circular shift)
    np.testing.assert_allclose(np.roll(acts, 7, axis=0) @ W, np.roll(reps, 7, axis=0))


def test_stimulus_series_standardized_and_high_passed():
    rng = np.random.default_rng(4)
    n_frames, fps = 600, 4.0
    times = np.arange(n_frames) / fps
    slow = 20.0 * np.cos(np.pi * times / 150.0)  # a half cycle in 150 s: 0.0033 Hz
    fast = np.repeat(rng.standard_normal(n_frames // 40), 40)  # 10 s shots
    acts = np.column_stack([fast, fast + slow])
    x = stimulus_series(acts, times, n_frames / fps)
    assert x.shape == (150, 2)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=0), 1.0)
    raw = stimulus_series(acts, times, n_frames / fps, high_pass_hz=0.0)
    # the trend dominates the unfiltered pair's difference; the high-pass takes it out
    assert np.corrcoef(raw.T)[0, 1] < 0.5
    assert np.corrcoef(x.T)[0, 1] > 0.9


def test_stimulus_series_has_no_shared_onset_ramp():
    # mirror channels stay mirrors: the first frame is taken as on before the start
    acts = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.7]])
    x = stimulus_series(acts, np.array([0.0, 10.0, 25.0]), 60.0, high_pass_hz=0.0)
    assert np.corrcoef(x.T)[0, 1] == pytest.approx(-1.0)
