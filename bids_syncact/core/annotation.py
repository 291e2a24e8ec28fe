"""Annotation of a unit's FBN with the reference brain network it matches (DESIGN.md 2.5).

The FBN (participant: the unit's coefficients; group: the group statistic) is thresholded at its
top ``TOP_FRACTION`` of ``|values|`` within the brain mask ``M``; that set ``F`` is compared with
each reference network ``N`` (its voxels in ``M``) by

* enrichment ``(|F & N| / |F|) / (|N| / |M|)``, 1 when ``F`` falls on ``N`` by chance;
* a one-sided hypergeometric p, ``P(X >= |F & N|)`` for ``|F|`` draws without replacement from
  ``|M|`` voxels of which ``|N|`` are in the network;
* for reference only, the Dice coefficient of ``F`` and ``N`` and the spatial (Pearson)
  correlation of the signed FBN with the network's membership or probability map.

All of these are descriptive. The hypergeometric p treats voxels as independent, so spatially
smooth maps make it far too small (Markello and Misic 2021, NeuroImage 236); ``Annotation.label``
(the smallest p when its Bonferroni p is below ``LABEL_LEVEL``) is kept for reference and never
labels an output: the labels come from :mod:`bids_syncact.core.calibration`, which tests the
statistic against the data's own null maps.

:func:`sphere_labels` rasterises ROI spheres (coordinate atlases such as Seitzman 2018) into
network membership maps on a voxel grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import hypergeom

#: Fraction of the mask's voxels, by largest ``|value|``, that makes the thresholded FBN ``F``.
TOP_FRACTION = 0.05
#: Family-wise level of the label, after Bonferroni over the networks.
LABEL_LEVEL = 0.05
#: Label of an FBN that matches no network.
NO_LABEL = 'none'
#: A voxel belongs to a network when its membership or probability is at least this.
MEMBERSHIP_THRESHOLD = 0.5
#: Slack (mm) when testing whether a voxel centre lies on a sphere's surface.
_SPHERE_ATOL_MM = 1e-6


def top_voxels(fbn: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Return the thresholded FBN ``F``: the voxels of largest ``|value|``, as a boolean mask.

    Parameters
    ----------
    fbn : ndarray of shape (n_voxels,)
        The FBN over the brain mask ``M`` (signed; negative values count by magnitude).
    fraction : float
        ``F`` holds ``k = ceil(fraction * n_voxels)`` voxels (a product within 1e-9 of an
        integer counts as that integer, so ``0.05 * 60`` gives 3, not 4).

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
        Only finite, non-zero voxels are eligible: a sparse map with fewer than ``k`` of them
        gives them all, an all-zero map gives an empty ``F``. Ties at the cut are all included
        (``F`` is every eligible voxel with ``|value| >= `` the ``k``-th largest ``|value|``), so
        ``F`` does not depend on the order of the voxels and may hold more than ``k`` of them.

    Examples
    --------
    >>> top_voxels(np.array([0.1, -3.0, 2.0, 0.0, 0.5]), fraction=0.4).tolist()
    [False, True, True, False, False]
    >>> top_voxels(np.array([1.0, 2.0, 2.0, 0.5]), fraction=0.25).tolist()
    [False, True, True, False]
    >>> top_voxels(np.zeros(4)).any()
    np.False_
    """
    fbn = np.asarray(fbn, dtype=np.float64)
    if fbn.ndim != 1:
        raise ValueError(f'fbn must be 1-D (n_voxels,), not of shape {fbn.shape}')
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'fraction must be in (0, 1], not {fraction}')
    magnitude = np.abs(fbn)
    eligible = np.isfinite(magnitude) & (magnitude > 0)
    n_top = math.ceil(fraction * fbn.size - 1e-9)
    if eligible.sum() <= n_top:
        return eligible
    cut = np.partition(magnitude[eligible], -n_top)[-n_top]
    return eligible & (magnitude >= cut)


