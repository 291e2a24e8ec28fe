"""A layer's unit clusters from the feature cache, and what the outputs say about them.

The clusters depend on the stimuli alone (DESIGN.md section 2.4): every subject who saw the
same stimulus files gets the same clusters, whatever their onsets, TR or dummy volumes, so the
group level can pair their maps. The sync tables keep one column per member of a kept cluster;
the coupling forms the representatives from them with the weights recorded in the sidecar
(synchronizing is linear, so that equals synchronizing the representative).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_syncact.bids.cache import Features
from bids_syncact.bids.derivatives import unit_column
from bids_syncact.core.clusters import (
    Linkage,
    UnitClusters,
    cluster_units,
    representative_weights,
    stimulus_series,
)
from bids_syncact.errors import InputDataError

LOGGER = logging.getLogger('bids_syncact.features')
#: The high-pass of the stimulus series when cosine regressors do the coupling's high-pass.
DEFAULT_HIGH_PASS_HZ = 0.008
#: The sync sidecar's keys that say what a volume is (copied into the maps' sidecars).
CLUSTER_KEYS = ('UnitColumns', 'UnitIndices', 'UnitClusters', 'UnitClusterSigns',
                'UnitClusterMinCorrelation', 'UnitClusterMaxCrossCorrelation',
                'UnitClusterWeights')  # fmt: skip
#: Identical for subjects with the same clusters: what the group sidecars repeat, not compare.
CLUSTER_STATS = ('UnitClusterMinCorrelation', 'UnitClusterMaxCrossCorrelation')
#: Fewest samples of the stimulus series (seconds of movie, or still images) that clustering
#: needs: with fewer, correlations are meaningless (two images correlate every pair at |r| 1).
MIN_SERIES_SAMPLES = 20
#: Linkage of the clustering (issue 19's table: only complete linkage bounds |r| inside).
LINKAGE: Linkage = 'complete'


@dataclass(frozen=True)
class LayerClusters:
    """The kept clusters of one layer and how to form their representatives."""

    clusters: UnitClusters
    """Kept clusters, ordered by named member."""
    columns: np.ndarray
    """``(n_members,)`` ascending channel indices: the sync table's unit columns."""
    weights: np.ndarray
    """``(n_members, n_clusters)``: representative ``k`` is ``table[columns] @ weights[:, k]``."""
    note: str = ''
    """Why the clusters are single units although R < 1 (too few stimulus samples)."""

    def to_sidecar(self) -> dict[str, Any]:
        """Return the sidecar keys of DESIGN.md section 5 (maps, annotations, sync tables)."""
        return cluster_sidecar(self.clusters) | ({'UnitClusteringNote': self.note}
                                                 if self.note else {})  # fmt: skip


def cluster_sidecar(clusters: UnitClusters) -> dict[str, Any]:
    """Return ``UnitIndices``, ``UnitClusters``, their signs and correlations, for a sidecar."""
    return {
        'UnitIndices': [int(m[0]) for m in clusters.members],
        'UnitClusters': [[int(i) for i in m] for m in clusters.members],
        'UnitClusterSigns': [[int(s) for s in signs] for signs in clusters.signs],
        'UnitClusterMinCorrelation': [round(float(x), 6) for x in clusters.min_correlation],
        'UnitClusterMaxCrossCorrelation': [
            round(float(x), 6) for x in clusters.max_cross_correlation
        ],
    }


