"""Null stage of ``fit_layer``: seconds per null, the old per-null path and the new one side by side.

DESIGN.md section 9, second bullet; issue 18, item 8. Two scales:

- ``demo``: the demo's (``bids_syncact.demo.DemoSpec``): 2 runs x 300 volumes at TR 1 s, 4
  dummies dropped (T = 592), K = 64 units, V = 3,644 voxels (the MNI152 brain mask at 8 mm).
- ``hcp``: the HCP-7T benchmark's (``benchmarks/bench_hcp7t.py``): 4 runs x 900 volumes at TR
  1 s, 4 dummies dropped per run (T = 3,584), K = 64, V = 235,375 (the mask at 2 mm). The stacked
  BOLD is a ``.npy`` file on disk (3.4 GB, cached in ``--data``), read through
  ``bids.io.PagedArray`` as the participant level reads it.

The problem (seeded): each run's raw activations are CNN-like unit series
(``problems.unit_time_courses``: HRF-convolved, smooth, correlated, median |r| about 0.4); the
confounds are fMRIPrep's ``simple`` strategy in kind (6 smooth motion traces, white matter and
CSF, and the cosine high-pass columns at 0.008 Hz); the BOLD is smooth noise (AR(1) rho 0.3 and
slow spontaneous fluctuations shared by voxels of the same network), motion-driven signal, and in
3% of the voxels a coupling to 1-3 units of the real (unshifted) activations; each run is then
cleaned with its spec and stacked exactly as the participant level does (``core.denoise``).

Per scale and alpha (``--alphas``: ``auto``, chosen by blocked cross-validation on this data as
the app does, and 0.02, the solver benchmark's, whose denser codes make the homotopy heavier) the
real map is solved, then the nulls by each path, one path after the other, each in a fresh
child process with the same threads (``--threads``, default 2) and the same first shifts:

- ``old``: the loop ``fit_layer`` ran before issue 18 (copied here): per null, clean the
  shifted dictionary, ``sparse_code`` it against the whole ``S`` (read again from disk), then
  the exceedances, the maximum and the network statistics of the map.
- ``new``: ``fit_layer``'s null stage now (``core/_nullsolve.py``): ``S`` read once per batch
  of nulls (``NULL_BATCH_BYTES``, 1 GB of ``(B, K, V)`` float32 maps: 16 nulls at HCP scale),
  every null of the batch solved while a voxel block is in memory.

At demo scale both run all 99 nulls. At HCP scale ``old`` runs the first ``--nulls-hcp``
(default 3) nulls and ``new`` one full batch (``--nulls-hcp-new``, default 16); 99 nulls are
extrapolated: ``old`` as 99 times its seconds per null (every null costs the same), ``new`` as
``(t - r) / 16 * 99 + r * ceil(99 / 16)`` with ``r`` one timed pass over ``S`` (its reading
and conversion, ``read_pass_seconds``), which the new path pays once per batch. The outputs
are compared on the nulls both ran (maxima and network statistics bit for bit; the exceed
counts too where both ran all of them). Memory: the largest RSS during the null stage minus
the RSS before it (sampled every 20 ms; ``S`` is read through ``PagedArray``, which hands its
pages back, so the file is not counted).

``fft_probe``: the products ``D'S`` of 99 nulls on one block of 256 voxels, direct (one float64
product with the 99 dictionaries side by side) against an FFT (per run, the circular
cross-correlation of the raw, centred units with the voxels at all shifts, zeros at dropped
volumes, then each null's shift picked and scaled by its cleaned column's norm), one thread,
best of 3; the FFT's best case (all 99 nulls at once) and its agreement with the direct
products.

Machine load: the host is a shared 2-core VM; only the ratios of one run mean anything, and the
load average at start and end is recorded.

Usage::

    .venv/bin/python benchmarks/bench_nulls.py                  # both scales
    .venv/bin/python benchmarks/bench_nulls.py --scales demo    # seconds
    .venv/bin/python benchmarks/bench_nulls.py --nulls-hcp 4 --alphas 0.05

Results go to ``benchmarks/results_nulls.json`` (``--out``) and a table is printed. The HCP
data take about 4 minutes to generate the first time (cached in ``--data``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import unit_time_courses

K = 64
T_R = 1.0
HIGH_PASS_HZ = 0.008
N_NETWORKS = 12
COUPLED_FRACTION = 0.03
CHUNK = 8192


@dataclass(frozen=True)
class Scale:
    n_runs: int
    n_vols: int
    n_dummies: int
    n_voxels: int


SCALES = {
    'demo': Scale(n_runs=2, n_vols=300, n_dummies=4, n_voxels=3_644),
    'hcp': Scale(n_runs=4, n_vols=900, n_dummies=4, n_voxels=235_375),
}


def _ar1(rng: np.random.Generator, n: int, m: int, rho: float) -> np.ndarray:
    out = rng.standard_normal((n, m))
    out[0] /= np.sqrt(1 - rho**2)
    for i in range(1, n):
        out[i] += rho * out[i - 1]
    return out * np.sqrt(1 - rho**2)


def make_runs(scale: Scale, seed: int = 0):
    """Each run's raw activations ``(n_vols, K)`` and its clean spec (``simple``-like confounds)."""
    from bids_syncact.core.denoise import CleanSpec, cosine_regressors

    rng = np.random.default_rng([seed, 18])
    raw, specs = [], []
    for r in range(scale.n_runs):
        units = 1.0 + unit_time_courses(scale.n_vols, K, rng)
        motion = np.cumsum(0.05 * rng.standard_normal((scale.n_vols, 6)), axis=0)
        tissue = _ar1(rng, scale.n_vols, 2, 0.9)
        cosines = cosine_regressors(scale.n_vols, T_R, HIGH_PASS_HZ)
        confounds = np.hstack([motion, tissue, cosines])
        raw.append(units)
        specs.append(CleanSpec(scale.n_vols, T_R, sample_mask=np.arange(scale.n_dummies,
                                                                        scale.n_vols),
                               confounds=confounds, high_pass=None, name=f'run-{r + 1}'))  # fmt: skip
    return raw, specs