@dataclass(frozen=True, eq=False)
class Annotation:
    """The comparison of one FBN with each reference network, and its label.

    Per-network arrays are in the order of ``networks``. NaN policy: with an empty ``F`` (an
    all-zero map) ``enrichment``, ``p``, ``p_bonferroni`` and ``best_p`` are NaN, ``dice`` is 0
    for non-empty networks and the label is ``NO_LABEL``; a network with no voxel in the mask has
    NaN enrichment, p 1 and NaN correlation; ``correlation`` is NaN when the FBN or the network
    map is constant over the mask; ``dice`` is NaN only when both ``F`` and ``N`` are empty.

    Attributes
    ----------
    label : str
        The network with the smallest p when its Bonferroni p is below the level, else
        ``NO_LABEL``.
    networks : tuple of str
        Network names.
    n_mask : int
        ``|M|``, voxels in the mask.
    n_top : int
        ``|F|``, voxels in the thresholded FBN.
    size : ndarray of int, shape (n_networks,)
        ``|N|``, voxels of each network in the mask.
    overlap : ndarray of int, shape (n_networks,)
        ``|F & N|``.
    enrichment : ndarray of float, shape (n_networks,)
        ``(|F & N| / |F|) / (|N| / |M|)``.
    p : ndarray of float, shape (n_networks,)
        One-sided hypergeometric ``P(X >= |F & N|)``.
    p_bonferroni : ndarray of float, shape (n_networks,)
        ``min(1, p * n_networks)``.
    dice : ndarray of float, shape (n_networks,)
        ``2 |F & N| / (|F| + |N|)``.
    correlation : ndarray of float, shape (n_networks,)
        Pearson r of the signed FBN and the network's map over the mask's finite FBN voxels.
    best_p : float
        The smallest uncorrected p (NaN for an empty ``F``).
    """

    label: str
    networks: tuple[str, ...]
    n_mask: int
    n_top: int
    size: np.ndarray
    overlap: np.ndarray
    enrichment: np.ndarray
    p: np.ndarray
    p_bonferroni: np.ndarray
    dice: np.ndarray
    correlation: np.ndarray
    best_p: float

    @property
    def best_network(self) -> str:
        """Return the network with the smallest p (first in order on ties), or ``NO_LABEL``."""
        if self.n_top == 0 or not len(self.networks):
            return NO_LABEL
        return self.networks[_best(self.p, self.enrichment)]

    def rows(self) -> list[dict[str, object]]:
        """Return one table row per network: its name, sizes, scores and whether it is the label.

        >>> a = annotate(np.array([1.0, 0.0, 0.0, 0.0]), np.eye(2, 4), ['A', 'B'], fraction=0.25)
        >>> [(r['network'], r['overlap'], r['enrichment'], r['is_label']) for r in a.rows()]
        [('A', 1, 4.0, False), ('B', 0, 0.0, False)]
        """
        return [
            {
                'network': name,
                'size': int(self.size[i]),
                'overlap': int(self.overlap[i]),
                'enrichment': float(self.enrichment[i]),
                'p': float(self.p[i]),
                'p_bonferroni': float(self.p_bonferroni[i]),
                'dice': float(self.dice[i]),
                'correlation': float(self.correlation[i]),
                'is_label': name == self.label,
            }
            for i, name in enumerate(self.networks)
        ]

    def summary(self) -> dict[str, object]:
        """Return one row: the label, ``|F|`` and the scores of the best network."""
        best = self.best_network
        i = self.networks.index(best) if best in self.networks else None

        def pick(values: np.ndarray) -> float:
            return float('nan') if i is None else float(values[i])

        return {
            'label': self.label,
            'n_top': self.n_top,
            'best_network': best,
            'p': self.best_p,
            'p_bonferroni': pick(self.p_bonferroni),
            'enrichment': pick(self.enrichment),
            'dice': pick(self.dice),
            'correlation': pick(self.correlation),
        }


