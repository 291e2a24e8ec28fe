"""The group level's sign-flip test against nilearn's, side by side in one run.

For one unit: ``core.group.sign_flip_group_map`` (the null from one product of the flips with
the scaled maps per block, every distinct flip when they fit) against nilearn's
``permuted_ols`` called as ``non_parametric_inference`` calls it for a one-sample design, on
the same seeded maps and the same number of flips. Sizes: the demo's (3 subjects, 3,644 voxels,
10,000 flips asked; 4 distinct) and a study's (20 subjects, 23,000 voxels, 10,000 random
flips; a tenth of a 2 mm brain). Also checks that both give the same t and p-values within
Monte Carlo error.

Usage: ``python benchmarks/bench_group.py [--repeats 2] [--out benchmarks/results_group.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from nilearn.mass_univariate import permuted_ols

from bids_syncact.core.group import sign_flip_group_map

CASES = {'demo': (3, 3644, 10000), 'study-tenth': (20, 23000, 10000)}


def _maps(n_subjects: int, n_voxels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((n_subjects, n_voxels)).astype(np.float32)
    maps[:, : n_voxels // 20] += 1.0  # an effect in 5% of the voxels
    maps[:, -n_voxels // 4 :] = 0.0  # a quarter zero in every subject, as sparse maps are
    return maps


def _best_of(repeats: int, function) -> tuple[float, object]:
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('results_group.json'))
    args = parser.parse_args()
    results = {'machine': platform.processor() or platform.machine(), 'cases': {}}
    for name, (n_subjects, n_voxels, n_perm) in CASES.items():
        maps = _maps(n_subjects, n_voxels)
        ours_s, ours = _best_of(args.repeats, lambda m=maps, n=n_perm: sign_flip_group_map(
            m, n_permutations=n, seed=0))  # fmt: skip

        def nilearn_call(m=maps, n=n_perm):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                return permuted_ols(np.ones((len(m), 1)), m, model_intercept=True, n_perm=n,
                                    two_sided_test=True, random_state=0, n_jobs=1, verbose=0)  # fmt: skip

        theirs_s, theirs = _best_of(args.repeats, nilearn_call)
        t_theirs = theirs['t'][0]
        finite = np.isfinite(t_theirs)
        p_ours = 10.0 ** -ours.logp_fwe.astype(np.float64)
        p_theirs = 10.0 ** -theirs['logp_max_t'][0]
        results['cases'][name] = {
            'subjects': n_subjects, 'voxels': n_voxels, 'flips_asked': n_perm,
            'flips_ours': len(ours.h0_max_t), 'exact_ours': ours.exact,
            'seconds_ours': round(ours_s, 3), 'seconds_nilearn': round(theirs_s, 3),
            'speedup': round(theirs_s / ours_s, 1),
            'max_relative_t_difference': float(np.max(
                np.abs(ours.t[finite] - t_theirs[finite]) / np.abs(t_theirs[finite]))),
            'max_p_difference': float(np.max(np.abs(p_ours - p_theirs))),
        }  # fmt: skip
        print(name, results['cases'][name], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
