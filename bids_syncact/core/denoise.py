"""Denoise both sides identically (DESIGN.md section 2.3).

The synchronized activations ``D`` and every chunk of BOLD voxels go through :func:`clean` with
the same :class:`CleanSpec`: one ``nilearn.signal.clean`` call (confounds, sample mask, cosine
high-pass, linear detrend), then each column centred and scaled to unit L2 norm. Every step acts
on each column alone and linearly, so cleaning ``D`` and the voxels apart, chunk by chunk, is the
same operation as cleaning them side by side.

Nilearn's own z-scoring is left off: the unit-norm scaling is the standardisation, and a column
that the confounds explain entirely (residual at rounding level) comes out as zeros instead of
rounding noise scaled up to unit norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nilearn.signal import clean as nilearn_clean
from nilearn.signal import create_cosine_drift

from bids_syncact.errors import InputDataError

#: Fewest volumes a run may keep after dummies, non-steady-state volumes and scrubbing.
MIN_KEPT_VOLUMES = 10
#: Fewest degrees of freedom a run may keep once confounds, cosines and the linear trend are out.
MIN_RESIDUAL_DOF = 10
#: A cleaned column whose norm is at most this fraction of its input's norm (kept volumes) is
#: rounding noise (a float32 input carries relative errors around 1e-7), and is set to zero.
ZERO_RELATIVE_NORM = 1e-5


@dataclass(frozen=True, eq=False)
class CleanSpec:
    """Everything ``nilearn.signal.clean`` needs for one run, shared by ``D`` and the BOLD.

    Parameters
    ----------
    n_vols : int
        Stored volumes of the run, dummies and non-steady-state volumes included.
    t_r : float
        Repetition time (s).
    sample_mask : ndarray of shape (n_kept,)
        Kept volumes, sorted original indices (see :func:`sample_mask_for`).
    confounds : ndarray of shape (n_vols, n_confounds) or None
        Nuisance regressors over all stored volumes; None or no columns: none.
    high_pass : float or None
        Cut-off of the discrete cosine high-pass (Hz), nilearn's ``filter='cosine'``; None when
        ``confounds`` already hold fMRIPrep's ``cosineXX`` columns (never both).
    detrend : bool
        Remove a linear trend (over the kept volumes) from signals and confounds.
    name : str
        What the run is called in refusals.

    Raises
    ------
    InputDataError
        When the confounds, cosines and trend leave fewer than ``MIN_RESIDUAL_DOF`` degrees of
        freedom in the kept volumes.
    """

    n_vols: int
    t_r: float
    sample_mask: np.ndarray
    confounds: np.ndarray | None = None
    high_pass: float | None = None
    detrend: bool = True
    name: str = 'the run'

    def __post_init__(self) -> None:
        mask = np.array(self.sample_mask, dtype=np.intp).ravel()
        if mask.size == 0 or np.any(np.diff(mask) <= 0) or mask[0] < 0 or mask[-1] >= self.n_vols:
            raise ValueError(f'sample_mask must be sorted unique indices below {self.n_vols}')
        if self.t_r <= 0:
            raise ValueError(f't_r must be positive, not {self.t_r}')
        confounds = None
        if self.confounds is not None:
            confounds = np.array(self.confounds, dtype=np.float64)
            confounds = confounds.reshape(len(confounds), -1)
            if len(confounds) != self.n_vols:
                raise ValueError(f'confounds have {len(confounds)} rows for {self.n_vols} volumes')
            if not np.isfinite(confounds).all():
                raise ValueError('confounds hold NaN or infinite values')
            confounds = confounds if confounds.shape[1] else None
        for array in (mask, confounds):
            if array is not None:
                array.flags.writeable = False
        object.__setattr__(self, 'sample_mask', mask)
        object.__setattr__(self, 'confounds', confounds)
        object.__setattr__(self, 't_r', float(self.t_r))
        dof = self.residual_dof
        if dof < MIN_RESIDUAL_DOF:
            raise InputDataError(
                f'{self.name}: {self.n_kept} kept volumes leave {dof} degrees of freedom after '
                f'{self.n_confounds} confounds, cosines and trend (fewer than {MIN_RESIDUAL_DOF}); '
                'use fewer confounds (--confounds-strategy none, or simple instead of compcor or '
                'scrubbing) or longer runs'
            )

    @property
    def n_kept(self) -> int:
        """Return the number of kept volumes."""
        return int(self.sample_mask.size)

    @property
    def n_confounds(self) -> int:
        """Return the number of confound columns."""
        return 0 if self.confounds is None else int(self.confounds.shape[1])

    @property
    def residual_dof(self) -> int:
        """Return the kept volumes minus the rank of everything regressed out of them."""
        columns = [np.ones((self.n_vols, 1))]
        if self.detrend:
            columns.append(np.arange(self.n_vols, dtype=float)[:, None])
        if self.confounds is not None:
            columns.append(self.confounds)
        if self.high_pass is not None:
            columns.append(cosine_regressors(self.n_vols, self.t_r, self.high_pass))
        design = np.hstack(columns)[self.sample_mask]
        return self.n_kept - int(np.linalg.matrix_rank(design))


def cosine_regressors(n_vols: int, t_r: float, high_pass: float) -> np.ndarray:
    """Return nilearn's discrete cosine high-pass basis, without its constant.

    Parameters
    ----------
    n_vols : int
        Stored volumes.
    t_r : float
        Repetition time (s).
    high_pass : float
        Cut-off (Hz).

    Returns
    -------
    ndarray of shape (n_vols, n_cosines)

    Examples
    --------
    >>> cosine_regressors(300, 1.0, 0.008).shape
    (300, 4)
    """
    return create_cosine_drift(high_pass, np.arange(n_vols) * t_r)[:, :-1]


def sample_mask_for(
    n_vols: int,
    drop_volumes: Sequence[int],
    confound_sample_mask: np.ndarray | None,
    *,
    name: str = 'the run',
) -> np.ndarray:
    """Return the kept volumes: all but the dropped ones and those the confounds mask out.

    Parameters
    ----------
    n_vols : int
        Stored volumes of the run.
    drop_volumes : sequence of int
        Original indices of volumes to drop (dummies, non-steady-state volumes).
    confound_sample_mask : ndarray or None
        The sample mask of nilearn's ``load_confounds_strategy``: indices of kept volumes (or a
        boolean mask over all volumes); None keeps all.
    name : str
        What the run is called in a refusal.

    Returns
    -------
    ndarray of shape (n_kept,)
        Sorted original indices, dtype intp.

    Raises
    ------
    InputDataError
        When fewer than ``MIN_KEPT_VOLUMES`` volumes remain.

    Examples
    --------
    >>> sample_mask_for(16, (0, 1), np.r_[0:5, 7:16])
    array([ 2,  3,  4,  7,  8,  9, 10, 11, 12, 13, 14, 15])
    """
    kept = np.ones(n_vols, dtype=bool)
    drops = np.asarray(drop_volumes, dtype=np.intp).ravel()
    kept[drops[(drops >= 0) & (drops < n_vols)]] = False
    if confound_sample_mask is not None:
        mask = np.asarray(confound_sample_mask)
        if mask.dtype == bool:
            if mask.shape != (n_vols,):
                raise ValueError(f'boolean sample mask of shape {mask.shape} for {n_vols} volumes')
            mask = np.flatnonzero(mask)
        in_mask = np.zeros(n_vols, dtype=bool)
        in_mask[mask.astype(np.intp)] = True
        kept &= in_mask
    indices = np.flatnonzero(kept)
    if indices.size < MIN_KEPT_VOLUMES:
        raise InputDataError(
            f'{name}: only {indices.size} of {n_vols} volumes remain after dummies, '
            f'non-steady-state volumes and scrubbing (at least {MIN_KEPT_VOLUMES} needed); '
            'lower --dummy-scans, choose another --confounds-strategy or exclude the run'
        )
    return indices


def clean(signals: np.ndarray, spec: CleanSpec) -> np.ndarray:
    """Return the signals cleaned, centred and at unit L2 norm per column, kept volumes only.

    The one function through which both ``D`` and the BOLD voxel chunks go (DESIGN.md 2.3).

    Parameters
    ----------
    signals : ndarray of shape (n_vols, n_cols)
        Columns (units or voxels) over all stored volumes of the run.
    spec : CleanSpec
        The run's confounds, sample mask, high-pass and detrending.

    Returns
    -------
    ndarray of shape (n_kept, n_cols), float32
        Zero-mean columns of unit L2 norm; a column that is constant, zero or explained entirely
        by the confounds is all zeros.

    Examples
    --------
    >>> spec = CleanSpec(n_vols=30, t_r=2.0, sample_mask=np.arange(2, 30))
    >>> x = np.c_[np.sin(np.arange(30.0)), np.full(30, 3.0)]
    >>> out = clean(x, spec)
    >>> out.shape, out.dtype.name, np.round(np.linalg.norm(out, axis=0), 6).tolist()
    ((28, 2), 'float32', [1.0, 0.0])
    """
    x = np.asarray(signals, dtype=np.float64)
    if x.ndim != 2 or len(x) != spec.n_vols:
        raise ValueError(f'signals of shape {x.shape} for a run of {spec.n_vols} volumes')
    if x.shape[1] == 0:
        return np.zeros((spec.n_kept, 0), dtype=np.float32)
    # A run shorter than one cosine period has no cosine to remove: nilearn would warn.
    cosines = (
        spec.high_pass is not None
        and cosine_regressors(spec.n_vols, spec.t_r, spec.high_pass).shape[1]
    )
    cleaned = nilearn_clean(
        x,
        detrend=spec.detrend,
        standardize=None,
        sample_mask=spec.sample_mask.copy(),
        confounds=None if spec.confounds is None else spec.confounds.copy(),
        standardize_confounds=True,
        filter='cosine' if cosines else False,
        high_pass=spec.high_pass if cosines else None,
        t_r=spec.t_r,
    )
    floor = ZERO_RELATIVE_NORM * _column_norms(x[spec.sample_mask])
    return unit_norm(cleaned, floor=floor)


def unit_norm(x: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """Return the columns centred and scaled to unit L2 norm, as float32.

    Parameters
    ----------
    x : ndarray of shape (n_vols, n_cols)
        Columns to scale.
    floor : ndarray of shape (n_cols,) or float
        A centred column whose norm is at most this (or not finite) becomes all zeros.

    Returns
    -------
    ndarray of shape (n_vols, n_cols), float32

    Examples
    --------
    >>> unit_norm(np.array([[1.0, 2.0], [3.0, 2.0]])).tolist()
    [[-0.7071067690849304, 0.0], [0.7071067690849304, 0.0]]
    """
    centred = np.array(x, dtype=np.float64)
    centred -= centred.mean(axis=0)
    norm = _column_norms(centred)
    zero = ~np.isfinite(norm) | (norm <= np.maximum(floor, 0.0))
    centred *= np.divide(1.0, norm, out=np.zeros_like(norm), where=~zero)
    centred[:, zero] = 0.0  # also where the input held NaN or inf
    return centred.astype(np.float32)


def _column_norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum('ij,ij->j', x, x))


def concatenate_runs(runs: Sequence[np.ndarray], *, drop_silent: bool = False) -> np.ndarray:
    """Return the runs' cleaned arrays stacked in time, each column at unit L2 norm again.

    Every run enters with unit-norm columns, so each weighs the same; the stacked column is
    scaled back to unit norm (by ``1/sqrt(n_runs)``), which keeps ``alpha`` independent of the
    number of runs (DESIGN.md 2.4). With ``drop_silent`` (the BOLD), a column all-zero in any
    run (a voxel without signal there: non-finite, constant, or explained by the confounds) is
    all-zero in the result: that voxel is left out, not modelled from the runs where it had
    signal. Without it (the dictionary), such a column keeps the runs where it is not zero.

    Parameters
    ----------
    runs : sequence of ndarray of shape (n_kept_r, n_cols)
        One cleaned array per run (see :func:`clean`), in run order, with the same columns.
    drop_silent : bool
        Zero a column everywhere when it is all-zero in one run.

    Returns
    -------
    ndarray of shape (sum of n_kept_r, n_cols), float32

    Examples
    --------
    >>> run = unit_norm(np.array([[1.0, 0.0, 1.0], [3.0, 0.0, 2.0], [2.0, 0.0, 4.0]]))
    >>> silent = run * np.array([1.0, 1.0, 0.0], dtype=np.float32)
    >>> both = concatenate_runs([run, silent], drop_silent=True)
    >>> both.shape, np.round(np.linalg.norm(both, axis=0), 6).tolist()
    ((6, 3), [1.0, 0.0, 0.0])
    >>> np.round(np.linalg.norm(concatenate_runs([run, silent]), axis=0), 6).tolist()
    [1.0, 0.0, 1.0]
    """
    if not runs:
        raise ValueError('no runs to concatenate')
    widths = {np.shape(run)[1] for run in runs}
    if len(widths) != 1:
        raise ValueError(f'runs have different numbers of columns: {sorted(widths)}')
    stacked = np.vstack(runs).astype(np.float64)
    if drop_silent:
        silent = np.zeros(stacked.shape[1], dtype=bool)
        for run in runs:
            silent |= ~np.any(run, axis=0)
        stacked[:, silent] = 0.0
    norm = _column_norms(stacked)
    stacked *= np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return stacked.astype(np.float32)
