"""fMRIPrep's BOLD, brain masks and confounds, read for denoising (DESIGN.md section 2.3).

Every run is read once, volume by volume, into an uncompressed float32 memmap of its in-mask
voxels; downstream steps work in voxel chunks from it. Confounds come from nilearn's
``load_confounds_strategy``. Unreadable or inconsistent files are refused with one line
(:class:`~bids_syncact.errors.InputDataError`, exit 65).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import smooth_img
from nilearn.interfaces.fmriprep import load_confounds_strategy
from nilearn.interfaces.fmriprep.load_confounds_utils import get_confounds_file
from nilearn.masking import intersect_masks

from bids_syncact.bids.io import allocate, release_pages, replacing
from bids_syncact.core.denoise import CleanSpec, sample_mask_for
from bids_syncact.errors import InputDataError

#: ``--confounds-strategy`` values; all but ``none`` are nilearn's preset strategies.
STRATEGIES = ('simple', 'scrubbing', 'compcor', 'none')
#: Absolute tolerance (mm) when comparing the affines of two images on the same grid.
AFFINE_ATOL_MM = 1e-3


def load_confounds(
    preproc_bold: Path, strategy: str, n_vols: int, drop_volumes: tuple[int, ...]
) -> tuple[np.ndarray | None, np.ndarray]:
    """Return a run's confounds and the volumes it keeps.

    nilearn finds fMRIPrep's ``desc-confounds_timeseries.tsv`` (or the older ``_regressors.tsv``)
    and its JSON next to the BOLD by the BOLD's entities. Its presets keep fMRIPrep's
    ``cosineXX`` columns (``high_pass``), and turn the ``non_steady_state_outlierXX`` columns (and,
    with ``scrubbing``, the volumes over its FD/DVARS thresholds and the segments too short
    between them) into a sample mask instead of regressors.

    Parameters
    ----------
    preproc_bold : Path
        fMRIPrep's ``desc-preproc_bold.nii.gz``.
    strategy : {'simple', 'scrubbing', 'compcor', 'none'}
        nilearn's preset with its defaults; ``none`` reads no confounds.
    n_vols : int
        Stored volumes of the run.
    drop_volumes : tuple of int
        Original indices of volumes to drop (dummies, non-steady-state volumes).

    Returns
    -------
    confounds : ndarray of shape (n_vols, n_confounds) or None
        Demeaned regressors over all stored volumes; None with ``none``.
    sample_mask : ndarray of shape (n_kept,)
        Kept volumes, sorted original indices.

    Raises
    ------
    InputDataError
        When the confounds file is missing, unreadable, lacks the strategy's columns, holds
        non-finite values or has a row count other than ``n_vols``, or too few volumes remain.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f'unknown confounds strategy {strategy!r}; one of {STRATEGIES}')
    name = _run_name(preproc_bold)
    if strategy == 'none':
        return None, sample_mask_for(n_vols, drop_volumes, None, name=name)
    try:
        with warnings.catch_warnings():
            # Everything scrubbed: nilearn warns, then averages nothing; we refuse below.
            warnings.filterwarnings('ignore', message='All volumes were marked')
            warnings.filterwarnings('ignore', message='Mean of empty slice')
            warnings.filterwarnings('ignore', message='invalid value encountered')
            table, mask = load_confounds_strategy(str(preproc_bold), denoise_strategy=strategy)
    except KeyError as err:  # scrubbing reads framewise_displacement and std_dvars directly
        raise InputDataError(
            f'{_confounds_name(preproc_bold)}: no column {err} for --confounds-strategy '
            f'{strategy}; choose another strategy or rerun fMRIPrep'
        ) from err
    except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
        raise InputDataError(
            f'{_confounds_name(preproc_bold)}: cannot load --confounds-strategy {strategy} '
            f'confounds: {err}; choose another strategy or check the fMRIPrep outputs'
        ) from err
    confounds = table.to_numpy(dtype=np.float64)
    if len(confounds) != n_vols:
        raise InputDataError(
            f'{_confounds_name(preproc_bold)} has {len(confounds)} rows for {n_vols} volumes of '
            f'{preproc_bold.name}: confounds and BOLD come from different fMRIPrep runs'
        )
    if mask is not None and np.size(mask) == 0:
        mask = np.zeros(0, dtype=np.intp)
    # Before the values: with every volume scrubbed, nilearn's demeaning leaves only NaN.
    kept = sample_mask_for(n_vols, drop_volumes, mask, name=name)
    bad = [
        str(c)
        for c, ok in zip(table.columns, np.isfinite(confounds).all(axis=0), strict=True)
        if not ok
    ]
    if bad:
        raise InputDataError(
            f'{_confounds_name(preproc_bold)}: non-numeric or missing values in '
            f'{", ".join(bad[:5])}; check the fMRIPrep outputs or choose another strategy'
        )
    return confounds, kept


