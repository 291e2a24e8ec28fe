"""Cost of unit clustering at K = 2048 channels (ResNet-50 ``layer4``), and the sync tables' size.

Times :func:`bids_syncact.bids.unitclusters.layer_clusters` (the stimulus series, the correlation
matrix, the linkage, the kept clusters) and its peak traced memory (``tracemalloc``: numpy's
buffers), side by side with single units (R = 1, which needs the series too, for the
cross-correlations) on the same input, at ``--max-units 64`` and ``all``. Also the sync table's
size per 1000 volumes: one column per member of a kept cluster, written ``%.9g``.

Input: feature-cache TSVs of one layer (``OUTPUT_DIR/features/*_layer-layer4_*``; one per stimulus
file), or, with ``--synthetic``, a 10-min movie at 4 Hz of 2048 channels made of 256 slow latent
signals (each channel one latent plus a weaker second one and noise).

Usage: ``python benchmarks/bench_cluster_cost.py [--synthetic | FEATURES.tsv ...] [--out F.json]``
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_syncact.bids.cache import Features, read_features
from bids_syncact.bids.unitclusters import layer_clusters


def synthetic(n_channels: int = 2048, n_frames: int = 2400, seed: int = 0) -> Features:
    """Return a movie's features whose channels share 256 slow latent signals."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_frames, 256))
    kernel = np.hanning(61)
    latent = np.stack([np.convolve(c, kernel, mode='same') for c in latent.T], axis=1)
    latent /= latent.std(axis=0)
    first = rng.integers(0, 256, n_channels)
    second = rng.integers(0, 256, n_channels)
    acts = (latent[:, first] + rng.uniform(0.05, 0.6, n_channels) * latent[:, second]
            + 0.2 * rng.standard_normal((n_frames, n_channels)))  # fmt: skip
    acts = np.maximum(acts * rng.uniform(0.5, 2.0, n_channels) + 1.0, 0.0)  # ReLU-like
    times = np.arange(n_frames) / 4.0
    return Features(times, acts, acts.mean(axis=0), tuple(range(n_channels)))


def table_mb_per_1000_volumes(n_columns: int, seed: int = 0) -> float:
    """Return the size (MB) of a sync table of ``n_columns`` units over 1000 volumes."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.standard_normal((1000, n_columns + 1)))
    buffer = io.StringIO()
    table.to_csv(buffer, sep='\t', index=False, float_format='%.9g')
    return len(buffer.getvalue().encode()) / 1e6


def measure(features: dict[str, Features], R: float, max_units: int | None) -> dict:
    tracemalloc.start()
    t0 = time.perf_counter()
    found = layer_clusters(features, min_correlation=R, max_units=max_units, hrf='spm',
                           high_pass_hz=None)  # fmt: skip
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sidecar = found.to_sidecar()
    return {
        'R': R, 'max_units': max_units or 'all', 'seconds': round(seconds, 2),
        'peak_traced_mb': round(peak / 1e6, 1), 'n_clusters': len(sidecar['UnitClusters']),
        'largest_cluster': max(len(m) for m in sidecar['UnitClusters']),
        'n_columns': int(found.columns.size),
        'sync_table_mb_per_1000_volumes': round(table_mb_per_1000_volumes(found.columns.size), 2),
        'sidecar_kb': round(len(json.dumps(sidecar)) / 1e3, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('features', nargs='*', type=Path)
    parser.add_argument('--synthetic', action='store_true')
    parser.add_argument('--out', type=Path,
                        default=Path(__file__).with_name('results_cluster_cost.json'))  # fmt: skip
    args = parser.parse_args(argv)
    if args.synthetic:
        source, features = 'synthetic', {'0' * 64: synthetic()}
    else:
        source, features = [p.name for p in args.features], {}
        for tsv in args.features:
            meta, found = read_features(tsv)
            features[meta['StimulusSha256']] = found
    first = next(iter(features.values()))
    rows = [measure(features, R, n) for R in (1.0, 0.9) for n in (64, None)]
    for row in rows:
        print(json.dumps(row), flush=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[source if isinstance(source, str) else ' '.join(source)] = {
        'n_channels': first.acts.shape[1], 'n_frames': int(sum(len(f.frame_times)
                                                               for f in features.values())),
        'rows': rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(results, indent=1) + '\n')


if __name__ == '__main__':
    main()
