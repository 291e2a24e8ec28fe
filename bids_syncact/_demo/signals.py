"""Synthetic BOLD and fMRIPrep-style confounds for the demo dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

MOTION = ('trans_x', 'trans_y', 'trans_z', 'rot_x', 'rot_y', 'rot_z')
#: fMRIPrep's cosine basis cut-off (s).
HIGH_PASS_PERIOD_S = 128.0
N_ACOMPCOR = 5


def motion_parameters(rng: np.random.Generator, n_vols: int) -> np.ndarray:
    """Head motion as a random walk: translations (mm) and rotations (rad), ``(n_vols, 6)``."""
    steps = rng.standard_normal((n_vols, 6)) * np.array([0.03] * 3 + [0.0005] * 3)
    return np.cumsum(steps, axis=0)


def smooth_series(rng: np.random.Generator, n_vols: int, ar: float = 0.9) -> np.ndarray:
    """Draw a zero-mean, unit-variance AR(1) series."""
    x = np.zeros(n_vols)
    noise = rng.standard_normal(n_vols)
    for t in range(1, n_vols):
        x[t] = ar * x[t - 1] + noise[t]
    return (x - x.mean()) / x.std()


def cosine_basis(n_vols: int, t_r: float) -> np.ndarray:
    """Return fMRIPrep's discrete cosine high-pass basis (128 s): ``(n_vols, n_cosines)``."""
    n_cos = int(np.floor(2 * n_vols * t_r / HIGH_PASS_PERIOD_S))
    n = np.arange(n_vols)
    columns = [np.sqrt(2 / n_vols) * np.cos(np.pi * (2 * n + 1) * k / (2 * n_vols))
               for k in range(1, n_cos + 1)]  # fmt: skip
    return np.column_stack(columns) if columns else np.zeros((n_vols, 0))


def confounds_table(
    rng: np.random.Generator,
    *,
    t_r: float,
    n_dummies: int,
    motion: np.ndarray,
    white_matter: np.ndarray,
    csf: np.ndarray,
    global_signal: np.ndarray,
) -> tuple[pd.DataFrame, dict]:
    """Build fMRIPrep's ``desc-confounds_timeseries`` columns and sidecar from given signals.

    Expansions (``_derivative1``, ``_power2``, ``_derivative1_power2``), framewise displacement,
    DVARS, aCompCor with its sidecar metadata, ``cosineXX`` and ``non_steady_state_outlierXX``:
    what nilearn's ``load_confounds_strategy`` reads.
    """
    n_vols = len(motion)
    base = {'global_signal': global_signal, 'csf': csf, 'white_matter': white_matter,
            'csf_wm': (csf + white_matter) / 2}  # fmt: skip
    base |= dict(zip(MOTION, motion.T, strict=True))
    table: dict[str, np.ndarray] = {}
    for name, series in base.items():
        derivative = np.r_[np.nan, np.diff(series)]
        table[name] = series
        table[f'{name}_derivative1'] = derivative
        table[f'{name}_power2'] = series**2
        table[f'{name}_derivative1_power2'] = derivative**2
    rotation_mm = np.abs(np.diff(motion[:, 3:], axis=0)) * 50.0  # 50 mm head radius
    fd = np.abs(np.diff(motion[:, :3], axis=0)).sum(axis=1) + rotation_mm.sum(axis=1)
    table['framewise_displacement'] = np.r_[np.nan, fd]
    dvars = np.abs(np.diff(global_signal)) + rng.uniform(5, 10, n_vols - 1)
    table['dvars'] = np.r_[np.nan, dvars]
    table['std_dvars'] = np.r_[np.nan, dvars / dvars.mean()]
    table['rmsd'] = np.r_[np.nan, fd * 0.5]
    noise = np.column_stack([white_matter, csf, rng.standard_normal((n_vols, 20))])
    noise = noise - noise.mean(axis=0)
    u, s, _ = np.linalg.svd(noise, full_matrices=False)
    sidecar = {}
    explained = s**2 / (s**2).sum()
    for k in range(N_ACOMPCOR):
        table[f'a_comp_cor_{k:02d}'] = u[:, k]
        sidecar[f'a_comp_cor_{k:02d}'] = {
            'Method': 'aCompCor', 'Mask': 'combined', 'Retained': True,
            'SingularValue': float(s[k]), 'VarianceExplained': float(explained[k]),
            'CumulativeVarianceExplained': float(explained[: k + 1].sum()),
        }  # fmt: skip
    for k, column in enumerate(cosine_basis(n_vols, t_r).T):
        table[f'cosine{k:02d}'] = column
    for k in range(n_dummies):
        flag = np.zeros(n_vols)
        flag[k] = 1.0
        table[f'non_steady_state_outlier{k:02d}'] = flag
    frame = pd.DataFrame(table)
    for column in frame.columns:
        sidecar.setdefault(column, {'Description': f'{column} (synthetic, fMRIPrep naming)'})
    return frame, sidecar


