"""Labels and brain similarity calibrated against the data's own nulls (issue 18, item 6).

The slow tests fit structured-null datasets (``tests/structured_null.py``: resting-state BOLD
with slow network-shaped fluctuations, confounds, a movie's synchronized activations, no
coupling) with :func:`~bids_syncact.core.fbn.fit_layer` at ``alpha=None`` (choosing alpha on
the real data is inside what they measure) and 99 nulls, as the participant level does. The fast
ones check :mod:`bids_syncact.core.calibration`'s functions, and the shift scheme of
:mod:`bids_syncact.core.nulls`, on arrays.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import hypergeom

from bids_syncact.core.annotation import top_voxels
from bids_syncact.core.calibration import (
    LABEL_LEVEL,
    STATISTIC_FLOOR,
    SUBJECT_STATISTIC,
    GroupInference,
    cnn_similarity_null,
    draw_null_indices,
    group_inference,
    network_statistics,
    permutation_p,
    standardize,
    subject_inference,
)
from bids_syncact.core.fbn import fit_layer
from bids_syncact.core.nulls import draw_shifts
from tests.structured_null import NullSpec, Plant, make_dataset, make_layout

#: NullSpec's defaults: 680 voxels in 8 networks, 8 units (two near-twins), 2 runs of 300
#: volumes at TR 2 s, spontaneous network fluctuations of 1.5-3 noise SDs.
SPEC = NullSpec()
N_NULLS = 99
N_DATASETS = 200
#: The 0.999 quantile of Bin(200, 0.05): at most this many of 200 null datasets labelled.
MAX_LABELLED = 21
N_GROUP = 3
#: The old rule, for contrast: the hypergeometric p, Bonferroni over the networks.
HYPERGEOMETRIC_LOGP = -np.log10(LABEL_LEVEL / SPEC.n_networks)


def _fit(sub, networks: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``fit_layer``'s group and subject statistics ``(1 + N, K, n_networks)``, and the
    real maps' logp."""
    with warnings.catch_warnings():
        # Cross-validation's smallest alphas on near-twin units: KKT notes, not errors.
        warnings.simplefilter('ignore', RuntimeWarning)
        fit = fit_layer(sub.raw_runs, sub.specs, sub.S, alpha=None, n_nulls=N_NULLS, seed=seed,
                        n_threads=1, networks=networks)  # fmt: skip
    logp = network_statistics(fit.codes, networks, statistic='logp')
    return fit.network_stats, fit.subject_stats, logp


def _group(data, seed: int) -> tuple[list, GroupInference]:
    fits = [_fit(sub, data.layout.networks, seed + i) for i, sub in enumerate(data.subjects)]
    stats = [stats for stats, _, _ in fits]
    return fits, group_inference(stats, draw_null_indices([N_NULLS] * len(stats), seed=seed))


def _null_dataset(seed: int) -> dict:
    """Fit one structured-null dataset of ``N_GROUP`` subjects; return one cluster's labels."""
    data = make_dataset(seed, n_subjects=N_GROUP, spec=SPEC)
    chosen = int(np.random.default_rng([seed, 7]).integers(SPEC.n_units))  # before any fit
    fits, group = _group(data, seed)
    _, stats, logp = fits[0]
    similarity = cnn_similarity_null({'layer': group})
    return {
        'subject': bool(subject_inference(stats).labelled[chosen]),
        'group': bool(group.labelled[chosen]),
        'hypergeometric': bool(logp[chosen].max() > HYPERGEOMETRIC_LOGP),
        'similarity_outside': not similarity.null_low <= similarity.score <= similarity.null_high,
    }


@pytest.fixture(scope='module')
def null_labels() -> list[dict]:
    """One pre-chosen cluster's labels in each of 200 independent structured-null datasets."""
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(_null_dataset, range(N_DATASETS)))


