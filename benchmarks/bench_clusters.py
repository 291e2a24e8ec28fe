"""Unit clusters by linkage and cut, from a feature cache (issue 19, item 2).

For each layer's cached activations (``OUTPUT_DIR/features/..._desc-activations_timeseries.tsv``,
one stimulus), the channels' stimulus series (:func:`~bids_syncact.core.clusters.stimulus_series`:
held frames, canonical HRF, 1 s grid, DCT high-pass at 0.008 Hz, standardized) are clustered with
complete, average and single linkage on ``1 - |r|`` at R = 0.8, 0.9, 0.95 (and 1: single units).
Per setting: the number of clusters, the smallest ``|r|`` inside a cluster, the largest ``|r|``
across clusters, and the condition number and VIF of the representatives' series (the
representative of each cluster synchronized on the same 1 s grid). What it does not give: the
demo's recovery per setting, which needs the clusters in the pipeline (issue 19, items 3-5).

Usage: ``python benchmarks/bench_clusters.py FEATURES.tsv [...] [--out results_clusters.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_syncact.core.clusters import cluster_units, representative_weights, stimulus_series
from bids_syncact.core.coupling import condition_number, variance_inflation

METHODS = ('complete', 'average', 'single')
CUTS = (0.8, 0.9, 0.95)


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return a cache file's frames ``(n_frames, n_channels)`` and their times (the blank row out)."""
    table = pd.read_csv(path, sep='\t', keep_default_na=False)
    frames = table[table['frame_time'] != 'blank']
    times = frames['frame_time'].astype(float).to_numpy()
    return frames.drop(columns='frame_time').to_numpy(np.float64), times - times[0]


def summary(series: np.ndarray, acts: np.ndarray, times: np.ndarray, duration: float,
            R: float, method: str) -> dict:  # fmt: skip
    clusters = cluster_units(series, acts.var(axis=0), R, method=method)
    W = representative_weights(clusters, acts.std(axis=0), acts.shape[1])
    reps = stimulus_series(acts @ W, times, duration)
    vif = variance_inflation(reps / np.linalg.norm(reps, axis=0))
    return {
        'linkage': method, 'R': R, 'n_clusters': len(clusters.members),
        'largest_cluster': max(len(m) for m in clusters.members),
        'min_r_inside': float(clusters.min_correlation.min()),
        'max_r_across': float(clusters.max_cross_correlation.max()),
        'condition_number': float(condition_number(reps / np.linalg.norm(reps, axis=0))),
        'vif_max': float(vif.max()), 'vif_median': float(np.median(vif)),
        'n_vif_above_10': int((vif > 10).sum()), 'n_dropped': len(clusters.dropped),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('features', nargs='+', type=Path)
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    results = {}
    for path in args.features:
        acts, times = load(path)
        duration = float(times[-1] + np.median(np.diff(times)))
        series = stimulus_series(acts, times, duration)
        rows = [summary(series, acts, times, duration, 1.0, 'complete')]
        rows += [summary(series, acts, times, duration, R, m) for m in METHODS for R in CUTS]
        results[path.name] = rows
        print(path.name, f'{acts.shape[1]} channels, {len(series)} s')
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f'{x:.3g}'))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
    main()