def clean_spec_for_run(
    preproc_bold: Path,
    *,
    strategy: str,
    t_r: float,
    n_vols: int,
    drop_volumes: tuple[int, ...],
    high_pass: float | None,
) -> CleanSpec:
    """Return the :class:`~bids_syncact.core.denoise.CleanSpec` of one run.

    Parameters
    ----------
    preproc_bold : Path
        fMRIPrep's ``desc-preproc_bold.nii.gz``, its confounds next to it.
    strategy : {'simple', 'scrubbing', 'compcor', 'none'}
        See :func:`load_confounds`.
    t_r : float
        Repetition time (s).
    n_vols : int
        Stored volumes of the run.
    drop_volumes : tuple of int
        Original indices of volumes to drop.
    high_pass : float or None
        Cosine high-pass cut-off (Hz); None with fMRIPrep's strategies (their cosines).

    Returns
    -------
    CleanSpec
    """
    confounds, kept = load_confounds(preproc_bold, strategy, n_vols, drop_volumes)
    return CleanSpec(
        n_vols=n_vols,
        t_r=t_r,
        sample_mask=kept,
        confounds=confounds,
        high_pass=high_pass,
        name=_run_name(preproc_bold),
    )


def intersect_run_masks(mask_paths: Sequence[Path]) -> nib.Nifti1Image:
    """Return the voxels inside every run's brain mask.

    Parameters
    ----------
    mask_paths : sequence of Path
        fMRIPrep's ``desc-brain_mask.nii.gz`` of each run, all on one grid.

    Returns
    -------
    Nifti1Image
        uint8 mask (1 inside) on the runs' grid.

    Raises
    ------
    InputDataError
        When a mask is unreadable or not 3-D, the grids differ, or no voxel is in all masks.
    """
    if not mask_paths:
        raise ValueError('no brain masks to intersect')
    images = [load_image(Path(path)) for path in mask_paths]
    for path, img in zip(mask_paths, images, strict=True):
        if len(img.shape) != 3:
            raise InputDataError(f'{Path(path).name}: a brain mask must be 3-D, not {img.shape}')
        _check_grid(img, images[0], Path(path).name, Path(mask_paths[0]).name)
    if len(images) == 1:
        data = np.asarray(images[0].dataobj) > 0
    else:
        data = np.asarray(intersect_masks(images, threshold=1, connected=False).dataobj) > 0
    if not data.any():
        raise InputDataError(
            f'the brain masks of {len(images)} runs ({Path(mask_paths[0]).name}, ...) share no '
            'voxel; check that all runs were preprocessed in the same space'
        )
    header = images[0].header.copy()  # keeps the space's sform/qform codes
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(None, None)
    return nib.Nifti1Image(data.astype(np.uint8), images[0].affine, header)


def check_run_images(bold_paths: Sequence[Path], mask_paths: Sequence[Path]) -> nib.Nifti1Image:
    """Refuse, from the headers and the masks alone, runs that denoising could not read.

    Parameters
    ----------
    bold_paths, mask_paths : sequence of Path
        The preprocessed BOLD and brain mask of each run of one subject and task.

    Returns
    -------
    Nifti1Image
        The intersection of the masks (see :func:`intersect_run_masks`).

    Raises
    ------
    InputDataError
        When a header or mask is unreadable, a BOLD is not 4-D, or a grid differs.
    """
    mask = intersect_run_masks(mask_paths)
    for path in map(Path, bold_paths):
        img = load_image(path)
        if len(img.shape) != 4:
            raise InputDataError(f'{path.name}: a BOLD run must be 4-D, not {img.shape}')
        _check_grid(img, mask, path.name, 'its brain mask')
    return mask


