"""Calibration of the labels against the data's own nulls, on structured nulls (issue 18).

Draws many independent structured-null datasets (``tests/structured_null.py``: resting-state
BOLD with slow network-shaped fluctuations, confounds, a movie's synchronized activations with
its onset transient, no coupling), fits each as :func:`~bids_syncact.core.fbn.fit_layer` does
(``alpha`` by blocked cross-validation, 99 circular-shift nulls), and reports how often the
calibrated subject p (:func:`~bids_syncact.core.calibration.subject_inference`) labels a cluster:
one cluster chosen before the fit per dataset, and all clusters; the p-values' histogram, the
fractions below 0.05 and 0.1, and a KS distance to the uniform on the grid ``k / (N + 1)``. Both
statistics (``logp`` and ``enrichment``) come from the same null maps. The group level draws
``--group`` subjects per dataset and tests them with the group null.

Variants (``--variants``), to find what makes the nulls and the real map differ:

* ``current``: what :func:`fit_layer` does (circular shifts of each run's raw ``D``, alpha
  chosen on the real data, nulls at that alpha);
* ``fixed``: alpha fixed at ``--alpha`` for the real map and the nulls (no choice on the data);
* ``pernull``: alpha chosen again by cross-validation on every null (costly);
* ``notransient``: the movie already on at the first volume (no blank, no onset transient);
* ``reflect``, ``movie``: other shift schemes (:func:`bids_syncact.core.nulls.shift_runs`).

The null loop is written out here (clean, solve, statistic) so that several variants and both
statistics share one set of data; ``--check`` confirms it gives :func:`fit_layer`'s statistics.

Usage: ``python benchmarks/bench_calibration.py [--n-datasets 200] [--workers 2]
[--variants current fixed] [--group 3] [--out benchmarks/results_calibration.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bids_syncact.core import nulls
from bids_syncact.core.calibration import (
    STATISTICS,
    draw_null_indices,
    group_inference,
    network_statistics,
    subject_inference,
)
from bids_syncact.core.coupling import sparse_code
from bids_syncact.core.fbn import clean_dictionary, fit_layer, sample_clock
from bids_syncact.core.selection import MAX_CV_VOXELS, choose_alpha
from tests.structured_null import NullSpec, Plant, make_dataset

N_NULLS = 99
#: Experimental statistics (not in calibration.py): the mean |a| in each network ('mass'); logp
#: of every non-zero voxel ('support') or of the voxels above one cut per unit pooled over the
#: N + 1 maps ('pooled'); the network's share of the map's |a| over its share of the voxels
#: ('share'). calibration.py's 'contrast' is 'mass' minus the mean |a| outside the network.
EXTRA = ('mass', 'support', 'pooled', 'share')
ALL_STATISTICS = STATISTICS + EXTRA
#: Variants: dash-joined tokens; alpha: 'current' (chosen on the real data), 'fixed', 'pernull';
#: shifts: 60 s from zero (default), 'uniform' (any but zero), 'movie' (the movie's volumes only);
#: data: 'notransient'.
VARIANTS = ('current', 'fixed', 'pernull', 'notransient', 'fixed-notransient', 'movie',
            'fixed-movie', 'uniform', 'fixed-uniform', 'fixed-uniform-notransient',
            'pernull-uniform', 'uniform-notransient', 'zone20', 'fixed-zone20')
#: The shifts' distance from zero before issue 18's fix (s).
ZONE_S = 60.0
#: The movie variants keep the onset and this much after it in place (s).
SETTLE_S = 20.0


def _spec(variant: str, base: NullSpec) -> NullSpec:
    if 'notransient' in variant:
        return replace(base, onset_s=-60.0)  # the movie began a minute before the first volume
    return base


def null_stats(
    sub, networks: np.ndarray, *, variant: str, alpha_fixed: float, seed: int, n_nulls: int,
    spec: NullSpec, cv_voxels: int = MAX_CV_VOXELS,
) -> dict:
    """Return both statistics of the real map (index 0) and every null map, and the alphas."""
    D = clean_dictionary(sub.raw_runs, sub.specs)
    times, runs = sample_clock(sub.specs)
    if variant.startswith('fixed'):
        alpha = alpha_fixed
    else:
        alpha = choose_alpha(D, sub.S, times, runs, seed=seed, n_threads=1,
                             max_voxels=cv_voxels).alpha
    maps = [sparse_code(D, sub.S, alpha, n_threads=1)]
    alphas = [alpha]
    for raw in null_dictionaries(sub, variant, seed, n_nulls, spec):
        Dn = clean_dictionary(raw, sub.specs)
        a = alpha
        if variant.startswith('pernull'):
            a = choose_alpha(Dn, sub.S, times, runs, seed=seed, n_threads=1,
                             max_voxels=cv_voxels).alpha
        alphas.append(a)
        maps.append(sparse_code(Dn, sub.S, a, n_threads=1))
    out = {'alphas': np.array(alphas), 'nonzero': np.array([(m != 0).sum(1) for m in maps])}
    for statistic in STATISTICS:
        out[statistic] = np.stack(
            [network_statistics(m, networks, statistic=statistic) for m in maps]
        )
    member = (networks >= 0.5).astype(np.float64)
    size = member.sum(axis=1)
    for m in maps:
        magnitude = np.abs(m.astype(np.float64))
        inside = magnitude @ member.T / size  # mean |a| in each network
        empty = ~magnitude.any(axis=1)[:, None]
        out.setdefault('mass', []).append(np.where(empty, -np.inf, inside))
        # 'share': the network's share of the map's |a| over its share of the voxels (the
        # enrichment of the mass, blind to the map's overall scale).
        total = magnitude.sum(axis=1, keepdims=True)
        with np.errstate(invalid='ignore', divide='ignore'):
            share = (magnitude @ member.T / total) / (size / m.shape[1])
        out.setdefault('share', []).append(np.where(empty, -np.inf, share))
    # 'support': logp of every non-zero voxel (F grows with the coupling instead of stopping at
    # 5%); 'pooled': logp of the voxels above one cut per unit, the top 5% of |a| pooled over
    # all N + 1 maps (the same cut for every map, so they stay exchangeable).
    out['support'] = np.stack([network_statistics(m, networks, fraction=1.0) for m in maps])
    stack = np.abs(np.stack(maps).astype(np.float64))  # (N + 1, K, V)
    cut = np.quantile(stack.transpose(1, 0, 2).reshape(stack.shape[1], -1), 0.95, axis=1)
    cut = np.maximum(cut, np.finfo(np.float64).tiny)
    out['pooled'] = np.stack([
        network_statistics(np.where(m >= cut[:, None], m, 0.0), networks, fraction=1.0)
        for m in stack])
    for name in ('mass', 'share'):
        out[name] = np.stack(out[name])
    return out


def null_dictionaries(sub, variant: str, seed: int, n_nulls: int, spec: NullSpec):
    """Yield each null's raw runs under the variant's shift scheme."""
    n_vols = [len(r) for r in sub.raw_runs]
    t_r = [s.t_r for s in sub.specs]
    if 'movie' not in variant:
        min_shift_s = 0.0 if 'uniform' in variant else ZONE_S
        for token in variant.split('-'):
            if token.startswith('zone'):  # e.g. 'zone20': shifts at least 20 s from zero
                min_shift_s = float(token[4:])
        for row in nulls.draw_shifts(n_vols, t_r, n_nulls, seed=seed, min_shift_s=min_shift_s):
            yield nulls.shift_runs(sub.raw_runs, row)
        return
    # Rotate only the volumes of the movie after its onset transient has settled.
    first = int(np.ceil((max(spec.onset_s, 0.0) + SETTLE_S) / spec.t_r))
    last = spec.n_vols - int(np.floor(spec.tail_s / spec.t_r))
    allowed = nulls.allowed_shifts(last - first, spec.t_r)
    rng = np.random.default_rng([seed, 0x5EED])
    rows = np.stack([rng.choice(allowed, n_nulls, replace=allowed.size < n_nulls)
                     for _ in n_vols], axis=1)  # fmt: skip
    for row in rows:
        out = []
        for raw, s in zip(sub.raw_runs, row, strict=True):
            raw = raw.copy()
            raw[first:last] = np.roll(raw[first:last], int(s), axis=0)
            out.append(raw)
        yield out


def one_dataset(job: tuple) -> dict:
    """Fit one dataset's subjects under one variant; return p-values and diagnostics."""
    seed, variant, base, n_group, alpha_fixed, plant, cv_voxels = job
    warnings.simplefilter('ignore', RuntimeWarning)  # KKT notes of the CV's smallest alphas
    start = time.perf_counter()
    ds = make_dataset(seed, n_subjects=max(1, n_group), spec=_spec(variant, base), plant=plant)
    chosen = int(np.random.default_rng([seed, 7]).integers(base.n_units))
    result = {'seed': seed, 'chosen': chosen}
    per_subject = []
    for i, sub in enumerate(ds.subjects):
        per_subject.append(null_stats(sub, ds.layout.networks, variant=variant,
                                      alpha_fixed=alpha_fixed, seed=seed + i, n_nulls=N_NULLS,
                                      spec=ds.spec, cv_voxels=cv_voxels))  # fmt: skip
    first = per_subject[0]
    result['alpha'] = float(first['alphas'][0])
    result['alpha_null_median'] = float(np.median(first['alphas'][1:]))
    result['nonzero_real'] = first['nonzero'][0].tolist()
    result['nonzero_null_mean'] = first['nonzero'][1:].mean(0).tolist()
    for statistic in ALL_STATISTICS:
        inf = subject_inference(first[statistic])
        result[f'{statistic}_p'] = inf.p.tolist()
        result[f'{statistic}_pfwe'] = inf.p_fwe.tolist()
        result[f'{statistic}_best'] = inf.best.tolist()
        if n_group > 1:
            stats = [s[statistic] for s in per_subject]
            idx = draw_null_indices([N_NULLS] * len(stats), seed=seed)
            g = group_inference(stats, idx)
            result[f'{statistic}_group_p'] = g.p.tolist()
            result[f'{statistic}_group_best'] = g.best.tolist()
            result[f'{statistic}_group_null_mean'] = g.null.mean(1).tolist()
            result[f'{statistic}_group_stat_mean'] = float(np.mean(g.statistic))
            # The same group test with the real maps among the draws (indices 0..N).
            rng = np.random.default_rng([seed, 0x6A0C])
            idx0 = rng.integers(0, N_NULLS + 1, size=idx.shape)
            g0 = group_inference(stats, idx0)
            result[f'{statistic}_group0_p'] = g0.p.tolist()
    if plant is not None:
        unit, network = plant.units[0], plant.network
        for statistic in ALL_STATISTICS:
            for level in ('', 'group_'):
                if f'{statistic}_{level}p' in result:
                    result[f'{statistic}_{level}power'] = bool(
                        result[f'{statistic}_{level}p'][unit] < 0.05
                        and result[f'{statistic}_{level}best'][unit] == network
                    )
    result['seconds'] = time.perf_counter() - start
    return result


