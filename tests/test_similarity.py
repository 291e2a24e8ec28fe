"""Brain similarity of CNNs and its correlation with accuracy: core/similarity.py.

Known answers, brute-force enumerations written here independently, and scipy for reference.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from bids_syncact.core.similarity import AccuracyCorrelation, correlate_with_accuracy

# --------------------------------------------------------------------------------------------
# correlate_with_accuracy: independent brute force


def _brute_r(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _ranks(v):
    # Average ranks, 1-based, written without scipy.
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _brute_exact_p(x, y):
    observed = abs(_brute_r(x, y))
    hits = total = 0
    for perm in itertools.permutations(y):
        total += 1
        hits += abs(_brute_r(x, list(perm))) >= observed - 1e-9
    return hits / total


def test_monotone_n4_exact_p_is_two_over_24():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [0.5, 0.6, 0.7, 0.8]
    fit = correlate_with_accuracy(np.array(x), np.array(y), n_bootstrap=200)
    assert fit.exact
    assert fit.n_permutations == 24
    assert fit.pearson_r == pytest.approx(1.0)
    assert fit.spearman_r == pytest.approx(1.0)
    assert fit.pearson_p == pytest.approx(2 / 24)
    assert fit.spearman_p == pytest.approx(2 / 24)
    assert fit.pearson_p == pytest.approx(_brute_exact_p(x, y))


def test_monotone_nonlinear_spearman_p_is_two_over_24():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [0.1, 0.2, 0.4, 0.8]  # monotone, not linear: Spearman r is exactly 1
    fit = correlate_with_accuracy(np.array(x), np.array(y), n_bootstrap=200)
    assert fit.spearman_r == pytest.approx(1.0)
    assert fit.spearman_p == pytest.approx(2 / 24)
    assert fit.pearson_r < 1.0
    assert fit.pearson_p == pytest.approx(_brute_exact_p(x, y))


@pytest.mark.parametrize(('n', 'seed'), [(5, 1), (5, 2), (6, 3), (6, 4)])
def test_exact_p_matches_brute_force_on_random_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    fit = correlate_with_accuracy(x, y, n_bootstrap=200)
    assert fit.exact
    assert fit.n_permutations == math.factorial(n)
    assert fit.pearson_r == pytest.approx(_brute_r(list(x), list(y)), abs=1e-12)
    assert fit.pearson_p == pytest.approx(_brute_exact_p(list(x), list(y)))
    rx, ry = _ranks(list(x)), _ranks(list(y))
    assert fit.spearman_r == pytest.approx(_brute_r(rx, ry), abs=1e-12)
    assert fit.spearman_p == pytest.approx(_brute_exact_p(rx, ry))
    assert 1 / math.factorial(n) <= fit.pearson_p <= 1.0


def test_exact_p_with_ties_matches_brute_force():
    x = [1.0, 2.0, 2.0, 3.0, 5.0]
    y = [0.3, 0.3, 0.5, 0.4, 0.9]
    fit = correlate_with_accuracy(np.array(x), np.array(y), n_bootstrap=200)
    rx, ry = _ranks(x), _ranks(y)
    assert fit.spearman_r == pytest.approx(_brute_r(rx, ry), abs=1e-12)
    assert fit.spearman_p == pytest.approx(_brute_exact_p(rx, ry))
    assert fit.pearson_p == pytest.approx(_brute_exact_p(x, y))


def test_r_equals_scipy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=7)
    y = np.round(x + rng.normal(size=7), 1)
    y[2] = y[4]  # a tie in the ranks
    fit = correlate_with_accuracy(x, y, n_bootstrap=200)
    assert fit.pearson_r == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert fit.spearman_r == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_negative_correlation_is_two_sided():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    fit = correlate_with_accuracy(x, -x, n_bootstrap=200)
    assert fit.pearson_r == pytest.approx(-1.0)
    assert fit.pearson_p == pytest.approx(2 / 120)


# --------------------------------------------------------------------------------------------
# descriptive label, refusals


@pytest.mark.parametrize(('n', 'descriptive'), [(3, True), (4, True), (5, False), (6, False)])
def test_descriptive_below_five(n, descriptive):
    x = np.arange(n, dtype=float)
    y = x**2 + 1.0
    fit = correlate_with_accuracy(x, y, n_bootstrap=100)
    assert fit.n_cnns == n
    assert fit.descriptive is descriptive
    sidecar = fit.to_sidecar()
    assert sidecar['Descriptive'] is descriptive
    assert ('DescriptiveNote' in sidecar) is descriptive


def test_two_cnns_are_refused():
    with pytest.raises(ValueError, match='at least 3 CNNs'):
        correlate_with_accuracy(np.array([1.0, 2.0]), np.array([0.5, 0.6]))


@pytest.mark.parametrize(
    ('x', 'y'),
    [
        ([1.0, 2.0, np.nan], [0.1, 0.2, 0.3]),
        ([1.0, 2.0, 3.0], [0.1, np.inf, 0.3]),
        ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3, 0.4]),
    ],
)
def test_non_finite_or_mismatched_inputs_are_refused(x, y):
    with pytest.raises(ValueError):  # noqa: PT011
        correlate_with_accuracy(np.array(x), np.array(y))


def test_constant_input_gives_nan_and_a_valid_sidecar():
    fit = correlate_with_accuracy(np.array([1.0, 2.0, 3.0, 4.0]), np.full(4, 0.7), n_bootstrap=50)
    for value in (fit.pearson_r, fit.pearson_p, fit.spearman_r, fit.spearman_p):
        assert math.isnan(value)
    assert all(math.isnan(v) for v in fit.pearson_ci + fit.spearman_ci)
    assert fit.n_bootstrap_used == 0
    sidecar = fit.to_sidecar()
    text = json.dumps(sidecar, allow_nan=False)
    assert json.loads(text)['PearsonR'] is None
    assert sidecar['PearsonCI'] == [None, None]


# --------------------------------------------------------------------------------------------
# bootstrap


def _correlated(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + 0.3 * rng.normal(size=n)


def test_bootstrap_ci_contains_observed_r_and_is_seeded():
    x, y = _correlated(8, 11)
    fit = correlate_with_accuracy(x, y, n_bootstrap=2000, seed=3)
    for r, (lower, upper) in ((fit.pearson_r, fit.pearson_ci), (fit.spearman_r, fit.spearman_ci)):
        assert lower <= r <= upper
        assert -1.0 <= lower <= upper <= 1.0
    assert fit.pearson_ci[0] > 0.0  # clearly correlated
    assert 0 < fit.n_bootstrap_used <= fit.n_bootstrap == 2000
    again = correlate_with_accuracy(x, y, n_bootstrap=2000, seed=3)
    other = correlate_with_accuracy(x, y, n_bootstrap=2000, seed=4)
    assert again.pearson_ci == fit.pearson_ci
    assert again.spearman_ci == fit.spearman_ci
    assert other.pearson_ci != fit.pearson_ci


def test_bootstrap_drops_constant_resamples():
    # With 3 CNNs, 3 of the 27 equally likely resamples pick one CNN thrice: constant.
    x = np.array([1.0, 2.0, 3.0])
    fit = correlate_with_accuracy(x, np.array([0.2, 0.1, 0.5]), n_bootstrap=5000)
    assert fit.n_bootstrap_used < 5000
    assert fit.n_bootstrap_used / 5000 == pytest.approx(24 / 27, abs=0.02)


def test_wider_confidence_gives_wider_interval():
    x, y = _correlated(9, 5)
    narrow = correlate_with_accuracy(x, y, n_bootstrap=1000, confidence=0.5)
    wide = correlate_with_accuracy(x, y, n_bootstrap=1000, confidence=0.99)
    assert wide.pearson_ci[0] <= narrow.pearson_ci[0] <= narrow.pearson_ci[1] <= wide.pearson_ci[1]


# --------------------------------------------------------------------------------------------
# Monte Carlo permutation p


def test_monte_carlo_p_is_close_to_scipy_and_seeded():
    rng = np.random.default_rng(21)
    x = rng.normal(size=10)
    y = x + 0.8 * rng.normal(size=10)
    kwargs = {'max_exact': 8, 'n_permutations': 20000, 'n_bootstrap': 200}
    fit = correlate_with_accuracy(x, y, seed=1, **kwargs)
    assert not fit.exact
    assert fit.n_permutations == 20000
    reference = pearsonr(x, y).pvalue
    assert 1e-4 < reference < 0.05
    assert fit.pearson_p == pytest.approx(reference, abs=0.01, rel=0.3)
    assert fit.pearson_p >= 1 / 20001
    assert correlate_with_accuracy(x, y, seed=1, **kwargs).pearson_p == fit.pearson_p
    assert correlate_with_accuracy(x, y, seed=2, **kwargs).pearson_p != fit.pearson_p
    assert 'Monte Carlo, 20000 orderings, seeded' in fit.to_sidecar()['PermutationTest']


def test_monte_carlo_floor_for_perfect_correlation():
    x = np.arange(10, dtype=float)
    fit = correlate_with_accuracy(x, 2 * x, max_exact=8, n_permutations=999, n_bootstrap=100)
    # Only the identity and the reversal (of 10! orderings) reach |r| = 1: none of 999 draws.
    assert fit.pearson_p == pytest.approx(1 / 1000)
    assert fit.spearman_p == pytest.approx(1 / 1000)


def test_monte_carlo_agrees_with_exact():
    x, y = _correlated(7, 9)
    y = y + 1.5 * np.random.default_rng(0).normal(size=7)  # weaken: p well above 0
    exact = correlate_with_accuracy(x, y, n_bootstrap=100)
    sampled = correlate_with_accuracy(x, y, max_exact=6, n_permutations=20000, n_bootstrap=100)
    assert exact.exact
    assert not sampled.exact
    assert sampled.pearson_p == pytest.approx(exact.pearson_p, abs=0.015)
    assert sampled.spearman_p == pytest.approx(exact.spearman_p, abs=0.015)


# --------------------------------------------------------------------------------------------
# sidecar


def test_to_sidecar_is_json_ready_and_names_its_methods():
    x, y = _correlated(6, 2)
    fit = correlate_with_accuracy(x, y, n_bootstrap=300, seed=9)
    assert isinstance(fit, AccuracyCorrelation)
    sidecar = json.loads(json.dumps(fit.to_sidecar(), allow_nan=False))
    assert sidecar['NumberOfCNNs'] == 6
    assert sidecar['PearsonR'] == pytest.approx(fit.pearson_r)
    assert sidecar['SpearmanP'] == pytest.approx(fit.spearman_p)
    assert sidecar['PearsonCI'] == pytest.approx(list(fit.pearson_ci))
    assert sidecar['PermutationTest'] == 'exact over all 6! = 720 orderings'
    assert sidecar['Bootstrap'] == 'percentile, 300 resamples of CNNs, seeded'
    assert sidecar['ConfidenceLevel'] == 0.95
    assert sidecar['Descriptive'] is False
    assert 'DescriptiveNote' not in sidecar


def test_result_is_frozen():
    fit = correlate_with_accuracy(np.arange(3.0), np.array([0.1, 0.3, 0.2]), n_bootstrap=10)
    with pytest.raises(AttributeError):
        fit.pearson_r = 0.0  # type: ignore[misc]
