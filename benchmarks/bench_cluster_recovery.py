"""The demo's recovery by unit-cluster linkage and cut (issue 19, item 2), with the reference.

Runs the app once on the demo dataset (``bids-syncact-demo DIR`` builds it) for the planted layer
with single units and every channel (``--unit-correlation 1 --max-units all --n-nulls 0``), so the
sync tables hold every channel's regressor; then, per subject, on the data as the app cleaned it:

- the reference: the app's cross-validated Lasso on only the planted units' own regressors;
- for complete, average and single linkage at R = 0.8, 0.9, 0.95, and single units (R = 1): the
  clusters from the feature cache (:func:`bids_syncact.bids.unitclusters.layer_clusters`), their
  regressors (members' columns times the weights, as the coupling forms them), the same
  cross-validated Lasso, and each planted unit scored on its cluster's map times its sign.

Per setting: clusters, smallest |r| inside and largest |r| across, condition number and VIF of the
cleaned cluster regressors, and mean r / AUC / leakage over the planted units and subjects, r also
as a fraction of the reference's.

Usage: ``python benchmarks/bench_cluster_recovery.py DEMO_DIR [--out results_cluster_recovery.json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_syncact._demo import recovery as demo_recovery
from bids_syncact.bids.cache import read_features
from bids_syncact.bids.unitclusters import layer_clusters
from bids_syncact.cli.run import main as run_app
from bids_syncact.core.coupling import condition_number, variance_inflation
from bids_syncact.core.fbn import clean_dictionary, fit_layer
from bids_syncact.demo import DemoSpec
from bids_syncact.demo_scoring import cleaned_subject, cluster_of, reference_maps

SETTINGS = [('complete', 1.0)] + [(m, r) for m in ('complete', 'average', 'single')
                                  for r in (0.8, 0.9, 0.95)]  # fmt: skip


def score(maps: np.ndarray, planted: np.ndarray) -> np.ndarray:
    """Return ``(n_planted, 3)``: r, AUC, leakage of row j against planted map j."""
    found = demo_recovery.recovery(maps, planted, list(range(len(planted))))
    return np.array([(x.r, x.auc, x.leakage) for x in found])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('demo', type=Path)
    parser.add_argument('--out', type=Path,
                        default=Path(__file__).with_name('results_cluster_recovery.json'))  # fmt: skip
    args = parser.parse_args(argv)
    root = args.demo.absolute()
    spec = DemoSpec()
    truth = json.loads((root / 'sourcedata' / 'groundtruth' / 'truth.json').read_text())
    out = root.parent / f'{root.name}-bench-clusters'
    weights = root / 'sourcedata' / 'groundtruth' / truth['Weights']
    code = run_app([str(root), str(out), 'participant', '-w', str(out) + '-work',
                    '--weights', f'alexnet={weights}', '--layers', truth['Layer'],
                    '--max-units', 'all', '--unit-correlation', '1', '--n-nulls', '0',
                    '--reference-networks', 'seitzman2018'])  # fmt: skip
    if code:
        raise SystemExit(code)
    label = truth['Layer'].replace('.', '')
    features = {}
    for tsv in sorted((out / 'features').glob(f'*_layer-{label}_*_desc-activations_timeseries.tsv')):
        meta, found = read_features(tsv)
        features[meta['StimulusSha256']] = found
    subjects = [cleaned_subject(out, root, truth, sub, spec.task) for sub in spec.subjects]
    reference = np.stack([score(reference_maps(d, truth['Units']), d['planted']) for d in subjects])
    rows = []
    for method, R in SETTINGS:
        t0 = time.perf_counter()
        found = layer_clusters(features, min_correlation=R, max_units=None, hrf='spm',
                               high_pass_hz=None, method=method)  # fmt: skip
        seconds = time.perf_counter() - t0
        sidecar = found.to_sidecar()
        scores, conds, vifs = [], [], []
        for data in subjects:
            columns = data['clusters']['UnitColumns']
            index = [columns.index(int(c)) for c in found.columns]
            tables = [m[:, index] @ found.weights for m in data['members']]
            D = clean_dictionary(tables, data['specs'])
            conds.append(condition_number(D))
            vifs.append(np.median(variance_inflation(D)) if D.shape[1] > 1 else 1.0)
            fit = fit_layer(tables, data['specs'], data['S'].astype(np.float32), alpha=None,
                            seed=0)  # fmt: skip
            where = [cluster_of(int(u), sidecar) for u in truth['Units']]
            maps = np.stack([s * np.asarray(fit.codes[k], dtype=np.float64) for k, s in where])
            scores.append(score(maps, data['planted']))
        mean = np.mean(scores, axis=(0, 1))
        rows.append({
            'linkage': method, 'R': R, 'n_clusters': len(sidecar['UnitClusters']),
            'largest_cluster': max(len(m) for m in sidecar['UnitClusters']),
            'min_r_inside': min(sidecar['UnitClusterMinCorrelation']),
            'max_r_across': max(sidecar['UnitClusterMaxCrossCorrelation']),
            'condition_number_median': float(np.median(conds)),
            'vif_median': float(np.median(vifs)),
            'r': float(mean[0]), 'auc': float(mean[1]), 'leakage': float(mean[2]),
            'r_fraction_of_reference': float(mean[0] / reference.mean(axis=(0, 1))[0]),
            'clustering_s': round(seconds, 3),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    ref = reference.mean(axis=(0, 1))
    result = {
        'layer': truth['Layer'], 'subjects': list(spec.subjects),
        'reference': {'r': float(ref[0]), 'auc': float(ref[1]), 'leakage': float(ref[2])},
        'settings': rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'reference r {ref[0]:.3f} AUC {ref[1]:.3f} leakage {ref[2]:.4f}; wrote {args.out}')


if __name__ == '__main__':
    main()