def uniform_ks(p: np.ndarray, n_nulls: int = N_NULLS, *, plus: bool = False) -> float:
    """Return the largest gap between the p-values' CDF and the uniform on ``k / (N + 1)``.

    ``plus``: only where the CDF is above the uniform's (p-values too small: anti-conservative).
    """
    grid = np.arange(1, n_nulls + 2) / (n_nulls + 1)
    p = np.asarray(p)
    gap = np.searchsorted(np.sort(p), grid * (1 + 1e-9), side='right') / p.size - grid
    return float(np.max(gap) if plus else np.max(np.abs(gap)))


def summarize(rows: list[dict], statistic: str, key: str = 'p') -> dict:
    """Return the label rates and the p-values' distribution of one statistic."""
    p_all = np.array([r[f'{statistic}_{key}'] for r in rows])  # (n_datasets, K)
    chosen = p_all[np.arange(len(rows)), [r['chosen'] for r in rows]]
    edges = [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001]
    nonempty = np.array([r['nonzero_real'] for r in rows]) > 0
    return {
        'nonempty_fraction': float(nonempty.mean()),
        'nonempty_labelled_fraction': float((p_all[nonempty] < 0.05).mean()),
        'nonempty_below_0.1_fraction': float((p_all[nonempty] < 0.1).mean()),
        'ks_plus_all': uniform_ks(p_all.ravel(), plus=True),
        'chosen_labelled': int((chosen < 0.05).sum()),
        'chosen_below_0.1': int((chosen < 0.1).sum()),
        'n_datasets': len(rows),
        'all_labelled_fraction': float((p_all < 0.05).mean()),
        'all_below_0.1_fraction': float((p_all < 0.1).mean()),
        'ks_all': uniform_ks(p_all.ravel()),
        'ks_chosen': uniform_ks(chosen),
        'histogram_all': np.histogram(p_all.ravel(), edges)[0].tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n-datasets', type=int, default=200)
    parser.add_argument('--first-seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--variants', nargs='+', default=['current'], choices=VARIANTS)
    parser.add_argument('--alpha', type=float, default=0.1, help="the 'fixed' variant's alpha")
    parser.add_argument('--group', type=int, default=0, help='subjects per dataset (0: none)')
    parser.add_argument('--plant', type=float, default=0.0, help='planted amplitude (0: null)')
    parser.add_argument('--spec', nargs='*', default=[], help='NullSpec overrides, name=value')
    parser.add_argument('--cv-voxels', type=int, default=MAX_CV_VOXELS,
                        help='voxels scored by cross-validation (fewer: cheaper per-null CV)')
    parser.add_argument('--check', action='store_true', help="compare with fit_layer's stats")
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.spec:
        name, value = item.split('=')
        overrides[name] = eval(value)  # a benchmark's own command line
    base = NullSpec(**overrides)
    plant = Plant(units=(0,), network=0, amplitude=args.plant) if args.plant else None
    if args.check:
        _check(base)
    results = {'machine': platform.processor() or platform.machine(), 'spec': repr(base),
               'n_nulls': N_NULLS, 'variants': {}}  # fmt: skip
    seeds = range(args.first_seed, args.first_seed + args.n_datasets)
    for variant in args.variants:
        jobs = [(s, variant, base, args.group, args.alpha, plant, args.cv_voxels) for s in seeds]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one_dataset, jobs))
        wall = time.perf_counter() - start
        entry = {'wall_s': wall, 'alpha_auto_fraction_max': float(
            np.mean([r['alpha'] >= 0.29 for r in rows]))}  # fmt: skip
        for statistic in ALL_STATISTICS:
            entry[statistic] = summarize(rows, statistic)
            if args.group > 1:
                entry[f'{statistic}_group'] = summarize(rows, statistic, 'group_p')
                entry[f'{statistic}_group0'] = summarize(rows, statistic, 'group0_p')
        if plant is not None:
            for key in [k for k in rows[0] if k.endswith('power')]:
                entry[key] = float(np.mean([r[key] for r in rows]))
                print(f'  power {key}: {entry[key]:.3f}', flush=True)
        entry['rows'] = rows
        results['variants'][variant] = entry
        print(_line(variant, entry), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + '\n')


