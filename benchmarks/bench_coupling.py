"""Coupling solver: ``sparse_code`` side by side with SPAMS and scikit-learn on one problem.

DESIGN.md section 9, first bullet. The standard problem (``benchmarks/problems.py``): T=900,
K=256, V=230,000, smooth correlated unit-norm columns with cond(DᵀD) ≈ 1e6, alpha 0.02 (about 9%
non-zeros). Every method solves, for every voxel ``v``,

    min_a 1/2 ||s_v - D a||_2^2 + alpha ||a||_1

in one process, one after the other, with the same thread budget (``--threads``, default 2):

- ``sparse_code`` (``bids_syncact.core.coupling``): float32 ``D`` and ``S`` in, ``A`` out, on all
  V voxels, on ``--device``, after a warm-up call on 64 voxels (JIT, CUDA context) timed apart.
- SPAMS ``spams.lasso`` (package spams-bin, the method authors' C++ homotopy-LARS) on all V
  voxels. Its docstring: mode 2 solves ``0.5||x-Dalpha||_2^2 + lambda1||alpha||_1
  + 0.5 lambda2||alpha||_2^2``, so ``mode=2, lambda1=alpha, lambda2=0`` is our problem exactly.
  Inputs float64 and Fortran-ordered, as SPAMS needs (that conversion, about 6 s here, is timed
  apart as ``prep`` and not charged to it); ``numThreads = --threads``; other parameters at their
  defaults (``L=-1``: up to min(T, K) active units; ``max_length_path=-1``: 4K path steps;
  ``cholesky=False``: the matrix inversion lemma, ``--spams-cholesky`` for the other). Two
  variants, both timed by default (``--spams-variants``): ``D`` (``spams.lasso(X, D=D, ...)``)
  and ``Qq`` (``Q = DᵀD`` and ``q = DᵀX`` precomputed, that product timed as part of the
  solve); the faster one is SPAMS's row, the other is kept in the JSON. On the standard problem,
  2 cores: ``Qq`` 15-20 s, ``D`` 20-22 s (``Qq`` wins: one BLAS-3 product for all of ``DᵀX``);
  ``cholesky=True`` is no faster.
- scikit-learn ``Lasso(alpha=alpha/T, fit_intercept=False, precompute=DᵀD)`` (coordinate
  descent; its objective is ours divided by T) in float64 on the first ``--sklearn-voxels``
  voxels, three ways: one fit with a multi-output ``y``; a loop of single-voxel fits; and
  ``--threads`` multi-output fits on blocks of voxels in threads (one fit uses one core, as
  sklearn loops over targets serially, and its coordinate descent runs without the GIL). The
  fastest counts (so far the threaded one, then one multi-output fit: about 0.5-0.7 and
  0.9-1.2 ms per voxel), its time scaled linearly to V. Its ``tol`` (``--sklearn-tol``,
  default 1e-5) bounds the duality gap per voxel in our units (sklearn multiplies it by
  ``||y||² = 1``): about 3e-5 of a voxel's objective, inside the 1e-4 target (in practice its
  objective is within 1e-9 of SPAMS's).

Per method: wall seconds (the best of ``--repeats``), the ratio to ``sparse_code``'s, the
objective summed over voxels (float64, from ``D``, ``S`` and ``A``, the same code for all), its
relative difference to the best, the non-zero fraction, and the largest KKT violation
(``|d_kᵀr| - alpha`` where ``a_k = 0``, ``|d_kᵀr - alpha sign(a_k)|`` elsewhere, ``r = s - Da``).
scikit-learn's objective on its subset is compared with the others' on the same voxels.
Targets: the same objective as SPAMS within 1e-4 relative, faster than SPAMS, >= 30x faster
than scikit-learn.

Threads: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` are set before NumPy loads; ``threadpoolctl`` limits every BLAS and OpenMP
pool it finds (NumPy's, SciPy's, SPAMS's own OpenBLAS and libgomp, torch's), ``torch`` and
``numba`` get ``set_num_threads``; what was found is recorded in the JSON with the machine (CPU
model, cores, memory, load average, library versions). Timings on a shared 2-core VM vary by
10-20% from run to run: use ``--repeats`` and keep other heavy jobs off the machine.

Usage::

    .venv/bin/python benchmarks/bench_coupling.py                      # the standard problem
    .venv/bin/python benchmarks/bench_coupling.py --problem small      # V=5000, quick
    .venv/bin/python benchmarks/bench_coupling.py --methods spams sklearn --repeats 3
    .venv/bin/python benchmarks/bench_coupling.py --device cuda --out results_coupling_cuda.json

Results go to ``benchmarks/results_coupling.json`` (``--out``) and a table is printed.
``--solver-module`` points at another module (dotted name or ``.py`` path) with the same
``sparse_code`` to test the harness itself.
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == '--threads' and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith('--threads='):
            return arg.split('=', 1)[1]
    return '2'


# Before NumPy, torch, numba or SPAMS load their thread pools.
_THREADS = _threads_from_argv(sys.argv[1:])
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS'):
    os.environ[_var] = _THREADS

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import problems

METHODS = ('sparse_code', 'spams', 'sklearn')
OBJECTIVE_TARGET = 1e-4
SKLEARN_TARGET = 30.0


# ---------------------------------------------------------------------------------------------
# Threads and machine


def limit_threads(n: int) -> dict:
    """Limit every thread pool to ``n``; return what was found."""
    env = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS')
    info: dict = {'threads': n, 'env': {v: os.environ.get(v) for v in env}}
    import torch

    try:  # load SPAMS's own OpenBLAS and libgomp now, so that threadpoolctl limits them too
        import spams  # noqa: F401
    except ImportError:
        pass

    torch.set_num_threads(n)
    info['torch_threads'] = torch.get_num_threads()
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        info['numba_threads'] = numba.get_num_threads()
    except ImportError:
        info['numba_threads'] = None
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        info['threadpoolctl'] = 'not installed'
        return info
    threadpool_limits(limits=n)
    info['threadpoolctl'] = [
        {k: pool.get(k) for k in ('user_api', 'internal_api', 'prefix', 'version', 'num_threads')}
        for pool in threadpool_info()
    ]
    return info


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str) -> dict:
    """CPU model, cores, memory, library versions, and the GPU when on CUDA."""
    cpu = platform.processor()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal'):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info = {
        'cpu': cpu,
        'cpu_count': os.cpu_count(),
        'cpus_usable': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
        'memory_gb': mem_gb,
        'platform': platform.platform(),
        'python': platform.python_version(),
        'load_average_at_start': os.getloadavg() if hasattr(os, 'getloadavg') else None,
        'versions': {
            dist: _version(dist)
            for dist in (
                'numpy',
                'scipy',
                'torch',
                'numba',
                'spams-bin',
                'scikit-learn',
                'threadpoolctl',
                'bids-syncact',
            )
        },
    }
    if device.startswith('cuda'):
        import torch

        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
        info['cuda'] = torch.version.cuda
    return info


# ---------------------------------------------------------------------------------------------
# Evaluation, the same for every method


def _dense(A, start: int, stop: int) -> np.ndarray:
    block = A[:, start:stop]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float64)


def evaluate(D: np.ndarray, S: np.ndarray, A, alpha: float, chunk: int = 8192) -> dict:
    """Objective summed over voxels, non-zero fraction and KKT violations, in float64."""
    D64 = np.asarray(D, dtype=np.float64)
    V = S.shape[1]
    objective = 0.0
    nnz = 0
    kkt = np.empty(V)
    for start in range(0, V, chunk):
        stop = min(start + chunk, V)
        a = _dense(A, start, stop)
        r = np.asarray(S[:, start:stop], dtype=np.float64) - D64 @ a
        objective += 0.5 * np.einsum('tv,tv->', r, r) + alpha * np.abs(a).sum()
        nnz += np.count_nonzero(a)
        g = D64.T @ r
        bad = np.where(a == 0, np.abs(g) - alpha, np.abs(g - alpha * np.sign(a)))
        kkt[start:stop] = np.maximum(bad.max(axis=0), 0.0)
    return {
        'objective': float(objective),
        'nonzero_fraction': nnz / (A.shape[0] * V),
        'kkt_max': float(kkt.max()),
        'kkt_p99': float(np.quantile(kkt, 0.99)),
        'kkt_mean': float(kkt.mean()),
    }


def timed(fn, repeats: int, sync=None) -> tuple[list[float], object]:
    """Wall seconds of ``fn()`` for each repeat, and its last result."""
    seconds, out = [], None
    for _ in range(repeats):
        out = None
        start = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        seconds.append(time.perf_counter() - start)
    return seconds, out


# ---------------------------------------------------------------------------------------------
# The three methods


def load_solver(name: str):
    """``sparse_code`` from a dotted module name or a ``.py`` path."""
    if name.endswith('.py'):
        spec = importlib.util.spec_from_file_location('solver_under_test', name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(name)
    return module, module.sparse_code


def run_sparse_code(D, S, alpha, args) -> dict:
    module, sparse_code = load_solver(args.solver_module)
    if hasattr(module, 'set_threads'):
        module.set_threads(args.threads)
    kwargs = {'device': args.device}
    if args.tol is not None:
        kwargs['tol'] = args.tol
    if args.max_iter is not None:
        kwargs['max_iter'] = args.max_iter
    sync = None
    if args.device.startswith('cuda'):
        import torch

        sync = torch.cuda.synchronize
    # Warm-up on a few voxels, timed apart: JIT compilation (numba caches it on disk), the CUDA
    # context and kernels are paid once per process, not per problem.
    warmup, _ = timed(lambda: sparse_code(D, S[:, :64], alpha, **kwargs), 1, sync)
    seconds, A = timed(lambda: sparse_code(D, S, alpha, **kwargs), args.repeats, sync)
    if not isinstance(A, np.ndarray):  # a torch tensor on the device
        A = A.detach().cpu().numpy()
    return {
        'seconds': min(seconds),
        'seconds_all': seconds,
        'warmup_seconds_64_voxels': warmup[0],
        'call': f'{args.solver_module}.sparse_code(D, S, {alpha}, **{kwargs!r})',
        'A': A,
    }


def run_spams(D, S, alpha, args) -> dict:
    import spams

    start = time.perf_counter()
    X = np.asfortranarray(S, dtype=np.float64)
    D64 = np.asfortranarray(D, dtype=np.float64)
    prep = time.perf_counter() - start
    params = {
        'lambda1': alpha,
        'lambda2': 0.0,
        'mode': 2,
        'pos': False,
        'L': -1,
        'max_length_path': -1,
        'cholesky': args.spams_cholesky,
        'numThreads': args.threads,
        'verbose': False,
    }
    variants: dict = {}
    best = None
    for variant in args.spams_variants:
        if variant == 'D':

            def solve():
                return spams.lasso(X, D=D64, **params)

            call = 'spams.lasso(X, D=D, {})'
        else:

            def solve():
                Q = np.asfortranarray(D64.T @ D64)
                q = (X.T @ D64).T  # (K, V), Fortran-ordered without a copy
                return spams.lasso(X, Q=Q, q=q, **params)

            call = 'spams.lasso(X, Q=np.asfortranarray(D.T @ D), q=(X.T @ D).T, {})'
        seconds, A = timed(solve, args.repeats)
        call = call.format(', '.join(f'{k}={v!r}' for k, v in params.items()))
        variants[variant] = {'seconds': min(seconds), 'seconds_all': seconds, 'call': call}
        print(f'  spams {variant}: {min(seconds):.2f} s', flush=True)
        if best is None or min(seconds) < variants[best]['seconds']:
            best, best_A = variant, A
        del A
    return {
        **variants[best],
        'variant': best,
        'variants': variants,
        'prep_seconds': prep,
        'prep': 'np.asfortranarray(S, dtype=np.float64) and D likewise (not charged)',
        'A': best_A,
    }


def run_sklearn(D, S, alpha, args) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    m = min(args.sklearn_voxels, S.shape[1])
    T = D.shape[0]
    D64 = np.asfortranarray(D, dtype=np.float64)
    Y = np.asarray(S[:, :m], dtype=np.float64)
    gram = D64.T @ D64

    def make():
        return Lasso(
            alpha=alpha / T,
            fit_intercept=False,
            precompute=gram,
            tol=args.sklearn_tol,
            max_iter=args.sklearn_max_iter,
        )

    def multi():
        return make().fit(D64, Y).coef_.T

    def loop():
        A = np.empty((D.shape[1], m))
        for v in range(m):
            A[:, v] = make().fit(D64, Y[:, v]).coef_
        return A

    def fit_block(idx):
        return make().fit(D64, Y[:, idx]).coef_.reshape(len(idx), -1).T

    def threaded():
        # One multi-output fit per thread on a block of voxels: sklearn's coordinate descent
        # runs without the GIL, so this is how it uses more than one core.
        blocks = np.array_split(np.arange(m), args.threads)
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            return np.concatenate(list(pool.map(fit_block, blocks)), axis=1)

    candidates = [('multi_output', multi), ('per_voxel_loop', loop)]
    if args.threads > 1:
        candidates.append((f'multi_output_{args.threads}_threads', threaded))
    modes: dict = {}
    best = None
    for mode, fn in candidates:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', ConvergenceWarning)
            seconds, A = timed(fn, args.repeats)
        n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        modes[mode] = {
            'seconds': min(seconds),
            'seconds_all': seconds,
            'convergence_warnings': n_warn,
        }
        print(f'  sklearn {mode}: {min(seconds):.2f} s on {m} voxels', flush=True)
        if best is None or min(seconds) < modes[best]['seconds']:
            best, best_A = mode, A
    per_voxel = modes[best]['seconds'] / m
    return {
        'seconds': per_voxel * S.shape[1],
        'seconds_subset': modes[best]['seconds'],
        'seconds_per_voxel': per_voxel,
        'subset_voxels': m,
        'scaled': f'x {S.shape[1]} / {m} voxels (linear)',
        'mode': best,
        'modes': modes,
        'call': (
            f'Lasso(alpha={alpha}/{T}, fit_intercept=False, precompute=D.T @ D, '
            f'tol={args.sklearn_tol}, max_iter={args.sklearn_max_iter}).fit(D, S[:, :{m}])'
        ),
        'A': best_A,
    }


RUNNERS = {'sparse_code': run_sparse_code, 'spams': run_spams, 'sklearn': run_sklearn}


# ---------------------------------------------------------------------------------------------
# Report


def summarise(results: dict, D, S, alpha) -> dict:
    """Objectives, ratios and the targets, from the runs' ``A``."""
    full = [m for m in results if m != 'sklearn']
    for method, res in results.items():
        A = res.pop('A')
        if method == 'sklearn':
            m = res['subset_voxels']
            res.update(evaluate(D, S[:, :m], A, alpha))
            res['subset_objectives'] = {'sklearn': res['objective']}
            for other in full:
                A_other = results[other]['A_subset']
                res['subset_objectives'][other] = evaluate(D, S[:, :m], A_other, alpha)[
                    'objective'
                ]
        else:
            res.update(evaluate(D, S, A, alpha))
            m = results.get('sklearn', {}).get('subset_voxels', 0)
            res['A_subset'] = A[:, :m]
    for method in full:
        results[method].pop('A_subset')
    if full:
        best = min(results[m]['objective'] for m in full)
        for method in full:
            results[method]['objective_rel_to_best'] = (results[method]['objective'] - best) / best
    if 'sklearn' in results:
        sub = results['sklearn']['subset_objectives']
        best_sub = min(sub.values())
        results['sklearn']['subset_rel_to_best'] = {
            k: (v - best_sub) / best_sub for k, v in sub.items()
        }
        results['sklearn']['objective_rel_to_best'] = results['sklearn']['subset_rel_to_best'][
            'sklearn'
        ]
    targets: dict = {}
    if 'sparse_code' in results:
        ours = results['sparse_code']['seconds']
        for res in results.values():
            res['time_ratio_to_sparse_code'] = res['seconds'] / ours
        if 'spams' in results:
            spams_obj = results['spams']['objective']
            rel = (results['sparse_code']['objective'] - spams_obj) / spams_obj
            targets['objective_vs_spams_rel'] = rel
            targets['same_objective_within_1e-4'] = bool(abs(rel) <= OBJECTIVE_TARGET)
            targets['faster_than_spams'] = bool(ours < results['spams']['seconds'])
        if 'sklearn' in results:
            speedup = results['sklearn']['seconds'] / ours
            targets['speedup_vs_sklearn'] = speedup
            targets['at_least_30x_sklearn'] = bool(speedup >= SKLEARN_TARGET)
            # As users call it: one fit, which runs on one core (sklearn loops over targets).
            skl = results['sklearn']
            single = skl['modes']['multi_output']['seconds'] / skl['subset_voxels'] * S.shape[1]
            targets['speedup_vs_sklearn_single_fit'] = single / ours
    return targets


