"""Annotation of FBNs with reference networks: thresholding, scores, label, sphere rasterising."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from bids_syncact.core.annotation import (
    NO_LABEL,
    annotate,
    annotations_table,
    sphere_labels,
    sphere_rois,
    top_voxels,
)


def _partition(sizes: list[int]) -> np.ndarray:
    """Return ``(len(sizes), sum(sizes))`` disjoint consecutive 0/1 networks."""
    edges = np.cumsum([0, *sizes])
    networks = np.zeros((len(sizes), edges[-1]))
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        networks[i, lo:hi] = 1.0
    return networks


def _exact_upper_tail(n_mask: int, n_net: int, n_top: int, overlap: int) -> float:
    """Return P(X >= overlap) of a hypergeometric variable, summed with math.comb."""
    total = math.comb(n_mask, n_top)
    tail = sum(
        Fraction(math.comb(n_net, x) * math.comb(n_mask - n_net, n_top - x), total)
        for x in range(overlap, min(n_net, n_top) + 1)
    )
    return float(tail)


# ------------------------------------------------------------------------------ top_voxels


def test_top_voxels_takes_ceil_fraction_by_magnitude(rng):
    fbn = rng.uniform(-1, 1, 200)
    planted = rng.choice(200, 10, replace=False)  # ceil(0.05 * 200) = 10
    fbn[planted] = rng.choice([-1, 1], 10) * rng.uniform(5, 6, 10)
    top = top_voxels(fbn)
    assert set(np.flatnonzero(top)) == set(planted)
    assert (fbn[top] < 0).any()  # negatives count by magnitude


def test_top_voxels_rounds_up_and_resists_float_fuzz(rng):
    fbn = rng.permutation(np.arange(1.0, 62.0))
    assert top_voxels(fbn).sum() == 4  # ceil(0.05 * 61) = ceil(3.05)
    assert top_voxels(fbn[:60]).sum() == 3  # 0.05 * 60 is 3.0000000000000004 in floats


def test_top_voxels_sparse_nonfinite_and_ties():
    sparse = np.zeros(100)
    sparse[[3, 50, 99]] = [0.1, -2.0, np.nan]
    assert np.flatnonzero(top_voxels(sparse)).tolist() == [3, 50]  # 2 eligible < k = 5
    ties = np.r_[np.full(4, 2.0), np.linspace(0.1, 1.0, 36)]  # k = 2, cut value 2 held by 4
    assert np.flatnonzero(top_voxels(ties)).tolist() == [0, 1, 2, 3]
    assert not top_voxels(np.zeros(50)).any()


# ------------------------------------------------------------------------------ annotate


def test_planted_network_is_labelled_with_enrichment_m_over_n(rng):
    networks = _partition([100, 200, 300, 400])
    fbn = networks[0] + 0.01 * rng.standard_normal(1000)
    a = annotate(fbn, networks, ['A', 'B', 'C', 'D'])
    assert a.label == 'A'
    assert a.n_top == 50
    assert a.overlap.tolist() == [50, 0, 0, 0]
    assert a.enrichment[0] == pytest.approx(1000 / 100)
    assert a.enrichment[1:].tolist() == [0.0, 0.0, 0.0]
    assert a.p[0] < 1e-40
    assert a.p[1:].tolist() == [1.0, 1.0, 1.0]
    assert a.best_p == a.p[0]
    assert a.p_bonferroni[0] == pytest.approx(4 * a.p[0])


def test_hypergeometric_p_matches_brute_force_sum(rng):
    networks = (rng.random((5, 60)) < rng.uniform(0.1, 0.6, (5, 1))).astype(float)
    fbn = rng.standard_normal(60) + 2 * networks[2]
    a = annotate(fbn, networks, list('abcde'), fraction=0.2)
    assert a.n_top == 12
    expected = [
        _exact_upper_tail(60, int(n.sum()), 12, int(o))
        for n, o in zip(networks, a.overlap, strict=True)
    ]
    np.testing.assert_allclose(a.p, expected, rtol=1e-9)
    np.testing.assert_allclose(a.p_bonferroni, np.minimum(1, 5 * np.array(expected)))


def test_bonferroni_turns_a_borderline_p_into_none():
    # |M| = 100, |F| = 5, |N| = 5, overlap 2.
    network = np.zeros((1, 100))
    network[0, [0, 1, 10, 11, 12]] = 1
    fbn = np.zeros(100)
    fbn[[0, 1, 2, 3, 4]] = [5, 4, 3, 2, 1]
    alone = annotate(fbn, network, ['A'])
    assert 0.005 < alone.p[0] < 0.05  # significant alone, not after 10 tests
    assert alone.label == 'A'
    others = np.zeros((9, 100))
    others[np.arange(9), 20 + np.arange(9)] = 1  # one voxel each, none in F
    crowded = annotate(fbn, np.vstack([network, others]), ['A', *'bcdefghi', 'j'])
    assert crowded.p[0] == alone.p[0]
    assert crowded.best_network == 'A'
    assert crowded.p_bonferroni[0] == pytest.approx(10 * alone.p[0])
    assert crowded.label == NO_LABEL


def test_all_zero_map_is_unlabelled_with_nan_p():
    networks = _partition([10, 30])
    a = annotate(np.zeros(40), networks, ['A', 'B'])
    assert a.label == NO_LABEL
    assert a.n_top == 0
    assert np.isnan(a.p).all()
    assert np.isnan(a.p_bonferroni).all()
    assert np.isnan(a.enrichment).all()
    assert math.isnan(a.best_p)
    assert a.dice.tolist() == [0.0, 0.0]
    assert np.isnan(a.correlation).all()  # a constant map
    assert a.best_network == NO_LABEL


def test_dice_and_correlation_for_exact_overlap():
    networks = np.zeros((3, 100))
    networks[0, :5] = 1
    networks[1, 5:10] = 1  # disjoint, same size
    fbn = networks[0].copy()  # F = N exactly: 5 non-zero voxels, ceil(5% of 100) = 5
    a = annotate(fbn, networks, ['A', 'B', 'empty'])
    assert a.dice[:2].tolist() == [1.0, 0.0]
    assert a.correlation[0] == pytest.approx(1.0)
    assert a.correlation[1] == pytest.approx(-5 / 95)  # two disjoint indicators of 5 in 100
    # A network with no voxel in the mask: no enrichment, p 1, constant so no correlation.
    assert np.isnan(a.enrichment[2])
    assert a.p[2] == 1.0
    assert np.isnan(a.correlation[2])
    assert a.dice[2] == 0.0


def test_probabilistic_membership_is_at_least_half():
    networks = np.zeros((1, 20))
    networks[0, :4] = [1.0, 0.5, 0.49, 0.2]
    a = annotate(np.r_[1.0, np.zeros(19)], networks, ['P'])
    assert a.size.tolist() == [2]
    assert a.enrichment[0] == pytest.approx(20 / 2)


def test_rows_and_table_carry_the_scores(rng):
    networks = _partition([10, 10, 20])
    fbn = networks[1] + 0.01 * rng.standard_normal(40)
    a = annotate(fbn, networks, ['A', 'B', 'C'], fraction=0.25)
    rows = a.rows()
    assert [r['network'] for r in rows] == ['A', 'B', 'C']
    assert [r['is_label'] for r in rows] == [False, True, False]
    assert rows[1]['overlap'] == 10
    assert rows[1]['enrichment'] == pytest.approx(4.0)
    table = annotations_table([a, annotate(np.zeros(40), networks, 'ABC')], [3, 9])
    assert [(r['unit'], r['label'], r['best_network']) for r in table] == [
        (3, 'B', 'B'),
        (9, NO_LABEL, NO_LABEL),
    ]
    assert table[0]['p'] == a.p[1]


# ------------------------------------------------------------------------------ spheres


def _brute_sphere(centre, radius, affine, shape):
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing='ij'), axis=-1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - centre, axis=1) <= radius
    return set(np.ravel_multi_index(tuple(ijk[inside].T), shape).tolist())


@pytest.mark.parametrize('radius', [3.0, 4.5, 5.0])
def test_sphere_covers_the_voxels_within_its_radius_on_1mm(radius):
    affine = np.eye(4)
    affine[:3, 3] = [-10, -12, -9]
    shape = (21, 25, 19)
    centre = np.array([0.3, -0.4, 1.2])
    rois = sphere_rois(centre[None], np.array([radius]), affine, shape)
    got = set(np.flatnonzero(rois.ravel() == 0).tolist())
    expected = _brute_sphere(centre, radius, affine, shape)
    assert got == expected
    assert len(got) > 4 / 3 * np.pi * (radius - 1) ** 3


def test_sphere_on_a_rotated_anisotropic_grid():
    angle = np.deg2rad(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.5, 2.0])
    affine[:3, 3] = [-5, -15, -12]
    shape = (30, 20, 14)
    centre = np.array([2.0, 3.0, 1.0])
    rois = sphere_rois(centre[None], np.array([6.0]), affine, shape)
    assert set(np.flatnonzero(rois.ravel() == 0).tolist()) == _brute_sphere(
        centre, 6.0, affine, shape
    )


def test_every_roi_gets_a_voxel_on_a_coarse_grid(rng):
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    shape = (20, 20, 20)
    centres = rng.uniform(8, 72, (60, 3))
    radii = rng.uniform(1.0, 2.5, 60)  # most spheres hold no voxel centre at 4 mm
    rois = sphere_rois(centres, radii, affine, shape)
    counts = np.bincount(rois[rois >= 0], minlength=60)
    assert (counts >= 1).all()
    network_index = rng.integers(0, 4, 60)
    maps = sphere_labels(centres, radii, network_index, affine, shape)
    assert maps.shape == (4, *shape)
    assert maps.sum(axis=0).max() == 1.0  # each voxel in at most one network
    expected = np.zeros_like(maps)
    inside = np.nonzero(rois >= 0)
    expected[(network_index[rois[inside]], *inside)] = 1
    np.testing.assert_array_equal(maps, expected)


def test_shared_voxels_go_to_the_nearest_centre():
    centres = np.array([[0.0, 0, 0], [5.0, 0, 0]])
    rois = sphere_rois(centres, np.array([4.0, 4.0]), np.eye(4), (6, 1, 1))
    # x = 1..4 lie in both spheres: 1, 2 nearer ROI 0; 3, 4 nearer ROI 1.
    assert rois.ravel().tolist() == [0, 0, 0, 1, 1, 1]
    tie = sphere_rois(np.array([[0.0, 0, 0], [4.0, 0, 0]]), np.array([3.0, 3.0]), np.eye(4),
                      (5, 1, 1))  # fmt: skip
    assert tie.ravel().tolist() == [0, 0, 0, 1, 1]  # x = 2 is equidistant: the first ROI


def test_mask_keeps_rois_inside_and_the_coarse_voxel_moves_into_it():
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[2:, :, :] = True
    centre = np.array([[7.0, 8.0, 8.0]])  # nearest voxel (x = 8 mm, i = 2) is in the mask
    assert np.argwhere(sphere_rois(centre, [1.0], affine, (5, 5, 5), mask) == 0).tolist() == [
        [2, 2, 2]
    ]
    centre = np.array([[5.0, 8.0, 8.0]])  # nearest voxel (i = 1) is outside: take i = 2
    assert np.argwhere(sphere_rois(centre, [1.0], affine, (5, 5, 5), mask) == 0).tolist() == [
        [2, 2, 2]
    ]
    far = np.array([[-40.0, 8.0, 8.0]])  # off the grid altogether
    assert (sphere_rois(far, [5.0], affine, (5, 5, 5), mask) == -1).all()


def test_shape_errors_are_programming_errors():
    with pytest.raises(ValueError, match='networks must be'):
        annotate(np.zeros(5), np.zeros((2, 4)), ['a', 'b'])
    with pytest.raises(ValueError, match='names'):
        annotate(np.zeros(5), np.zeros((2, 5)), ['a'])
    with pytest.raises(ValueError, match='network_index'):
        sphere_labels(np.zeros((2, 3)), [1, 1], [0, -1], np.eye(4), (3, 3, 3))