@pytest.mark.slow
def test_false_label_rate_subject_level(null_labels):
    labelled = sum(row['subject'] for row in null_labels)
    assert labelled <= MAX_LABELLED, f'{labelled} of {N_DATASETS} null clusters labelled'


@pytest.mark.slow
def test_false_label_rate_group_level(null_labels):
    labelled = sum(row['group'] for row in null_labels)
    assert labelled <= MAX_LABELLED, f'{labelled} of {N_DATASETS} null clusters labelled'


@pytest.mark.slow
def test_hypergeometric_p_would_fail_the_same_nulls(null_labels):
    # (d) on fitted maps: the old rule labels far more than the calibrated one may.
    labelled = sum(row['hypergeometric'] for row in null_labels)
    assert labelled > 2 * MAX_LABELLED, labelled


@pytest.mark.slow
def test_similarity_within_its_null_interval_on_the_null(null_labels):
    outside = sum(row['similarity_outside'] for row in null_labels)
    assert outside <= MAX_LABELLED, f'outside its 95% null interval in {outside} of 200'


PLANT_SEED = 1000
#: Unit 0 drives network 0 at 1 noise SD (about 0.3 of a voxel's cleaned SD in the network).
ONE = (Plant(units=(0,), network=0, amplitude=1.0),)
#: Units 0, 1 and 2 drive networks 0, 1 and 2: more of the layer couples.
THREE = (*ONE, Plant(units=(1,), network=1, amplitude=1.0),
         Plant(units=(2,), network=2, amplitude=1.0))  # fmt: skip


@pytest.fixture(scope='module')
def planted() -> dict:
    """Three subjects with one, or three, planted couplings (one seed), at the group level."""
    out = {}
    for name, plants in (('one', ONE), ('three', THREE)):
        data = make_dataset(PLANT_SEED, n_subjects=N_GROUP, spec=SPEC, plant=plants)
        group = _group(data, PLANT_SEED)[1]
        out[name] = {'group': group, 'similarity': cnn_similarity_null({'layer': group})}
    return out


@pytest.mark.slow
def test_planted_coupling_labelled_with_its_network_at_group_level(planted):
    group = planted['one']['group']
    assert group.best[0] == 0
    assert group.labelled[0], group.p[0]


#: A single subject's coupling: unit 0 drives network 0 at 2 noise SDs. logp, which stops
#: growing once F lies inside one network, labelled it in 30% of subjects (the reason the
#: subject level uses the contrast; benchmarks/bench_calibration.py).
SUBJECT_PLANT = Plant(units=(0,), network=0, amplitude=2.0)


def _planted_subject(seed: int) -> bool:
    """Return whether one subject's planted cluster is labelled with the planted network."""
    data = make_dataset(seed, spec=SPEC, plant=SUBJECT_PLANT)
    result = subject_inference(_fit(data.subjects[0], data.layout.networks, seed)[1])
    return bool(result.labelled[0] and result.best[0] == 0)


@pytest.mark.slow
def test_planted_coupling_labelled_with_its_network_at_subject_level():
    with ProcessPoolExecutor(2) as pool:
        labelled = sum(pool.map(_planted_subject, range(PLANT_SEED, PLANT_SEED + 10)))
    assert labelled >= 8, f'{labelled} of 10 subjects label the planted network'


@pytest.mark.slow
def test_similarity_above_its_null_interval_and_grows_with_coupling(planted):
    one, three = planted['one']['similarity'], planted['three']['similarity']
    assert one.score > one.null_high
    assert three.score > one.score + 1.0


# -- (d) without fitting: smooth, network-shaped maps, all alike --------------------------------