def print_table(results: dict, targets: dict) -> None:
    header = (
        f'{"method":<12} {"seconds":>10} {"x ours":>8} {"objective":>14} {"rel best":>10} '
        f'{"nonzero":>8} {"KKT max":>9}'
    )
    print(header)
    print('-' * len(header))
    for method, res in results.items():
        ratio = res.get('time_ratio_to_sparse_code')
        note = f'  ({res["subset_voxels"]} voxels, scaled)' if method == 'sklearn' else ''
        print(
            f'{method:<12} {res["seconds"]:>10.2f} '
            f'{"" if ratio is None else f"{ratio:.2f}":>8} {res["objective"]:>14.6f} '
            f'{res["objective_rel_to_best"]:>10.2e} {100 * res["nonzero_fraction"]:>7.2f}% '
            f'{res["kkt_max"]:>9.2e}{note}'
        )
    if 'sklearn' in results:
        sub = results['sklearn']['subset_objectives']
        rel = results['sklearn']['subset_rel_to_best']
        print('objectives on the sklearn subset: ' + ', '.join(
            f'{k} {v:.6f} ({rel[k]:+.1e})' for k, v in sub.items()))  # fmt: skip
    for key, value in targets.items():
        print(f'{key}: {value:.4g}' if isinstance(value, float) else f'{key}: {value}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--problem', choices=sorted(problems.PROBLEMS), default='standard')
    parser.add_argument('--voxels', type=int, default=None, help="override the problem's V")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--alpha', type=float, default=problems.ALPHA)
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu', help="sparse_code's device (cpu, cuda)")
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--tol', type=float, default=None, help="sparse_code's tol")
    parser.add_argument('--max-iter', type=int, default=None, help="sparse_code's max_iter")
    parser.add_argument('--solver-module', default='bids_syncact.core.coupling')
    parser.add_argument('--spams-variants', nargs='+', choices=('D', 'Qq'), default=['D', 'Qq'])
    parser.add_argument('--spams-cholesky', action='store_true')
    parser.add_argument('--sklearn-voxels', type=int, default=2000)
    parser.add_argument('--sklearn-tol', type=float, default=1e-5)
    parser.add_argument('--sklearn-max-iter', type=int, default=100_000)
    parser.add_argument('--out', type=Path, default=HERE / 'results_coupling.json')
    args = parser.parse_args(argv)
    if str(args.threads) != _THREADS:  # main() called with its own argv
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
            os.environ[var] = str(args.threads)

    threads = limit_threads(args.threads)
    kwargs = {'seed': args.seed}
    if args.voxels is not None:
        kwargs['V'] = args.voxels
    start = time.perf_counter()
    D, S = problems.PROBLEMS[args.problem](**kwargs)
    gen = time.perf_counter() - start
    T, K = D.shape
    V = S.shape[1]
    cond = problems.gram_condition(D)
    print(f'{args.problem} problem: T={T} K={K} V={V} alpha={args.alpha} cond(DᵀD)={cond:.3g} '
          f'(made in {gen:.1f} s); {args.threads} threads', flush=True)  # fmt: skip

    results: dict = {}
    for method in METHODS:
        if method not in args.methods:
            continue
        print(f'{method} ...', flush=True)
        try:
            results[method] = RUNNERS[method](D, S, args.alpha, args)
        except ImportError as err:
            print(f'  skipped: {err}', flush=True)
            continue
        print(f'  {results[method]["seconds"]:.2f} s', flush=True)
    targets = summarise(results, D, S, args.alpha)
    print_table(results, targets)

    report = {
        'problem': {
            'name': args.problem,
            'T': T,
            'K': K,
            'V': V,
            'alpha': args.alpha,
            'seed': args.seed,
            'cond_gram': cond,
            'generation_seconds': gen,
        },
        'machine': machine_info(args.device),
        'threads': threads,
        'device': args.device,
        'repeats': args.repeats,
        'results': results,
        'targets': targets,
    }
    args.out.write_text(json.dumps(report, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
