"""One layer's functional brain networks: clean ``D``, choose alpha, solve, test (DESIGN.md 2.3-2.4).

:func:`fit_layer` takes each run's raw synchronized activations and the cleaned, stacked BOLD, and
returns row ``k`` of the codes as the FBN of unit ``k``, with what the sidecars record about it:
the alpha and its cross-validation curve, the condition number of ``D'D``, each unit's variance
inflation, and with nulls the z map and the per-unit family-wise thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bids_syncact.core import _nullsolve
from bids_syncact.core.calibration import LABEL_STATISTICS, network_statistics
from bids_syncact.core.coupling import condition_number, sparse_code, variance_inflation
from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.core.nulls import draw_shifts, empirical_p, fwe_threshold, p_to_z
from bids_syncact.core.selection import AlphaChoice, choose_alpha


@dataclass(frozen=True, eq=False)
class LayerFit:
    """The FBNs of one layer and what is known about them."""

    codes: np.ndarray
    """``(K, V)`` float32: row ``k`` is the FBN of unit ``k``."""
    alpha: float
    alpha_choice: AlphaChoice | None
    """The cross-validation behind ``alpha``; None when it was given."""
    condition_number: float
    """Of ``D'D`` (cleaned, stacked ``D``)."""
    variance_inflation: np.ndarray
    """``(K,)``: each unit's VIF in ``D``."""
    zero_units: np.ndarray
    """``(K,)`` bool: units whose cleaned activations are all zero (constant or explained by the
    confounds); their maps are zero."""
    z: np.ndarray | None = None
    """``(K, V)`` float32 z of the empirical p-values; None without nulls."""
    fwe_threshold: np.ndarray | None = None
    """``(K,)``: ``|a|`` above which a coefficient is significant family-wise."""
    shifts: np.ndarray | None = None
    """``(n_nulls, n_runs)`` circular shifts (volumes) of the nulls."""
    max_null: np.ndarray | None = None
    """``(n_nulls, K)``: the largest ``|null coefficient|`` over voxels, per null and unit."""
    network_stats: np.ndarray | None = None
    """``(1 + n_nulls, K, n_networks)``: the group's annotation statistic
    (:data:`~bids_syncact.core.calibration.GROUP_STATISTIC`) of the real maps (index 0) and of
    every null map (:func:`~bids_syncact.core.calibration.network_statistics`); None without
    reference networks."""
    subject_stats: np.ndarray | None = None
    """Like ``network_stats``, the subject-level label's statistic
    (:data:`~bids_syncact.core.calibration.SUBJECT_STATISTIC`)."""
    seconds_per_null: float | None = None


def clean_dictionary(raw_runs: Sequence[np.ndarray], specs: Sequence[CleanSpec]) -> np.ndarray:
    """Return ``D`` ``(T, K)``: each run cleaned exactly as its BOLD was, then stacked.

    Parameters
    ----------
    raw_runs : sequence of ndarray of shape (n_vols_r, K)
        Synchronized activations of each run over all stored volumes.
    specs : sequence of CleanSpec
        The runs' cleaning, the one their BOLD went through.
    """
    if len(raw_runs) != len(specs):
        raise ValueError(f'{len(raw_runs)} runs of activations for {len(specs)} clean specs')
    return concatenate_runs([clean(raw, spec) for raw, spec in zip(raw_runs, specs, strict=True)])


def sample_clock(specs: Sequence[CleanSpec]) -> tuple[np.ndarray, np.ndarray]:
    """Return each kept sample's time on its run's clock (s) and its run index, runs stacked.

    What :func:`~bids_syncact.core.selection.choose_alpha` cuts its blocks and gaps by.

    >>> spec = CleanSpec(n_vols=14, t_r=2.0, sample_mask=np.arange(2, 14))
    >>> times, runs = sample_clock([spec, spec])
    >>> times[:3].tolist(), runs[[0, 12]].tolist()
    ([4.0, 6.0, 8.0], [0, 1])
    """
    times = np.concatenate([spec.sample_mask * spec.t_r for spec in specs])
    runs = np.concatenate([np.full(spec.n_kept, r) for r, spec in enumerate(specs)])
    return times, runs


