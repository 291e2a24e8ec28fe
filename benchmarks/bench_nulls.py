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

Per scale and alpha the real map is solved once (not timed), then the nulls by each path, one
after the other in one process, each given the same threads (``--threads``, default 2):

- ``old``: the loop ``fit_layer`` ran before issue 18: per null, clean the shifted dictionary,
  ``sparse_code`` it against the whole ``S`` (read again from disk), then exceedances, the maximum
  and the network statistics of the map (``calibration.network_statistics``).
- ``new``: ``fit_layer``'s own null stage (``core/_nullsolve.py``): ``S`` read once per batch of
  nulls (``--budget-gb``), every null of the batch solved while a voxel block is in memory.

Both are timed on the same first ``--nulls-hcp`` (default 6) nulls at HCP scale (the full
``--nulls-demo``, default 99, at demo scale); seconds per null are the wall time over the nulls.
The new path's outputs are compared with the old one's (``max |codes|`` difference, exceed
counts, maxima, network statistics). The whole null stage at 99 nulls is extrapolated as
``setup + 99 * seconds per null`` (the per-null costs are independent of the number of nulls;
the new path reads ``S`` once per batch, counted by batches). Peak memory: the RSS added by each
path over what the process held before it (``ru_maxrss`` cannot go down, so each path runs in a
fresh child process; ``--no-isolate`` runs them in this one).

Machine load: the host is a shared 2-core VM; only the ratios of one run mean anything, and the
load average at start and end is recorded.

Usage::

    .venv/bin/python benchmarks/bench_nulls.py                  # both scales
    .venv/bin/python benchmarks/bench_nulls.py --scales demo    # seconds
    .venv/bin/python benchmarks/bench_nulls.py --nulls-hcp 4 --alphas 0.05

Results go to ``benchmarks/results_nulls.json`` (``--out``) and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import unit_time_courses  # noqa: E402

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