def stimulus_set_series(
    features: Mapping[str, Features], *, hrf: str, high_pass_hz: float
) -> np.ndarray:
    """Return the stimuli's series ``(n_samples, n_channels)``, files in sha256 order.

    A movie or clip (two or more frames) gives :func:`stimulus_series` over its own duration
    (the last frame shown for one frame step). Still images (one frame each) have no time course
    of their own: their activations, one row per image, are standardized over the images and
    appended as one block.
    """
    blocks, stills = [], []
    for sha in sorted(features):
        item = features[sha]
        times = np.asarray(item.frame_times, dtype=np.float64)
        if len(times) < 2:
            stills.append(np.asarray(item.acts, dtype=np.float64)[:1])
            continue
        step = float(np.median(np.diff(times)))
        blocks.append(stimulus_series(item.acts, times - times[0], times[-1] - times[0] + step,
                                      hrf=hrf, high_pass_hz=high_pass_hz))  # type: ignore[arg-type]  # fmt: skip
    if len(stills) > 1:
        rows = np.concatenate(stills)
        rows = rows - rows.mean(axis=0)
        sd = rows.std(axis=0)
        blocks.append(np.where(sd > 0, rows / np.where(sd > 0, sd, 1.0), 0.0))
    if not blocks:
        n = len(next(iter(features.values())).unit_indices)
        return np.zeros((0, n))
    return np.concatenate(blocks)


def layer_clusters(
    features: Mapping[str, Features],
    *,
    min_correlation: float,
    max_units: int | None,
    hrf: str,
    high_pass_hz: float | None,
    method: Linkage = LINKAGE,
) -> LayerClusters:
    """Cluster a layer's channels on the stimuli's features and keep the ``max_units`` largest.

    Parameters
    ----------
    features : mapping
        The layer's feature sets by stimulus sha256: every stimulus of the task.
    min_correlation : float
        ``--unit-correlation`` R in (0.5, 1]; 1: one cluster per channel.
    max_units : int or None
        Clusters kept: those whose named members have the largest activation variance over
        the frames of all stimuli (ties by index); None: all.
    hrf : str
        ``--hrf``.
    high_pass_hz : float or None
        ``--high-pass``; None: :data:`DEFAULT_HIGH_PASS_HZ`.
    method : {'complete', 'average', 'single'}
        The linkage (the pipeline's is :data:`LINKAGE`; others for ``bench_clusters.py``).

    Returns
    -------
    LayerClusters
        With R = 1, the clusters are exactly today's units
        (:func:`bids_syncact.core.activations.select_units`) and each representative is its
        unit's own column (weight 1).
    """
    pooled = np.concatenate([np.asarray(features[sha].acts, dtype=np.float64)
                             for sha in sorted(features)])  # fmt: skip
    variance = pooled.var(axis=0)
    n_channels = variance.size
    series = stimulus_set_series(
        features, hrf=hrf, high_pass_hz=DEFAULT_HIGH_PASS_HZ if high_pass_hz is None
        else high_pass_hz,
    )  # fmt: skip
    note = ''
    if min_correlation < 1.0 and len(series) < MIN_SERIES_SAMPLES:
        note = (
            f'single units: the stimuli give {len(series)} samples (seconds of movie or '
            f'still images), fewer than the {MIN_SERIES_SAMPLES} that correlations between '
            'units need'
        )
        LOGGER.info('Unit clusters: %s', note)  # every run node would repeat a warning: the
        # sidecars and the subject report say it instead
    if min_correlation >= 1.0 or note:
        # a channel is its own cluster (zero-variance ones kept, as select_units does)
        names = _largest(variance, np.arange(n_channels), max_units)
        singles = UnitClusters(tuple((int(i),) for i in names), tuple((1,) for _ in names),
                               np.ones(names.size), np.zeros(names.size), ())  # fmt: skip
        return LayerClusters(_subset(singles, range(names.size), series), names,
                             np.eye(names.size), note)  # fmt: skip
    every = cluster_units(series, variance, min_correlation, method=method)
    keep = set(_largest(variance, every.names, max_units).tolist())
    chosen = [k for k, name in enumerate(every.names) if int(name) in keep]
    kept = _subset(every, chosen, series)
    columns = np.array(sorted({i for m in kept.members for i in m}), dtype=int)
    full = representative_weights(kept, np.sqrt(variance), n_channels)
    for k, members in enumerate(kept.members):
        if len(members) == 1:  # a single unit is its own column (columns are normalized later)
            full[members[0], k] = 1.0
    return LayerClusters(kept, columns, full[columns])