def fit_layer(
    raw_runs: Sequence[np.ndarray],
    specs: Sequence[CleanSpec],
    S: np.ndarray,
    *,
    alpha: float | None,
    n_nulls: int = 0,
    seed: int = 0,
    device: str = 'cpu',
    n_threads: int | None = None,
    networks: np.ndarray | None = None,
    annotated: np.ndarray | None = None,
    label_statistics: tuple[str, str] = LABEL_STATISTICS,
) -> LayerFit:
    """Return the FBNs of one layer's units.

    Parameters
    ----------
    raw_runs : sequence of ndarray of shape (n_vols_r, K)
        Each run's synchronized activations over its stored volumes (dummies included).
    specs : sequence of CleanSpec
        Each run's cleaning (confounds, sample mask, filter), as applied to ``S``.
    S : ndarray of shape (T, V)
        Cleaned BOLD of the runs, stacked (unit-norm columns); may be a memmap.
    alpha : float or None
        Sparsity; None chooses it by blocked cross-validation (:func:`choose_alpha`).
    n_nulls : int
        Circularly shifted dictionaries for the empirical p-values; 0: none.
    seed : int
        Seeds the voxels scored by cross-validation and the null shifts.
    device, n_threads
        Passed to the solver.
    networks : ndarray of shape (n_networks, n_annotated), optional
        Reference networks over the voxels ``annotated``: the real and every null map are
        compared with them (``network_stats``), since the null maps themselves are not kept.
    annotated : ndarray of bool, shape (V,), optional
        The voxels of ``S`` that the annotation counts (default all).
    label_statistics : (str, str)
        The group's and the subject-level label's statistics
        (:func:`~bids_syncact.core.calibration.network_statistics`), for ``network_stats`` and
        ``subject_stats``.

    Returns
    -------
    LayerFit

    Notes
    -----
    Each null shifts every run's raw ``D`` (all stored volumes) circularly, then cleans it with
    the run's own spec and solves at the alpha of the real data. Choosing alpha again for every
    null would cost five cross-validated paths each, and alpha only sets the scale that both
    sides share. On the CPU the nulls are solved in batches of about 1 GB of null maps, ``S``
    read once per batch (:mod:`bids_syncact.core._nullsolve`); on CUDA one by one. Either way
    the same results as solving each null alone.
    """
    D = clean_dictionary(raw_runs, specs)
    if len(D) != S.shape[0]:
        raise ValueError(f'D has {len(D)} samples and S {S.shape[0]}')
    zero_units = ~np.any(D != 0, axis=0)
    choice = None
    if alpha is None:
        times, runs = sample_clock(specs)
        choice = choose_alpha(D, S, times, runs, seed=seed, device=device, n_threads=n_threads)
        alpha = choice.alpha
    codes = sparse_code(D, S, alpha, device=device, n_threads=n_threads)
    fit = LayerFit(
        codes=codes, alpha=float(alpha), alpha_choice=choice,
        condition_number=condition_number(D[:, ~zero_units]),
        variance_inflation=_vif(D, zero_units), zero_units=zero_units,
    )  # fmt: skip
    annotated = np.ones(codes.shape[1], dtype=bool) if annotated is None else annotated

    def network_stats(maps: np.ndarray) -> np.ndarray:
        # both statistics side by side: (n_maps, 2 * n_networks)
        part = maps[:, annotated]
        return np.concatenate([network_statistics(part, networks, statistic=name)
                               for name in label_statistics], axis=-1)  # fmt: skip

    def split(stats: np.ndarray) -> dict:
        n_networks = len(networks)
        return {'network_stats': stats[..., :n_networks], 'subject_stats': stats[..., n_networks:]}

    if networks is not None:
        fit = replace(fit, **split(network_stats(codes)[None]))
    if n_nulls <= 0:
        return fit
    shifts = draw_shifts([len(raw) for raw in raw_runs], [s.t_r for s in specs], n_nulls,
                         seed=seed, names=[s.name for s in specs])  # fmt: skip
    statistics = None if networks is None else network_stats
    start = time.perf_counter()
    if device == 'cpu':
        tally = _nullsolve.batched(raw_runs, specs, S, alpha, shifts, codes,
                                   statistics=statistics, n_threads=n_threads)  # fmt: skip
    else:
        tally = _nullsolve.per_null(raw_runs, specs, S, alpha, shifts, codes,
                                    statistics=statistics, device=device, n_threads=n_threads)  # fmt: skip
    seconds = (time.perf_counter() - start) / n_nulls
    z = p_to_z(empirical_p(tally.exceed, n_nulls), n_nulls).astype(np.float32)
    stats = (
        {}
        if networks is None
        else split(
            np.concatenate(
                [np.concatenate([fit.network_stats, fit.subject_stats], axis=-1), tally.stats]
            )
        )
    )
    return replace(fit, z=z, fwe_threshold=fwe_threshold(tally.max_null), shifts=shifts,
                   max_null=tally.max_null, seconds_per_null=seconds, **stats)  # fmt: skip


def _vif(D: np.ndarray, zero_units: np.ndarray) -> np.ndarray:
    vif = np.full(D.shape[1], np.nan)
    vif[~zero_units] = variance_inflation(D[:, ~zero_units])
    return vif