def bold_to_memmap(
    preproc_bold: Path, mask_img: nib.Nifti1Image, out_path: Path, smoothing_fwhm: float | None
) -> np.memmap:
    """Return a run's in-mask voxels as a read-only float32 memmap, written once.

    The ``.nii.gz`` is read once, volume by volume (never the whole 4-D array); each volume is
    smoothed on its grid when asked, then its in-mask voxels are stored. The ``.npy`` file is
    written under a temporary name and moved into place, so a crash never leaves a file that
    looks complete.

    Parameters
    ----------
    preproc_bold : Path
        fMRIPrep's ``desc-preproc_bold.nii.gz``.
    mask_img : Nifti1Image
        Brain mask on the BOLD's grid (see :func:`intersect_run_masks`).
    out_path : Path
        Destination, an uncompressed ``.npy`` (open it again with ``np.load(mmap_mode='r')``).
    smoothing_fwhm : float or None
        Gaussian smoothing (mm FWHM) of each volume before masking; None or 0: none.

    Returns
    -------
    np.memmap of shape (n_vols, n_voxels), float32
        Voxels in the mask's C order (``np.flatnonzero`` order of the mask array).

    Raises
    ------
    InputDataError
        When the BOLD is unreadable or not 4-D, or its grid is not the mask's.
    """
    preproc_bold, out_path = Path(preproc_bold), Path(out_path)
    # keep_file_open: nibabel would otherwise reopen the gzip stream, and decompress from the
    # start, for every volume (about 100 times slower on a 200-volume run).
    img = load_image(preproc_bold, keep_file_open=True)
    if len(img.shape) != 4:
        raise InputDataError(f'{preproc_bold.name}: a BOLD run must be 4-D, not {img.shape}')
    _check_grid(img, mask_img, preproc_bold.name, 'the brain mask')
    inside = np.asarray(mask_img.dataobj) > 0
    if not inside.any():
        raise InputDataError(
            f'the brain mask for {preproc_bold.name} holds no voxel; check the fMRIPrep brain masks'
        )
    n_vols = img.shape[3]
    try:
        with replacing(out_path) as tmp:
            data = np.lib.format.open_memmap(
                tmp, mode='w+', dtype=np.float32, shape=(n_vols, int(inside.sum()))
            )
            allocate(tmp)
            for index in range(n_vols):
                try:
                    volume = np.asarray(img.dataobj[..., index], dtype=np.float32)
                except (EOFError, OSError, ValueError, zlib.error) as err:
                    raise InputDataError(
                        f'{preproc_bold.name}: cannot read volume {index} of {n_vols} ({err}); '
                        'the file is truncated or corrupt: rerun fMRIPrep or restore it'
                    ) from err
                if smoothing_fwhm:
                    smoothed = smooth_img(nib.Nifti1Image(volume, img.affine), smoothing_fwhm)
                    volume = np.asarray(smoothed.dataobj, dtype=np.float32)
                data[index] = volume[inside]
                if index % 64 == 63:
                    release_pages(data)
            data.flush()
            del data
    finally:
        del img  # the proxy closes the file handle it kept
    return np.load(out_path, mmap_mode='r')


def iter_voxel_chunks(n_voxels: int, chunk: int) -> Iterator[slice]:
    """Yield consecutive slices of at most ``chunk`` voxels covering ``range(n_voxels)``.

    Examples
    --------
    >>> list(iter_voxel_chunks(5, 2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    if chunk < 1:
        raise ValueError(f'chunk must be at least 1, not {chunk}')
    for start in range(0, n_voxels, chunk):
        yield slice(start, min(start + chunk, n_voxels))


def load_image(path: Path, **kwargs: object) -> nib.Nifti1Image:
    """Return ``nib.load(path)``; an unreadable file is an :class:`InputDataError` (exit 65)."""
    try:
        return nib.load(path, **kwargs)  # type: ignore[return-value]
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise InputDataError(f'{path.name}: cannot read the image: {err}') from err


def _check_grid(img: nib.Nifti1Image, ref: nib.Nifti1Image, name: str, ref_name: str) -> None:
    if img.shape[:3] != ref.shape[:3] or not np.allclose(
        img.affine, ref.affine, atol=AFFINE_ATOL_MM
    ):
        raise InputDataError(
            f'{name} (shape {img.shape[:3]}) is not on the grid of {ref_name} (shape '
            f'{ref.shape[:3]}, or another affine); use files of one space and resolution'
        )


def _run_name(preproc_bold: Path) -> str:
    return Path(preproc_bold).name.split('_space-')[0].split('_desc-')[0]


def _confounds_name(preproc_bold: Path) -> str:
    """Return the name of the confounds file nilearn reads for the BOLD, or a description."""
    try:
        return Path(get_confounds_file(str(preproc_bold), False, False)).name
    except (ValueError, OSError):
        return f'the confounds file of {Path(preproc_bold).name}'