def annotate(
    fbn: np.ndarray,
    networks: np.ndarray,
    names: Sequence[str],
    *,
    fraction: float = TOP_FRACTION,
    level: float = LABEL_LEVEL,
) -> Annotation:
    """Compare an FBN with reference networks and label it (DESIGN.md 2.5).

    Parameters
    ----------
    fbn : ndarray of shape (n_voxels,)
        The FBN over the brain mask ``M``; non-finite voxels are never in ``F`` and are left
        out of the correlation.
    networks : ndarray of shape (n_networks, n_voxels)
        Membership (binary, from label atlases) or probability maps in [0, 1] over ``M``. A
        voxel is in network ``N`` when its value is at least ``MEMBERSHIP_THRESHOLD`` (0.5);
        the correlation uses the maps as given.
    names : sequence of str
        Network names, one per row of ``networks``.
    fraction : float
        Top fraction of ``|fbn|`` that makes ``F`` (:func:`top_voxels`).
    level : float
        The label needs ``min(1, p * n_networks) < level``.

    Returns
    -------
    Annotation
        See :class:`Annotation` for the NaN policy.

    Examples
    --------
    >>> nets = np.zeros((2, 100))
    >>> nets[0, :20] = nets[1, 20:60] = 1
    >>> a = annotate(np.r_[np.ones(5), np.zeros(95)], nets, ['A', 'B'])
    >>> a.label, a.n_top, a.overlap.tolist(), a.enrichment.tolist()
    ('A', 5, [5, 0], [5.0, 0.0])
    """
    fbn = np.asarray(fbn, dtype=np.float64)
    networks = np.asarray(networks, dtype=np.float64)
    names = tuple(str(n) for n in names)
    if fbn.ndim != 1:
        raise ValueError(f'fbn must be 1-D (n_voxels,), not of shape {fbn.shape}')
    if networks.ndim != 2 or networks.shape[1] != fbn.size:
        raise ValueError(
            f'networks must be (n_networks, {fbn.size}), not of shape {networks.shape}'
        )
    if len(names) != networks.shape[0]:
        raise ValueError(f'{len(names)} names for {networks.shape[0]} networks')
    n_networks, n_mask = networks.shape
    top = top_voxels(fbn, fraction)
    n_top = int(top.sum())
    member = networks >= MEMBERSHIP_THRESHOLD
    size = member.sum(axis=1).astype(np.int64)
    overlap = (member & top).sum(axis=1).astype(np.int64)

    with np.errstate(invalid='ignore', divide='ignore'):
        if n_top:
            enrichment = (overlap / n_top) / (size / n_mask)
            enrichment[size == 0] = np.nan
            p = hypergeom.sf(overlap - 1, n_mask, size, n_top).astype(np.float64)
            p[size == 0] = 1.0
            p = np.clip(p, 0.0, 1.0)
        else:
            enrichment = np.full(n_networks, np.nan)
            p = np.full(n_networks, np.nan)
        p_bonferroni = np.minimum(1.0, p * n_networks)
        dice = 2.0 * overlap / (n_top + size)
    correlation = _correlations(fbn, networks)

    if n_top and n_networks:
        best = _best(p, enrichment)
        best_p = float(p[best])
        label = names[best] if p_bonferroni[best] < level else NO_LABEL
    else:
        best_p = float('nan')
        label = NO_LABEL
    return Annotation(
        label=label,
        networks=names,
        n_mask=int(n_mask),
        n_top=n_top,
        size=size,
        overlap=overlap,
        enrichment=enrichment,
        p=p,
        p_bonferroni=p_bonferroni,
        dice=dice,
        correlation=correlation,
        best_p=best_p,
    )


def _best(p: np.ndarray, enrichment: np.ndarray) -> int:
    """Return the network with the smallest p; ties (p underflows to 0) to the larger enrichment.

    >>> _best(np.array([0.0, 0.0, 0.3]), np.array([2.0, 5.0, 9.0]))
    1
    """
    order = np.lexsort((-np.nan_to_num(enrichment, nan=-np.inf), np.nan_to_num(p, nan=np.inf)))
    return int(order[0])


def annotations_table(
    annotations: Sequence[Annotation], units: Sequence[object], *, key: str = 'unit'
) -> list[dict[str, object]]:
    """Return one row per unit: ``key`` then :meth:`Annotation.summary` (pandas-free).

    >>> a = annotate(np.array([1.0, 0.0, 0.0, 0.0]), np.eye(1, 4), ['A'], fraction=0.25)
    >>> [(r['unit'], r['label'], r['best_network']) for r in annotations_table([a], [7])]
    [(7, 'none', 'A')]
    """
    if len(annotations) != len(units):
        raise ValueError(f'{len(annotations)} annotations for {len(units)} units')
    return [{key: u, **a.summary()} for u, a in zip(units, annotations, strict=True)]