def test_labels_do_not_come_from_the_hypergeometric_p():
    # Every map (the "real" one included) is a smooth field plus one random network's loading:
    # exchangeable, so the calibrated p labels about 4% of them, while the hypergeometric p
    # (voxels as independent draws) finds the network almost every time.
    rng = np.random.default_rng(0)
    layout = make_layout(SPEC, rng)
    n_sets, n_maps = 200, 1 + N_NULLS
    calibrated = hyper = 0
    for _ in range(n_sets):
        noise = gaussian_filter(rng.standard_normal((n_maps, *SPEC.shape)), (0, 2, 2, 2))
        noise = noise[:, layout.mask] / noise[:, layout.mask].std()
        which = rng.integers(SPEC.n_networks, size=n_maps)
        maps = noise + rng.uniform(0.5, 1.5, (n_maps, 1)) * layout.loadings[which]
        stats = network_statistics(maps, layout.networks, statistic=SUBJECT_STATISTIC)
        calibrated += bool(subject_inference(stats[:, None]).labelled[0])
        logp = network_statistics(maps[:1], layout.networks, statistic='logp')
        hyper += bool(logp.max() > HYPERGEOMETRIC_LOGP)
    assert hyper >= 0.9 * n_sets
    assert calibrated <= MAX_LABELLED


# -- the shift scheme ---------------------------------------------------------------------------


def _smooth_statistic_rate(min_shift_s: float, n_sets: int = 4000) -> float:
    """Return how often p < 0.05 for a statistic that varies smoothly with the shifts."""
    n_vols, t_r = 180, 1.5
    rng = np.random.default_rng(1)
    labelled = 0
    for i in range(n_sets):
        # One smooth circular function of the shift per run (what slow resting fluctuations
        # make of a map's statistic), summed over the two runs.
        f = gaussian_filter(rng.standard_normal((2, n_vols)), (0, 5), mode='wrap')
        shifts = draw_shifts([n_vols] * 2, [t_r] * 2, N_NULLS, seed=i, min_shift_s=min_shift_s)
        real, null = f[:, 0].sum(), f[0, shifts[:, 0]] + f[1, shifts[:, 1]]
        labelled += permutation_p(real, null) < LABEL_LEVEL
    return labelled / n_sets


def test_default_shifts_keep_real_and_nulls_exchangeable():
    # With any non-zero shift the real map's rank is uniform: P(p < 0.05) = 4/100 with 99 nulls.
    rate = _smooth_statistic_rate(0.0)
    assert abs(rate - 0.04) < 4 * np.sqrt(0.04 * 0.96 / 4000), rate


def test_shifts_kept_from_zero_make_the_real_map_stand_out():
    # Why the default changed: nulls 60 s from zero clump among themselves, and the isolated
    # real map lands in their sparse upper tail too often.
    assert _smooth_statistic_rate(60.0) > 0.06


# -- calibration.py's functions -----------------------------------------------------------------


def test_standardize_keeps_empty_maps_at_minus_infinity():
    stats = np.array([[1.0, 2.0], [3.0, -np.inf], [-np.inf, 4.0]])
    z = standardize(stats)
    np.testing.assert_array_equal(z[[2, 1], [0, 1]], [-np.inf, -np.inf])
    np.testing.assert_allclose(z[:2, 0], [-1.0, 1.0])  # mean and SD of the finite values only
    np.testing.assert_allclose(z[[0, 2], 1], [-1.0, 1.0])


def test_standardize_empty_counts_as_the_floor_for_averages():
    z = standardize(np.array([[1.0], [3.0], [-np.inf]]), empty=STATISTIC_FLOOR)
    np.testing.assert_allclose(z.ravel(), [-1.0, 1.0, -2.0])


@pytest.mark.parametrize('empty', [None, STATISTIC_FLOOR])
def test_standardize_sd_zero_gives_zero_not_infinity(empty):
    stats = np.array([[5.0, -np.inf, 1e12], [5.0, -np.inf, 1e12], [-np.inf, -np.inf, 1e12]])
    z = standardize(stats, empty=empty)
    assert not np.isnan(z).any()
    assert np.isfinite(z[:2, 0]).all()
    assert (z[:2, 0] == 0).all()
    assert (z[:, 2] == 0).all()  # constant at a large value: rounding is not a spread
    if empty is None:
        assert z[2, 0] == -np.inf
        assert (z[:, 1] == -np.inf).all()
    else:
        assert np.isfinite(z).all()