def synthesize_bold(
    rng: np.random.Generator,
    *,
    baseline: np.ndarray,
    mask: np.ndarray,
    maps: np.ndarray,
    regressors: np.ndarray,
    t_r: float,
    n_dummies: int,
    peak_psc: float,
    noise_psc: float,
    motion_psc: float,
    wm_psc: float,
    drift_psc: float,
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """BOLD ``(*shape, n_vols)`` float32: planted effects, noise and confounds, and the confounds.

    Every voxel of the mask gets ``peak_psc`` % of its baseline times ``maps @ regressors``
    (maps in [0, 1], regressors with peak 1), plus motion-driven, white-matter and drift signals
    (each a stated % of baseline), plus white noise of ``noise_psc`` %. The first ``n_dummies``
    volumes are brighter (T1 saturation), as fMRIPrep's non-steady-state flags say.
    """
    n_vols = regressors.shape[0]
    inside = mask.astype(bool)
    n_in = int(inside.sum())
    motion = motion_parameters(rng, n_vols)
    motion_z = (motion - motion.mean(axis=0)) / motion.std(axis=0)
    wm = smooth_series(rng, n_vols)
    csf = smooth_series(rng, n_vols, ar=0.7)
    drift = np.linspace(-1, 1, n_vols) + 0.5 * (np.linspace(-1, 1, n_vols) ** 2 - 1 / 3)

    effect = maps[inside] @ regressors.T * (peak_psc / 100)  # (n_in, n_vols)
    effect += rng.standard_normal((n_in, 6)) @ motion_z.T * (motion_psc / 100 / np.sqrt(6))
    effect += rng.uniform(0, 1, (n_in, 1)) * wm[None, :] * (wm_psc / 100)
    effect += rng.uniform(0.5, 1, (n_in, 1)) * drift[None, :] * (drift_psc / 100)
    effect += rng.standard_normal((n_in, n_vols)) * (noise_psc / 100)
    saturation = np.ones(n_vols)
    saturation[:n_dummies] += 0.4 * np.exp(-np.arange(n_dummies))
    data = np.zeros((*mask.shape, n_vols), dtype=np.float32)
    data[inside] = baseline[inside][:, None] * (1 + effect) * saturation[None, :]
    outside = ~inside
    data[outside] = 20.0 + rng.standard_normal((int(outside.sum()), n_vols)) * 2.0

    white_matter = 800 * (1 + wm * wm_psc / 100 + drift * drift_psc / 100) * saturation
    white_matter += rng.standard_normal(n_vols) * 0.5
    csf_signal = 500 * (1 + csf * 0.01) * saturation + rng.standard_normal(n_vols) * 0.5
    table, sidecar = confounds_table(
        rng, t_r=t_r, n_dummies=n_dummies, motion=motion, white_matter=white_matter,
        csf=csf_signal, global_signal=data[inside].mean(axis=0).astype(float),
    )  # fmt: skip
    return data, table, sidecar