def read_sync_tables(
    paths: list[Path], run_names: list[str], layer: str, output_dir: Path
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any], list[str]]:
    """Each run's cluster regressors and member columns of ``layer``, the clusters, the URIs.

    All stored volumes; the clusters are the :data:`CLUSTER_KEYS` of the sync sidecar.
    Cluster ``k``'s regressor is its members' columns times ``UnitClusterWeights[k]``
    (synchronizing is linear: this is the representative synchronized); a single unit's is its
    own column.
    """
    by_run: dict[str, tuple[Path, dict]] = {}
    for path in paths:
        meta = json.loads(path.with_suffix('.json').read_text())
        run = next((r for r in run_names if path.name.startswith(f'{r}_cnn-')), None)
        if meta.get('Layer') == layer and run is not None:
            by_run[run] = (path, meta)
    missing = [r for r in run_names if r not in by_run]
    if missing:
        raise InputDataError(f'no synchronized activations of layer {layer} for {missing[0]}')
    first = by_run[run_names[0]][1]
    clusters = {key: first.get(key) for key in CLUSTER_KEYS}
    if 'UnitClusteringNote' in first:
        clusters['UnitClusteringNote'] = first['UnitClusteringNote']
    if clusters['UnitClusters'] is None:
        raise InputDataError(
            f'{by_run[run_names[0]][0].name} has no UnitClusters (made by an older '
            "bids-syncact): remove the subject's desc-sync tables and rerun"
        )
    tables, member_tables = [], []
    columns = [unit_column(i) for i in clusters['UnitColumns']]
    for run in run_names:
        path, meta = by_run[run]
        if any(meta.get(key) != clusters[key] for key in ('UnitClusters', 'UnitClusterWeights')):
            raise InputDataError(
                f'{path.name} holds other unit clusters than {by_run[run_names[0]][0].name}; '
                "remove the subject's desc-sync tables and rerun"
            )
        table = pd.read_csv(path, sep='\t')
        member_tables.append(table[columns].to_numpy(dtype=np.float64))
        tables.append(np.column_stack([
            table[[unit_column(i) for i in members]].to_numpy(dtype=np.float64) @ np.asarray(w)
            for members, w in zip(clusters['UnitClusters'], meta['UnitClusterWeights'],
                                  strict=True)
        ]))  # fmt: skip
    sources = [f'bids::{by_run[r][0].relative_to(output_dir).as_posix()}' for r in run_names]
    return tables, member_tables, clusters, sources


def _largest(variance: np.ndarray, candidates: np.ndarray, n: int | None) -> np.ndarray:
    """Return the ``n`` candidates of largest variance (ties by index), ascending."""
    candidates = np.asarray(candidates, dtype=int)
    order = np.lexsort((candidates, -variance[candidates]))
    return np.sort(candidates[order if n is None else order[:n]])


def _subset(clusters: UnitClusters, chosen: Sequence[int], series: np.ndarray) -> UnitClusters:
    """Return the chosen clusters, the cross-correlation recomputed among them."""
    members = tuple(clusters.members[k] for k in chosen)
    signs = tuple(clusters.signs[k] for k in chosen)
    within = clusters.min_correlation[list(chosen)]
    across = np.zeros(len(members))
    if len(members) > 1:
        flat = [i for m in members for i in m]
        owner = np.repeat(np.arange(len(members)), [len(m) for m in members])
        with np.errstate(invalid='ignore', divide='ignore'):
            r = np.abs(np.nan_to_num(np.corrcoef(series[:, flat], rowvar=False)))
        for k in range(len(members)):
            across[k] = r[np.ix_(owner == k, owner != k)].max()
    return UnitClusters(members, signs, within, across, clusters.dropped)