def _line(variant: str, entry: dict) -> str:
    """Return one variant's rates on a few lines."""
    lines = [(f'{variant}: {entry["wall_s"]:.0f} s, alpha at the grid top in '
             f'{entry["alpha_auto_fraction_max"]:.0%} of datasets')]  # fmt: skip
    for key in [k for k, v in entry.items() if k.startswith(ALL_STATISTICS) and isinstance(v, dict)]:
        e = entry[key]
        lines.append(
            f'  {key:18s} chosen {e["chosen_labelled"]:3d}/{e["n_datasets"]} labelled '
            f'({e["chosen_below_0.1"]} below 0.1); all clusters p<0.05 '
            f'{e["all_labelled_fraction"]:.3f}, p<0.1 {e["all_below_0.1_fraction"]:.3f}; '
            f'non-empty real maps ({e["nonempty_fraction"]:.2f}) p<0.05 '
            f'{e["nonempty_labelled_fraction"]:.3f}, p<0.1 {e["nonempty_below_0.1_fraction"]:.3f};'
            f' KS {e["ks_all"]:.3f}, KS+ {e["ks_plus_all"]:.3f}'
        )
    return '\n'.join(lines)


def _check(base: NullSpec) -> None:
    """Assert that the loop here gives :func:`fit_layer`'s statistics on one dataset."""
    ds = make_dataset(0, spec=base)
    sub = ds.subjects[0]
    mine = null_stats(sub, ds.layout.networks, variant='uniform', alpha_fixed=0.1, seed=0,
                      n_nulls=N_NULLS, spec=base)  # fmt: skip
    for statistic in STATISTICS:
        fit = fit_layer(sub.raw_runs, sub.specs, sub.S, alpha=None, n_nulls=N_NULLS, seed=0,
                        n_threads=1, networks=ds.layout.networks,
                        label_statistics=(statistic, statistic))  # fmt: skip
        np.testing.assert_array_equal(fit.network_stats, mine[statistic])
    print('check: the loop here gives fit_layer network_stats exactly', flush=True)


if __name__ == '__main__':
    main()