def make_networks(n_voxels: int, seed: int = 0) -> np.ndarray:
    """``(N_NETWORKS, V)`` memberships: contiguous runs of voxels (spatially smooth), 70% covered."""
    rng = np.random.default_rng([seed, 19])
    label = np.full(n_voxels, -1)
    start = 0
    while start < n_voxels:
        length = int(rng.integers(n_voxels // 200 + 1, n_voxels // 40 + 2))
        if rng.random() < 0.7:
            label[start : start + length] = rng.integers(N_NETWORKS)
        start += length
    return (label[None, :] == np.arange(N_NETWORKS)[:, None]).astype(np.float32)


def make_bold(path: Path, scale: Scale, raw, specs, networks: np.ndarray, seed: int = 0) -> Path:
    """Write the cleaned, stacked BOLD ``(T, V)`` float32 to ``path`` (``.npy``) once (cached)."""
    from bids_syncact.core.denoise import clean, concatenate_runs

    if path.exists():
        return path
    T = sum(spec.n_kept for spec in specs)
    tmp = path.with_suffix('.tmp.npy')
    out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32,
                                    shape=(T, scale.n_voxels))  # fmt: skip
    member = networks.argmax(axis=0)
    member[networks.max(axis=0) == 0] = -1
    for start in range(0, scale.n_voxels, CHUNK):
        stop = min(start + CHUNK, scale.n_voxels)
        rng = np.random.default_rng([seed, 20, start])
        n = stop - start
        coupled = rng.random(n) < COUPLED_FRACTION
        weights = np.zeros((K, n))
        for v in np.flatnonzero(coupled):
            weights[rng.choice(K, size=rng.integers(1, 4), replace=False), v] = rng.normal(
                0.0, 1.0, size=None
            )
        loading = rng.uniform(0.5, 1.0, size=n) * (member[start:stop] >= 0)
        motion_w = 0.3 * rng.standard_normal((8, n))
        runs = []
        for units, spec in zip(raw, specs, strict=True):
            slow = _ar1(rng, spec.n_vols, N_NETWORKS, 0.97)
            bold = _ar1(rng, spec.n_vols, n, 0.3)
            bold += loading * slow[:, np.maximum(member[start:stop], 0)]
            bold += spec.confounds[:, :8] @ motion_w
            centred = units - units.mean(axis=0)
            bold += 0.5 * (centred / np.linalg.norm(centred, axis=0) * np.sqrt(spec.n_vols)
                           ) @ weights  # fmt: skip
            runs.append(clean(100.0 + bold, spec))
        out[:, start:stop] = concatenate_runs(runs, drop_silent=True)
    out.flush()
    del out
    tmp.rename(path)
    return path


# --- the paths -------------------------------------------------------------------------------


def old_nulls(raw, specs, S, alpha, shifts, codes, statistics, n_threads):
    """The null loop of ``fit_layer`` before issue 18 (commit 9138fab), verbatim in substance."""
    from bids_syncact.core.coupling import sparse_code
    from bids_syncact.core.fbn import clean_dictionary
    from bids_syncact.core.nulls import shift_runs

    magnitude = np.abs(codes)
    exceed = np.zeros(codes.shape, dtype=np.int32)
    max_null = np.zeros((len(shifts), codes.shape[0]))
    stats = []
    for i, row in enumerate(shifts):
        null = np.abs(sparse_code(clean_dictionary(shift_runs(raw, row), specs), S, alpha,
                                  n_threads=n_threads))  # fmt: skip
        exceed += null >= magnitude
        max_null[i] = null.max(axis=1, initial=0.0)
        stats.append(statistics(null))
    return exceed, max_null, np.stack(stats)


def new_nulls(raw, specs, S, alpha, shifts, codes, statistics, n_threads):
    """``fit_layer``'s null stage now (CPU)."""
    from bids_syncact.core import _nullsolve

    tally = _nullsolve.batched(raw, specs, S, alpha, shifts, codes, statistics=statistics,
                               n_threads=n_threads)  # fmt: skip
    return tally.exceed, tally.max_null, tally.stats


PATHS = {'old': old_nulls, 'new': new_nulls}


def _rss_kb() -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0


class PeakSampler(threading.Thread):
    """Largest RSS of this process every 20 ms while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = _rss_kb(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, _rss_kb())


def problem(scale_name: str, data: Path):
    from bids_syncact.bids.io import PagedArray

    scale = SCALES[scale_name]
    raw, specs = make_runs(scale)
    networks = make_networks(scale.n_voxels)
    path = make_bold(data / f'{scale_name}-bold.npy', scale, raw, specs, networks)
    return raw, specs, PagedArray(path), networks


def resolve_alpha(alpha: str, raw, specs, S, n_threads: int) -> float:
    """A number, or ``auto``: chosen by blocked cross-validation as the app does."""
    if alpha != 'auto':
        return float(alpha)
    from bids_syncact.core.fbn import clean_dictionary, sample_clock
    from bids_syncact.core.selection import choose_alpha

    times, runs = sample_clock(specs)
    return choose_alpha(clean_dictionary(raw, specs), S, times, runs, n_threads=n_threads).alpha


def worker(args) -> dict:
    """One path on one scale and alpha, in a fresh process: seconds, memory, outputs saved."""
    from bids_syncact.core.calibration import network_statistics
    from bids_syncact.core.coupling import sparse_code
    from bids_syncact.core.fbn import clean_dictionary
    from bids_syncact.core.nulls import draw_shifts

    raw, specs, S, networks = problem(args.scale, args.data)
    alpha = float(args.alpha)
    codes = sparse_code(clean_dictionary(raw, specs), S, alpha, n_threads=args.threads)
    # the same first nulls for every path: drawn for the most any path runs
    shifts = draw_shifts([len(x) for x in raw], [s.t_r for s in specs], args.n_draw, seed=0)
    shifts = shifts[: args.n_nulls]

    def statistics(maps):
        return network_statistics(maps, networks)

    before = _rss_kb()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    exceed, max_null, stats = PATHS[args.path](raw, specs, S, alpha, shifts, codes, statistics,
                                               args.threads)  # fmt: skip
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    np.savez(args.save, exceed=exceed, max_null=max_null, stats=stats)
    return {
        'seconds': seconds,
        'n_nulls': args.n_nulls,
        'seconds_per_null': seconds / args.n_nulls,
        'rss_before_gb': before / 2**20,
        'peak_added_gb': (sampler.peak - before) / 2**20,
        'nonzero_fraction_real': float(np.mean(codes != 0)),
    }


# --- what an FFT would give -------------------------------------------------------------------


def fft_probe(raw, specs, S, n_nulls: int, n_voxels: int = 256, seed: int = 0) -> dict:
    """Products ``D'S`` of ``n_nulls`` nulls on one voxel block: direct against FFT (one thread).

    Direct: the block's float64 product with the nulls' cleaned dictionaries side by side (what
    the solver does). FFT: per run, the circular cross-correlation of every unit's raw (centred)
    activations with every voxel (zeros at dropped volumes) at all shifts, then each null's
    shift picked and scaled by its unit's cleaned norm (``c = |d|^2 / d'x``, per run and shift,
    0 for a zero column). What is done once per batch (the side-by-side dictionaries, the
    scales, the units' spectra) is left out of both timings; both are timed for all
    ``n_nulls`` at once, the FFT's best case (it computes every shift whatever the number used).
    """
    import scipy.fft
    from threadpoolctl import threadpool_limits

    from bids_syncact.core._nullsolve import null_dictionaries
    from bids_syncact.core.nulls import draw_shifts

    shifts = draw_shifts([len(x) for x in raw], [s.t_r for s in specs], n_nulls, seed=seed)
    Ds = null_dictionaries(raw, specs, shifts)  # (B, T, K)
    block = np.asarray(S[:, :n_voxels])
    wide = np.ascontiguousarray(Ds.astype(np.float64).transpose(1, 0, 2)).reshape(len(block), -1)
    per_run, row = [], 0
    for r, (x, spec) in enumerate(zip(raw, specs, strict=True)):
        centred = x - x.mean(axis=0)  # the cleaning removes the mean: roll, then centre, is equal
        shifted = np.stack([np.roll(centred, int(s), axis=0)[spec.sample_mask]
                            for s in shifts[:, r]])  # fmt: skip
        d64 = Ds[:, row : row + spec.n_kept].astype(np.float64)
        dx = np.einsum('btk,btk->bk', d64, shifted)
        scale = np.divide(np.einsum('btk,btk->bk', d64, d64), dx, out=np.zeros_like(dx),
                          where=dx != 0)  # fmt: skip
        spectrum = np.conj(scipy.fft.rfft(centred, axis=0)).T[:, None, :]  # (K, 1, n_freq)
        per_run.append((spec, row, spectrum, scale, shifts[:, r]))
        row += spec.n_kept
    sub = 16  # voxels per transform batch: (K, 16, n) float64 stays in cache

    def by_fft() -> tuple[np.ndarray, float]:
        fft = np.zeros((n_voxels, n_nulls, K))
        inverse_s = 0.0  # the inverse transforms alone: the FFT's floor
        for spec, row, spectrum, scale, lags in per_run:
            S0 = np.zeros((n_voxels, spec.n_vols))
            S0[:, spec.sample_mask] = block[row : row + spec.n_kept].T
            spectra = scipy.fft.rfft(S0, axis=-1)
            for v in range(0, n_voxels, sub):
                # sum_t S0[v, t] x[t - s, k] for every shift s: irfft(rfft(S0) conj(rfft(x)))
                product = spectra[None, v : v + sub] * spectrum
                tick = time.perf_counter()
                corr = scipy.fft.irfft(product, n=spec.n_vols, axis=-1)  # (K, sub, n)
                inverse_s += time.perf_counter() - tick
                fft[v : v + sub] += corr[:, :, lags].transpose(1, 2, 0) * scale[None]
        return fft, inverse_s

    timings = {'direct': [], 'fft': [], 'inverse': []}
    with threadpool_limits(1):
        for _ in range(3):  # the best of 3: the machine is shared
            start = time.perf_counter()
            direct = (block.astype(np.float64).T @ wide).reshape(n_voxels, n_nulls, K)
            timings['direct'].append(time.perf_counter() - start)
            start = time.perf_counter()
            fft, inverse_s = by_fft()
            timings['fft'].append(time.perf_counter() - start)
            timings['inverse'].append(inverse_s)
    direct_s, fft_s, inverse_s = (min(timings[k]) for k in ('direct', 'fft', 'inverse'))
    error = np.abs(fft - direct).max() / np.abs(direct).max()
    return {
        'voxels': n_voxels,
        'nulls': n_nulls,
        'direct_us_per_null_voxel': 1e6 * direct_s / (n_nulls * n_voxels),
        'fft_us_per_null_voxel': 1e6 * fft_s / (n_nulls * n_voxels),
        'fft_inverse_only_us_per_null_voxel': 1e6 * inverse_s / (n_nulls * n_voxels),
        'fft_over_direct': fft_s / direct_s,
        'max_relative_difference': float(error),
    }


def read_pass_seconds(S, chunk: int = 256) -> float:
    """One pass over ``S`` in the solver's voxel blocks, converted to float64, nothing solved."""
    start = time.perf_counter()
    for b in range(0, S.shape[1], chunk):
        np.asarray(S[:, b : b + chunk], dtype=np.float64)
    return time.perf_counter() - start


# --- the run ----------------------------------------------------------------------------------


def _spawn(args, scale, alpha, path, n_nulls, n_draw, save) -> dict:
    command = [sys.executable, __file__, '--worker', '--scale', scale, '--alpha', repr(alpha),
               '--path', path, '--n-nulls', str(n_nulls), '--n-draw', str(n_draw),
               '--save', str(save),
               '--threads', str(args.threads), '--data', str(args.data)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f'{path} at {scale}: {done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(old: Path, new: Path, n: int, full: bool) -> dict:
    a, b = np.load(old), np.load(new)
    out = {
        'max_null_identical': bool(np.array_equal(a['max_null'][:n], b['max_null'][:n])),
        'network_stats_identical': bool(np.array_equal(a['stats'][:n], b['stats'][:n])),
    }
    if full:
        out['exceed_identical'] = bool(np.array_equal(a['exceed'], b['exceed']))
    return out


def run_scale(args, scale: str) -> dict:
    from bids_syncact.core.nulls import allowed_shifts

    raw, specs, S, _ = problem(scale, args.data)
    n_max = min(allowed_shifts(spec.n_vols, spec.t_r).size for spec in specs)
    if scale == 'demo':
        n_old = n_new = min(args.nulls_demo, n_max)
    else:
        n_old, n_new = args.nulls_hcp, max(args.nulls_hcp, args.nulls_hcp_new)
    from bids_syncact.core._nullsolve import batch_size

    size = batch_size(K, S.shape[1])
    n_batches_99 = -(-99 // size)
    read_s = read_pass_seconds(S)
    result = {'T': int(S.shape[0]), 'K': K, 'V': int(S.shape[1]), 'runs': len(specs),
              'batch_size': size, 'read_pass_seconds': read_s, 'alphas': {}}  # fmt: skip
    for alpha_arg in args.alphas:
        alpha = resolve_alpha(alpha_arg, raw, specs, S, args.threads)
        rows = {}
        files = {path: args.data / f'{scale}-{alpha_arg}-{path}.npz' for path in PATHS}
        for path in PATHS:  # old, then new: side by side, same process load
            n = n_old if path == 'old' else n_new
            rows[path] = _spawn(args, scale, alpha, path, n, max(n_old, n_new), files[path])
            print(f'{scale} alpha {alpha_arg} ({alpha:.4g}) {path}: {n} nulls, '
                  f'{rows[path]["seconds_per_null"]:.3f} s per null', flush=True)  # fmt: skip
        n_new_used = rows['new']['n_nulls']
        # 99 nulls: the new path pays one pass over S per batch, its measured run one pass
        # for n_new nulls (at most a batch).
        new_99 = (rows['new']['seconds'] - read_s) / n_new_used * 99 + read_s * n_batches_99
        rows['estimate_99_nulls_seconds'] = {'old': rows['old']['seconds_per_null'] * 99,
                                             'new': new_99}  # fmt: skip
        rows['speedup_per_null'] = rows['old']['seconds_per_null'] / (new_99 / 99)
        rows['same_outputs'] = _compare(files['old'], files['new'], min(n_old, n_new),
                                        full=n_old == n_new)  # fmt: skip
        result['alphas'][alpha_arg] = {'alpha': alpha, **rows}
    result['fft_probe'] = fft_probe(raw, specs, S, min(99, n_max))
    return result


def _machine() -> dict:
    return {
        'cpu_count': os.cpu_count(),
        'cpus_usable': len(os.sched_getaffinity(0)),
        'platform': platform.platform(),
        'python': platform.python_version(),
        'numpy': np.__version__,
        'load_average': list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scales', nargs='+', choices=sorted(SCALES), default=['demo', 'hcp'])
    parser.add_argument('--alphas', nargs='+', default=['auto', '0.02'],
                        help="numbers, or 'auto' (cross-validated as the app does)")  # fmt: skip
    parser.add_argument('--nulls-demo', type=int, default=99)
    parser.add_argument('--nulls-hcp', type=int, default=3, help='old path, HCP scale')
    parser.add_argument('--nulls-hcp-new', type=int, default=16, help='new path: one batch')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--data', type=Path, default=Path('.cache/bench-nulls'))
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('results_nulls.json'))
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--scale', help=argparse.SUPPRESS)
    parser.add_argument('--alpha', help=argparse.SUPPRESS)
    parser.add_argument('--path', help=argparse.SUPPRESS)
    parser.add_argument('--n-nulls', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--n-draw', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--save', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    results = {'machine_at_start': _machine(), 'threads': args.threads, 'scales': {}}
    for scale in args.scales:
        results['scales'][scale] = run_scale(args, scale)
    results['machine_at_end'] = _machine()
    args.out.write_text(json.dumps(results, indent=1) + '\n')
    print(table(results))


def table(results: dict) -> str:
    header = (f'{"scale":6} {"alpha":>7} {"old s/null":>10} {"new s/null":>10} {"speed-up":>8} '
              f'{"old 99 s":>8} {"new 99 s":>8} {"+GB old":>7} {"+GB new":>7} identical')  # fmt: skip
    lines = [header]
    for scale, res in results['scales'].items():
        for row in res['alphas'].values():
            per_null = row['estimate_99_nulls_seconds']['new'] / 99
            lines.append(
                f'{scale:6} {row["alpha"]:7.4f} {row["old"]["seconds_per_null"]:10.3f} '
                f'{per_null:10.3f} {row["speedup_per_null"]:8.2f} '
                f'{row["estimate_99_nulls_seconds"]["old"]:8.1f} '
                f'{row["estimate_99_nulls_seconds"]["new"]:8.1f} '
                f'{row["old"]["peak_added_gb"]:7.2f} {row["new"]["peak_added_gb"]:7.2f} '
                f'{all(row["same_outputs"].values())}'
            )
        fft = res['fft_probe']
        lines.append(f'{scale:6} FFT/direct products of 99 nulls: {fft["fft_over_direct"]:.2f} '
                     f'(inverse transforms alone {fft["fft_inverse_only_us_per_null_voxel"]:.1f} '
                     f'us vs direct {fft["direct_us_per_null_voxel"]:.1f} us per null and voxel; '
                     f'max rel. difference {fft["max_relative_difference"]:.1e})')  # fmt: skip
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
