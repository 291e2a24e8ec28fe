"""A subject's runs made ready for coupling: BOLD cleaned run by run, then stacked in time.

The cleaned arrays live in the work dir as uncompressed ``.npy`` files opened as memmaps, so no
step holds a whole run of voxels in memory. Each is written under a temporary name and moved into
place. A run's :class:`~bids_syncact.core.denoise.CleanSpec` is saved beside it, so that ``D`` is
cleaned later by exactly the spec its BOLD went through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_syncact.bids.bold import bold_to_memmap, iter_voxel_chunks
from bids_syncact.bids.io import PagedArray, allocate, release_pages, replacing
from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.errors import InputDataError

LOGGER = logging.getLogger('bids_syncact.runs')

#: Voxels cleaned or stacked at a time (a run of 1200 volumes: 1200 x 4096 x 8 B = 39 MB).
VOXEL_CHUNK = 4096


def save_clean_spec(path: Path, spec: CleanSpec) -> Path:
    """Save ``spec`` as an ``.npz`` (read back with :func:`load_clean_spec`)."""
    arrays = {
        'n_vols': np.int64(spec.n_vols), 't_r': np.float64(spec.t_r),
        'sample_mask': spec.sample_mask, 'detrend': np.bool_(spec.detrend),
        'high_pass': np.float64(np.nan if spec.high_pass is None else spec.high_pass),
        'name': np.str_(spec.name),
    }  # fmt: skip
    if spec.confounds is not None:
        arrays['confounds'] = spec.confounds
    with replacing(Path(path)) as tmp, open(tmp, 'wb') as stream:
        np.savez(stream, **arrays)
    return Path(path)


def load_clean_spec(path: Path) -> CleanSpec:
    """Return the :class:`CleanSpec` saved by :func:`save_clean_spec`."""
    with np.load(path, allow_pickle=False) as saved:
        high_pass = float(saved['high_pass'])
        return CleanSpec(
            n_vols=int(saved['n_vols']), t_r=float(saved['t_r']),
            sample_mask=saved['sample_mask'],
            confounds=saved.get('confounds'),
            high_pass=None if np.isnan(high_pass) else high_pass,
            detrend=bool(saved['detrend']), name=str(saved['name']),
        )  # fmt: skip


def clean_bold(
    preproc_bold: Path,
    mask_img: nib.Nifti1Image,
    spec: CleanSpec,
    out_path: Path,
    *,
    smoothing_fwhm: float | None = None,
    chunk: int = VOXEL_CHUNK,
) -> np.memmap:
    """Return a run's in-mask voxels cleaned by ``spec`` (:func:`~bids_syncact.core.denoise.clean`).

    The run is read once into a raw memmap beside ``out_path`` (removed afterwards), then cleaned
    in chunks of voxels. A voxel holding NaN or an infinite value in a kept volume cleans to an
    all-zero column, as a constant one does, and is left out of the maps (a warning counts them).

    Returns
    -------
    np.memmap of shape (n_kept, n_voxels), float32
        Unit-norm columns, voxels in the mask's C order.

    Raises
    ------
    InputDataError
        When every voxel of the mask is non-finite in a kept volume.
    """
    out_path = Path(out_path)
    raw_path = out_path.with_name(f'{out_path.stem}_raw.npy')
    raw = bold_to_memmap(preproc_bold, mask_img, raw_path, smoothing_fwhm)
    try:
        if raw.shape[0] != spec.n_vols:
            raise ValueError(f'{preproc_bold} has {raw.shape[0]} volumes, its spec {spec.n_vols}')
        with replacing(out_path) as tmp:
            cleaned = np.lib.format.open_memmap(
                tmp, mode='w+', dtype=np.float32, shape=(spec.n_kept, raw.shape[1])
            )
            allocate(tmp)
            n_bad = 0
            for cols in iter_voxel_chunks(raw.shape[1], chunk):
                signals = np.array(raw[:, cols])
                n_bad += int((~np.isfinite(signals[spec.sample_mask]).all(axis=0)).sum())
                cleaned[:, cols] = clean(signals, spec)
                release_pages(raw)  # one chunk resident at a time
                release_pages(cleaned)
            if n_bad == raw.shape[1]:
                raise InputDataError(
                    f'{Path(preproc_bold).name}: no finite voxel in the brain mask (every one '
                    'holds NaN or infinite values); rerun fMRIPrep or restore the file'
                )
            if n_bad:
                LOGGER.warning(
                    '%s: %d of %d voxels in the brain mask hold NaN or infinite values; they '
                    'are left out of the maps (NaN there)', spec.name, n_bad, raw.shape[1],
                )  # fmt: skip
            cleaned.flush()
            del cleaned
    finally:
        del raw
        raw_path.unlink(missing_ok=True)
    return np.load(out_path, mmap_mode='r')


def stack_runs(
    paths: Sequence[Path],
    out_path: Path,
    *,
    chunk: int = VOXEL_CHUNK,
    silent_path: Path | None = None,
) -> np.memmap:
    """Return the runs' cleaned arrays stacked in time, columns at unit norm again.

    :func:`~bids_syncact.core.denoise.concatenate_runs`, chunk by chunk of voxels; a voxel
    without signal in one run is left out of all (all-zero).

    Parameters
    ----------
    silent_path : Path, optional
        Where to save, as a boolean ``.npy`` of shape (n_voxels,), which voxels are all-zero
        (left out), found while stacking so that no one reads the stack again for them.

    Returns
    -------
    np.memmap of shape (sum of n_kept, n_voxels), float32
    """
    runs = [PagedArray(path) for path in paths]
    widths = {run.shape[1] for run in runs}
    if len(widths) != 1:
        raise ValueError(f'runs of different voxel counts: {sorted(widths)}')
    n_voxels = widths.pop()
    with replacing(Path(out_path)) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode='w+', dtype=np.float32, shape=(sum(len(r) for r in runs), n_voxels)
        )
        allocate(tmp)
        silent = np.zeros(n_voxels, dtype=bool)
        for cols in iter_voxel_chunks(n_voxels, chunk):
            stacked = concatenate_runs([run[:, cols] for run in runs], drop_silent=True)
            silent[cols] = ~np.any(stacked, axis=0)
            out[:, cols] = stacked
            release_pages(out)
        out.flush()
        del out
    del runs
    if silent_path is not None:
        with replacing(Path(silent_path)) as tmp, open(tmp, 'wb') as stream:
            np.save(stream, silent)
    return np.load(out_path, mmap_mode='r')