def test_standardize_is_the_same_for_every_map():
    rng = np.random.default_rng(2)
    stats = rng.normal(size=(50, 3, 4))
    z = standardize(stats)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0)
    order = rng.permutation(50)
    np.testing.assert_allclose(standardize(stats[order]), z[order])


def test_permutation_p_counts_ties():
    null = np.array([[2.0], [2.0], [1.0], [3.0]])
    assert permutation_p(np.array([2.0]), null).tolist() == [(1 + 3) / 5]
    assert permutation_p(np.array([3.5]), null).tolist() == [1 / 5]
    assert permutation_p(np.array([-np.inf]), null).tolist() == [1.0]


def test_subject_inference_fwe_p_is_at_least_the_cluster_p():
    rng = np.random.default_rng(3)
    stats = rng.gamma(2.0, size=(1 + N_NULLS, 6, 5))
    stats[0, 2, 1] += 6.0
    result = subject_inference(stats)
    assert (result.p_fwe >= result.p).all()
    assert ((result.p >= 1 / 100) & (result.p <= 1)).all()
    assert result.labelled[2]
    assert result.best[2] == 1
    np.testing.assert_array_equal(result.labelled, result.p < LABEL_LEVEL)


def test_subject_inference_empty_real_map_is_never_labelled():
    rng = np.random.default_rng(4)
    stats = rng.normal(size=(1 + N_NULLS, 2, 3))
    stats[0, 0] = -np.inf
    stats[1:, 1] = -np.inf  # every null empty: the real map beats them all
    result = subject_inference(stats)
    assert result.p[0] == 1.0
    assert result.best[0] == -1
    assert not result.labelled[0]
    assert result.p[1] == 1 / 100
    assert result.labelled[1]


def test_draw_null_indices_seeded_and_in_range():
    n_nulls = [99, 20, 45]
    draws = draw_null_indices(n_nulls, 5000, seed=11)
    assert draws.shape == (5000, 3)
    for column, n in zip(draws.T, n_nulls, strict=True):
        assert column.min() == 1
        assert column.max() == n
    np.testing.assert_array_equal(draws, draw_null_indices(n_nulls, 5000, seed=11))
    assert not np.array_equal(draws, draw_null_indices(n_nulls, 5000, seed=12))
    assert abs(np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]) < 0.05  # independent per subject
    with pytest.raises(ValueError, match='at least one null'):
        draw_null_indices([99, 0], seed=0)


def test_group_inference_labels_a_network_shared_by_the_subjects():
    rng = np.random.default_rng(5)
    stats = [rng.normal(size=(1 + N_NULLS, 4, 3)) for _ in range(3)]
    for s in stats:
        s[0, 1, 2] += 2.5  # each subject alone: not always significant
    result = group_inference(stats, draw_null_indices([N_NULLS] * 3, seed=0))
    assert result.null.shape == (10_000, 4)
    assert result.labelled[1]
    assert result.best[1] == 2
    assert ((result.p > 0) & (result.p <= 1)).all()


def test_group_inference_refuses_mismatched_subjects():
    a, b = np.zeros((21, 4, 3)), np.zeros((21, 5, 3))
    with pytest.raises(ValueError, match='disagree'):
        group_inference([a, b], draw_null_indices([20, 20], 10, seed=0))
    with pytest.raises(ValueError, match='index columns'):
        group_inference([a], draw_null_indices([20, 20], 10, seed=0))