def _correlations(fbn: np.ndarray, networks: np.ndarray) -> np.ndarray:
    """Return the Pearson r of ``fbn`` with each row of ``networks`` over finite ``fbn``."""
    finite = np.isfinite(fbn)
    x = fbn[finite] - fbn[finite].mean() if finite.any() else fbn[finite]
    y = networks[:, finite]
    y = y - y.mean(axis=1, keepdims=True)
    norm_x = np.sqrt(x @ x)
    norm_y = np.sqrt(np.einsum('ij,ij->i', y, y))
    out = np.full(networks.shape[0], np.nan)
    if x.size < 2 or norm_x <= 1e-12 * max(1.0, np.abs(fbn[finite]).max()):
        return out
    ok = norm_y > 1e-12
    out[ok] = np.clip((y[ok] @ x) / (norm_x * norm_y[ok]), -1.0, 1.0)
    return out


def sphere_rois(
    centres_mm: np.ndarray,
    radii_mm: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Rasterise ROI spheres on a voxel grid: the ROI that each voxel belongs to.

    A voxel belongs to an ROI when its centre lies within the ROI's radius of the ROI's centre
    (and in ``mask``). A voxel within the spheres of several ROIs goes to the ROI with the
    nearest centre (the first ROI in order on exact ties). Coarse grids: an ROI whose sphere
    holds no voxel centre gets the voxel nearest its centre, when that voxel touches the sphere
    (its centre within the radius plus half the voxel's diagonal). An ROI left with no voxel
    after that (its voxels are all nearer other ROIs' centres) takes, in order of ROIs, the
    nearest voxel touching its sphere that is free or whose ROI keeps another voxel. Only an
    ROI whose touching voxels are all the last voxel of another ROI, or whose sphere misses the
    grid (or mask) altogether, ends up with none.

    Parameters
    ----------
    centres_mm : ndarray of shape (n_roi, 3)
        ROI centres in world (scanner, e.g. MNI) coordinates, mm.
    radii_mm : ndarray of shape (n_roi,)
        ROI radii, mm.
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine of the grid.
    shape : sequence of 3 int
        Grid shape.
    mask : ndarray of bool with shape ``shape``, optional
        Voxels that may belong to an ROI (all when None).

    Returns
    -------
    ndarray of int, shape ``shape``
        The ROI index of each voxel, -1 for none.

    Examples
    --------
    >>> rois = sphere_rois(np.array([[0.0, 0, 0], [4, 0, 0]]), np.array([1.0, 1]), np.eye(4),
    ...                    (5, 1, 1))
    >>> rois.ravel().tolist()
    [0, 0, -1, 1, 1]
    """
    centres_mm = np.atleast_2d(np.asarray(centres_mm, dtype=np.float64))
    radii_mm = np.broadcast_to(np.asarray(radii_mm, dtype=np.float64), (len(centres_mm),))
    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(s) for s in shape)
    if centres_mm.shape[1:] != (3,) or len(shape) != 3 or affine.shape != (4, 4):
        raise ValueError('centres_mm must be (n_roi, 3), shape 3 ints and affine (4, 4)')
    allowed = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if allowed.shape != shape:
        raise ValueError(f'mask of shape {allowed.shape} for a grid of shape {shape}')
    linear = affine[:3, :3]
    to_voxel = np.linalg.inv(linear)
    corners = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=np.float64)
    half_diagonal = 0.5 * np.linalg.norm(corners @ linear.T, axis=1).max()
    row_norms = np.linalg.norm(to_voxel, axis=1)
    upper = np.array(shape) - 1

    # Candidate (voxel, roi, distance) claims of every ROI, and the voxels touching its sphere.
    voxels, owners, distances = [], [], []
    touching: dict[int, np.ndarray] = {}
    for roi, (centre, radius) in enumerate(zip(centres_mm, radii_mm, strict=True)):
        centre_vox = to_voxel @ (centre - affine[:3, 3])
        reach = (radius + half_diagonal) * row_norms
        low = np.maximum(np.floor(centre_vox - reach), 0).astype(int)
        high = np.minimum(np.ceil(centre_vox + reach), upper).astype(int)
        if np.any(high < low):
            continue
        axes = [np.arange(lo, hi + 1) for lo, hi in zip(low, high, strict=True)]
        grid = np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1).reshape(-1, 3)
        grid = grid[allowed[tuple(grid.T)]]
        dist = np.linalg.norm(grid @ linear.T + affine[:3, 3] - centre, axis=1)
        near = dist <= radius + half_diagonal + _SPHERE_ATOL_MM
        if not near.any():
            continue
        flat = np.ravel_multi_index(tuple(grid.T), shape)
        by_distance = np.flatnonzero(near)[np.argsort(dist[near], kind='stable')]
        touching[roi] = flat[by_distance]
        inside = dist <= radius + _SPHERE_ATOL_MM
        claim = np.flatnonzero(inside) if inside.any() else by_distance[:1]
        voxels.append(flat[claim])
        owners.append(np.full(claim.size, roi))
        distances.append(dist[claim])
    labels = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    if not voxels:
        return labels.reshape(shape)
    voxel = np.concatenate(voxels)
    owner = np.concatenate(owners)
    distance = np.concatenate(distances)

    # Nearest centre wins each voxel; ties go to the first ROI.
    order = np.lexsort((owner, distance, voxel))
    first = np.r_[True, voxel[order][1:] != voxel[order][:-1]]
    labels[voxel[order][first]] = owner[order][first]

    # An ROI left with none takes the nearest voxel touching its sphere that is free or whose
    # ROI keeps another voxel.
    counts = np.bincount(labels[labels >= 0], minlength=len(centres_mm))
    for roi, candidates in touching.items():
        if counts[roi]:
            continue
        for v in candidates:
            holder = labels[v]
            if holder < 0 or counts[holder] >= 2:
                labels[v] = roi
                counts[roi] += 1
                if holder >= 0:
                    counts[holder] -= 1
                break
    return labels.reshape(shape)


def sphere_labels(
    centres_mm: np.ndarray,
    radii_mm: np.ndarray,
    network_index: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    mask: np.ndarray | None = None,
    *,
    n_networks: int | None = None,
) -> np.ndarray:
    """Rasterise ROI spheres into one binary membership map per network.

    Each voxel goes to at most one ROI (:func:`sphere_rois`: nearest centre wins; every ROI
    that touches the grid gets at least one voxel where it can), and so to at most one network.

    Parameters
    ----------
    centres_mm, radii_mm, affine, shape, mask
        As for :func:`sphere_rois`.
    network_index : ndarray of int, shape (n_roi,)
        The network of each ROI, ``0 <= index < n_networks``.
    n_networks : int, optional
        Networks (default ``max(network_index) + 1``).

    Returns
    -------
    ndarray of float32, shape (n_networks, *shape)
        1 where the voxel belongs to the network, else 0.

    Examples
    --------
    >>> maps = sphere_labels(np.array([[0.0, 0, 0], [4, 0, 0]]), np.array([1.0, 1]),
    ...                      np.array([1, 0]), np.eye(4), (5, 1, 1))
    >>> maps.reshape(2, 5).tolist()
    [[0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]]
    """
    network_index = np.asarray(network_index, dtype=np.int64)
    if network_index.shape != (len(np.atleast_2d(centres_mm)),):
        raise ValueError(f'network_index of shape {network_index.shape} for the ROIs')
    if n_networks is None:
        n_networks = int(network_index.max()) + 1 if network_index.size else 0
    if network_index.size and (network_index.min() < 0 or network_index.max() >= n_networks):
        raise ValueError(f'network_index must be in [0, {n_networks})')
    rois = sphere_rois(centres_mm, radii_mm, affine, shape, mask)
    maps = np.zeros((n_networks, *rois.shape), dtype=np.float32)
    voxels = np.nonzero(rois >= 0)
    maps[(network_index[rois[voxels]], *voxels)] = 1.0
    return maps