def test_network_statistics_logp_is_the_hypergeometric_tail():
    rng = np.random.default_rng(6)
    networks = (rng.random((5, 400)) < 0.2).astype(float)
    maps = gaussian_filter(rng.standard_normal((30, 400)), (0, 3))
    logp = network_statistics(maps, networks, statistic='logp')
    enrichment = network_statistics(maps, networks, statistic='enrichment')
    for i in (0, 17):
        top = top_voxels(maps[i])
        overlap = (top[None] & (networks >= 0.5)).sum(axis=1)
        size = networks.sum(axis=1)
        expect = -np.log10(hypergeom.sf(overlap - 1, 400, size, top.sum()))
        np.testing.assert_allclose(logp[i], np.maximum(expect, 0.0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(enrichment[i], (overlap / top.sum()) / (size / 400))


def test_network_statistics_logp_stays_finite_past_underflow():
    # 10,000 top voxels all in a 5,000-voxel network of 200,000: p far below 1e-300.
    networks = np.zeros((1, 200_000))
    networks[0, :12_000] = 1.0
    maps = np.zeros((1, 200_000))
    maps[0, :10_000] = 1.0 + np.arange(10_000)
    logp = network_statistics(maps, networks, statistic='logp')
    assert np.isfinite(logp).all()
    assert logp[0, 0] > 300


def test_network_statistics_empty_map_and_empty_network():
    networks = np.zeros((2, 100))
    networks[0, :30] = 1.0
    maps = np.zeros((2, 100))
    maps[1, :10] = 1.0
    for statistic in ('logp', 'enrichment', 'contrast'):
        stats = network_statistics(maps, networks, statistic=statistic)
        assert (stats[0] == -np.inf).all()  # nothing in F
        assert stats[1, 1] == STATISTIC_FLOOR  # a network with no voxel
        assert stats[1, 0] > 0


def test_network_statistics_contrast_is_mean_inside_minus_outside():
    rng = np.random.default_rng(8)
    networks = (rng.random((4, 300)) < 0.25).astype(float)
    maps = rng.standard_normal((6, 300)) * (rng.random((6, 300)) < 0.3)
    maps[2, 7] = np.nan  # a non-finite voxel counts as 0
    contrast = network_statistics(maps, networks, statistic='contrast')
    for i in range(6):
        magnitude = np.nan_to_num(np.abs(maps[i]))
        member = networks >= 0.5
        expect = [magnitude[m].mean() - magnitude[~m].mean() for m in member]
        np.testing.assert_allclose(contrast[i], expect, rtol=1e-12)


def test_contrast_grows_with_the_coupling_where_logp_stops():
    # Why the subject level uses the contrast: once F lies inside the network, logp is at its
    # ceiling, so a half-coupled null map ties with the coupled one; the contrast still ranks them.
    rng = np.random.default_rng(9)
    layout = make_layout(SPEC, rng)
    noise = gaussian_filter(rng.standard_normal(SPEC.shape), 2)[layout.mask]
    noise /= noise.std()
    loading = layout.loadings[0] / layout.loadings[0].max()
    half, full = (noise + beta * loading for beta in (8.0, 16.0))
    logp = network_statistics(np.stack([half, full]), layout.networks, statistic='logp')[:, 0]
    contrast = network_statistics(np.stack([half, full]), layout.networks,
                                  statistic='contrast')[:, 0]  # fmt: skip
    assert logp[0] == logp[1]  # both F wholly inside network 0
    assert contrast[1] > 1.5 * contrast[0]


def test_similarity_is_centred_on_its_draws():
    rng = np.random.default_rng(7)

    def layer(shift: float) -> GroupInference:
        null = rng.normal(size=(10_000, 6))
        return GroupInference(z=None, statistic=null[0] + shift, null=null, best=None, p=None,
                              labelled=None)  # fmt: skip

    null_only = cnn_similarity_null({'a': layer(0.0), 'b': layer(0.0)})
    assert null_only.null_low < null_only.score < null_only.null_high
    assert null_only.null_low < -1.5
    assert null_only.null_high > 1.5
    coupled = cnn_similarity_null({'a': layer(0.0), 'b': layer(3.0)})
    assert coupled.best_layer == 'b'
    assert coupled.score > coupled.null_high
