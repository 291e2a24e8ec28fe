"""Reference brain networks on the data's grid, for the annotation of FBNs (DESIGN.md 2.5).

``--reference-networks`` takes

* ``auto`` (the default): ``schaefer2018-7`` when TemplateFlow already holds it locally, else
  ``seitzman2018``, with an INFO line saying why;
* ``schaefer2018-7``: the 400 parcels of Schaefer et al. (2018) in ``MNI152NLin2009cAsym``
  from TemplateFlow, grouped into Yeo's 7 networks by their names (``7Networks_LH_Vis_1`` is in
  ``Vis``), resampled (nearest neighbour) to the data's grid;
* ``seitzman2018``: the 300 ROI coordinates nilearn ships (Seitzman et al. 2018) as spheres of
  the table's radius on the data's grid (:func:`~bids_syncact.core.annotation.sphere_labels`),
  without the ROIs the table leaves ``unassigned``;
* a PATH to a NIfTI: a 3-D integer label image with ``PATH``'s stem ``.tsv`` next to it
  (columns ``index`` and ``name``; 0 is background; rows sharing a name form one network), or
  a 4-D image of probability maps in [0, 1] with a ``.tsv`` of one ``name`` per volume, in
  order. Labels are resampled by nearest neighbour, probabilities by continuous interpolation
  (clipped to [0, 1]).

The data are assumed to be in MNI space (fMRIPrep's ``MNI152NLin2009cAsym``): the reference is
placed by world coordinates, not registered.

TemplateFlow is never asked to download: importing it populates an empty
``TEMPLATEFLOW_HOME`` with a skeleton of empty placeholder files and its ``get`` downloads
those over the network. So an empty or missing home is treated as not having the atlas without
importing TemplateFlow, and the atlas is looked up with the client's ``ls`` (local listing
only) and used only when the file is there with content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_syncact.core.annotation import sphere_labels
from bids_syncact.errors import InputDataError, MissingInputError, UsageError

LOGGER = logging.getLogger('bids_syncact.references')

#: The default: Schaefer 2018 when TemplateFlow has it, else Seitzman 2018.
AUTO = 'auto'
SCHAEFER = 'schaefer2018-7'
SEITZMAN = 'seitzman2018'
#: Names ``--reference-networks`` accepts besides a PATH.
REFERENCE_NAMES = (AUTO, SCHAEFER, SEITZMAN)
#: Yeo's 7 networks in the names of Schaefer's 7-network parcels, in their usual order.
SCHAEFER_NETWORKS = ('Vis', 'SomMot', 'DorsAttn', 'SalVentAttn', 'Limbic', 'Cont', 'Default')
#: The TemplateFlow query of the Schaefer atlas (without resolution and extension).
SCHAEFER_QUERY: dict[str, object] = {
    'template': 'MNI152NLin2009cAsym',
    'atlas': 'Schaefer2018',
    'desc': '400Parcels7Networks',
    'suffix': 'dseg',
}
#: The network the Seitzman 2018 table gives ROIs it did not assign.
SEITZMAN_UNASSIGNED = 'unassigned'
_SCHAEFER_CITATION = (
    'Schaefer A, et al. (2018) Local-Global Parcellation of the Human Cerebral Cortex from '
    'Intrinsic Functional Connectivity MRI. Cereb Cortex 28:3095-3114'
)
_SEITZMAN_CITATION = (
    'Seitzman BA, et al. (2020) A set of functionally-defined brain regions with improved '
    'representation of the subcortex and cerebellum. NeuroImage 206:116290'
)


@dataclass(frozen=True, eq=False)
class ReferenceNetworks:
    """Reference networks as maps on the data's grid.

    Attributes
    ----------
    name : str
        ``schaefer2018-7``, ``seitzman2018`` or the PATH given.
    names : tuple of str
        Network names, one per map.
    maps : ndarray of float32, shape (n_networks, *grid_shape)
        Membership (0/1) or probability maps in [0, 1] on the data's grid (float32 to keep a
        dozen whole-grid maps small).
    description : str
        A sentence for sidecars: the source and how it was put on the grid.
    source : str
        Citation or file.
    """

    name: str
    names: tuple[str, ...]
    maps: np.ndarray
    description: str
    source: str

    fingerprint: str = ''
    """sha256 of what defines the networks (the atlas files or the ROI table), not of their
    rasterisation on one subject's grid and mask."""

    @property
    def checksum(self) -> str:
        """Return the sha256 of the network names and the source: what the group compares."""
        return hashlib.sha256('\t'.join((*self.names, self.fingerprint)).encode()).hexdigest()

    def in_mask(self, mask: np.ndarray) -> np.ndarray:
        """Return the maps over a boolean mask of the grid, ``(n_networks, n_voxels)``."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.maps.shape[1:]:
            raise ValueError(f'mask of shape {mask.shape} for maps of {self.maps.shape[1:]}')
        return self.maps[:, mask]


def load_reference_networks(
    spec: str | None, target: nib.spatialimages.SpatialImage, *, mask: np.ndarray | None = None
) -> ReferenceNetworks:
    """Return the reference networks ``spec`` names, on the grid of ``target``.

    Parameters
    ----------
    spec : str or None
        ``auto`` (or None), ``schaefer2018-7``, ``seitzman2018`` or the path of a NIfTI with its
        TSV (module docstring).
    target : nibabel image
        Any image on the data's grid (its first three dimensions and affine are used).
    mask : ndarray of bool, optional
        The brain mask on that grid: Seitzman spheres only take voxels in it, so that each ROI's
        guaranteed voxel on a coarse grid is in the brain. Other references ignore it.

    Raises
    ------
    UsageError
        For a name that is neither known nor a path.
    MissingInputError
        For a PATH that does not exist, or ``schaefer2018-7`` when TemplateFlow lacks it.
    InputDataError
        For an unreadable image, or a TSV that is missing or does not describe the image.
    """
    shape = tuple(int(s) for s in target.shape[:3])
    affine = np.asarray(target.affine, dtype=np.float64)
    if mask is not None and np.shape(mask) != shape:
        raise ValueError(f'mask of shape {np.shape(mask)} for a grid of shape {shape}')
    grid = nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine)
    if spec is None or spec == AUTO:
        try:
            return _schaefer(grid)
        except _Unavailable as why:
            LOGGER.info('Reference networks: %s not used (%s); using %s', SCHAEFER, why, SEITZMAN)
            return _seitzman(grid, mask)
    if spec == SCHAEFER:
        try:
            return _schaefer(grid)
        except _Unavailable as why:
            raise MissingInputError(
                f'--reference-networks {SCHAEFER}: not in TemplateFlow '
                f'(TEMPLATEFLOW_HOME={_templateflow_home()}: {why}); download it with '
                f'python -m bids_syncact.resources, or use --reference-networks {SEITZMAN}'
            ) from None
    if spec == SEITZMAN:
        return _seitzman(grid, mask)
    path = Path(spec)
    if not (path.exists() or path.name.endswith(('.nii', '.nii.gz')) or len(path.parts) > 1):
        raise UsageError(
            f'--reference-networks {spec!r} is neither a file nor one of '
            f'{", ".join(REFERENCE_NAMES)}; give one of those or the path of a NIfTI with a TSV'
        )
    return _from_path(path, grid)


class _Unavailable(Exception):
    """TemplateFlow does not hold the atlas locally (the message says why)."""


def _templateflow_home() -> Path:
    """Return the folder TemplateFlow uses: ``TEMPLATEFLOW_HOME``, else its user cache."""
    home = os.environ.get('TEMPLATEFLOW_HOME')
    if home:
        return Path(home).absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir('templateflow')).absolute()


def _schaefer_files(voxel_mm: float) -> tuple[Path, Path]:
    """Return the local Schaefer dseg NIfTI (resolution nearest ``voxel_mm``) and its TSV."""
    home = _templateflow_home()
    if not home.is_dir() or not any(home.iterdir()):
        raise _Unavailable('the TemplateFlow home is empty or missing')
    try:
        # Imported only now: on an empty home the import writes a skeleton there.
        from templateflow import TemplateFlowClient

        client = TemplateFlowClient(root=home, autoupdate=False)
        resolutions = (1, 2) if voxel_mm < 1.5 else (2, 1)
        images = [
            path
            for res in resolutions
            for path in client.ls(resolution=res, extension='.nii.gz', **SCHAEFER_QUERY)
        ]
        tables = client.ls(extension='.tsv', **SCHAEFER_QUERY)
    except Exception as err:  # any failure means: not available here
        raise _Unavailable(f'TemplateFlow failed: {type(err).__name__}: {err}') from err
    images = [p for p in images if p.is_file() and p.stat().st_size > 0]
    if not images:
        raise _Unavailable('its dseg NIfTI is not downloaded (no file, or an empty placeholder)')
    tables = [p for p in tables if p.is_file() and p.stat().st_size > 0]
    if len(tables) != 1:
        raise _Unavailable(f'{len(tables)} TSVs of {SCHAEFER} in TemplateFlow, not 1')
    return images[0], tables[0]


def _schaefer(grid: nib.Nifti1Image) -> ReferenceNetworks:
    """Return Schaefer's 400 parcels grouped into the 7 networks, resampled to ``grid``."""
    voxel_mm = float(np.min(grid.header.get_zooms()[:3]))
    image_path, table_path = _schaefer_files(voxel_mm)
    try:
        index, names = _read_table(table_path, ('index', 'name'))
        parcel_network = {
            int(i): n.split('_')[2] for i, n in zip(index, names, strict=True) if int(i) != 0
        }
    except (InputDataError, IndexError, ValueError) as err:
        raise _Unavailable(f'cannot read {table_path}: {err}') from err
    unknown = sorted(set(parcel_network.values()) - set(SCHAEFER_NETWORKS))
    if unknown:
        raise _Unavailable(f'{table_path.name} names networks {unknown} not among the 7')
    network_of = {i: SCHAEFER_NETWORKS.index(n) + 1 for i, n in parcel_network.items()}
    try:
        labels = _label_volume(image_path, network_of)
    except InputDataError as err:
        raise _Unavailable(str(err)) from err
    maps = _resample_labels(labels, grid, len(SCHAEFER_NETWORKS))
    return ReferenceNetworks(
        fingerprint=_files_sha256(image_path, table_path),
        name=SCHAEFER,
        names=SCHAEFER_NETWORKS,
        maps=maps,
        description=(
            f'Schaefer 2018 400 parcels (TemplateFlow {image_path.name}) grouped into Yeo 7 '
            'networks by parcel name and resampled by nearest neighbour to the data grid '
            '(assumed MNI152NLin2009cAsym).'
        ),
        source=f'{_SCHAEFER_CITATION}; {image_path}',
    )


def _files_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _seitzman(grid: nib.Nifti1Image, mask: np.ndarray | None) -> ReferenceNetworks:
    """Return the Seitzman 2018 ROIs as spheres on ``grid``, ``unassigned`` left out."""
    from nilearn.datasets import fetch_coords_seitzman_2018

    table = fetch_coords_seitzman_2018()
    centres_mm = table.rois[['x', 'y', 'z']].to_numpy(dtype=np.float64)
    radii_mm = np.asarray(table.radius, dtype=np.float64)
    networks = np.asarray(table.networks).astype(str)
    kept = networks != SEITZMAN_UNASSIGNED
    names = tuple(sorted({str(n) for n in networks[kept]}))
    network_index = np.array([names.index(n) for n in networks[kept]])
    maps = sphere_labels(
        centres_mm[kept],
        radii_mm[kept],
        network_index,
        grid.affine,
        grid.shape,
        mask,
        n_networks=len(names),
    )
    fingerprint = hashlib.sha256(np.ascontiguousarray(centres_mm).tobytes())
    fingerprint.update(np.ascontiguousarray(radii_mm).tobytes())
    fingerprint.update('\t'.join(networks).encode())
    return ReferenceNetworks(
        fingerprint=fingerprint.hexdigest(),
        name=SEITZMAN,
        names=names,
        maps=maps,
        description=(
            f'Seitzman 2018 ROI coordinates shipped with nilearn ({int(kept.sum())} ROIs in '
            f'{len(names)} networks, {int((~kept).sum())} unassigned ROIs left out) as spheres '
            'of the table radius (4-5 mm) on the data grid (assumed MNI), nearest centre '
            'winning shared voxels and each ROI given at least one voxel on coarse grids.'
        ),
        source=_SEITZMAN_CITATION,
    )


def _from_path(path: Path, grid: nib.Nifti1Image) -> ReferenceNetworks:
    """Return the networks of a user's label or probabilistic NIfTI with its TSV."""
    if not path.is_file():
        raise MissingInputError(
            f'--reference-networks {path}: no such file; give an existing NIfTI with its TSV'
        )
    stem = path.name[: -len('.nii.gz')] if path.name.endswith('.nii.gz') else path.stem
    table_path = path.with_name(f'{stem}.tsv')
    if not table_path.is_file():
        raise InputDataError(
            f'--reference-networks {path}: no {table_path.name} next to it; write one with the '
            'columns index and name (3-D labels) or name (4-D maps)'
        )
    image = _load(path)
    if image.ndim == 3:
        index, names = _read_table(table_path, ('index', 'name'))
        try:
            index = [int(i) for i in index]
        except ValueError:
            index = [-1]
        if min(index, default=0) < 0:
            raise InputDataError(
                f'{table_path}: the index column must hold labels 0, 1, 2, ...; fix that column'
            )
        network_names = tuple(dict.fromkeys(n for i, n in zip(index, names, strict=True) if i))
        network_of = {
            i: network_names.index(n) + 1 for i, n in zip(index, names, strict=True) if i
        }
        labels = _label_volume(path, network_of, image=image, table_path=table_path)
        maps = _resample_labels(labels, grid, len(network_names))
        how = 'label image resampled by nearest neighbour'
    elif image.ndim == 4:
        (network_names,) = _read_table(table_path, ('name',))
        network_names = tuple(network_names)
        n_volumes = image.shape[3]
        if len(network_names) != n_volumes:
            raise InputDataError(
                f'{table_path}: {len(network_names)} rows for the {n_volumes} volumes of '
                f'{path.name}; give one name per volume, in order'
            )
        if len(set(network_names)) != len(network_names):
            raise InputDataError(
                f'{table_path}: names repeat; give each volume of {path.name} its own name'
            )
        maps = _resample_probabilities(path, image, grid)
        how = 'probability maps resampled by continuous interpolation, clipped to [0, 1]'
    else:
        raise InputDataError(
            f'--reference-networks {path}: a {image.ndim}-D image; give a 3-D label image or '
            'a 4-D image of probability maps'
        )
    return ReferenceNetworks(
        fingerprint=_files_sha256(path, table_path),
        name=str(path),
        names=network_names,
        maps=maps,
        description=(
            f'User reference networks {path.name} ({len(network_names)} networks from '
            f'{table_path.name}): {how} to the data grid.'
        ),
        source=str(path),
    )


def _load(path: Path) -> nib.spatialimages.SpatialImage:
    """Return the image at ``path``, refusing unreadable files with one line."""
    try:
        image = nib.load(path)
        image.get_fdata(dtype=np.float32)  # read now: a truncated .gz fails here
    except Exception as err:  # nibabel, gzip and zlib raise many kinds
        raise InputDataError(
            f'--reference-networks {path}: cannot read it ({type(err).__name__}: {err}); give '
            'a readable NIfTI'
        ) from err
    return image


def _read_table(path: Path, columns: tuple[str, ...]) -> tuple[list[str], ...]:
    """Return the named columns of a TSV as lists of stripped strings."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep='\t', dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises many kinds
        raise InputDataError(
            f'{path}: cannot read the TSV ({err}); give a tab-separated table'
        ) from err
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputDataError(
            f'{path}: no column {", ".join(missing)} (it has {", ".join(map(str, table.columns))})'
            f'; give the columns {", ".join(columns)}'
        )
    values = tuple([str(v).strip() for v in table[c]] for c in columns)
    if any(not v for v in values[-1]):
        raise InputDataError(f'{path}: empty {columns[-1]} in some rows; name every row')
    return values


def _label_volume(
    path: Path,
    network_of: dict[int, int],
    *,
    image: nib.spatialimages.SpatialImage | None = None,
    table_path: Path | None = None,
) -> nib.Nifti1Image:
    """Return a volume of network numbers (1-based, 0 none) from a label image."""
    image = _load(path) if image is None else image
    if image.ndim != 3:
        raise InputDataError(f'{path}: a {image.ndim}-D image where a 3-D label image belongs')
    values = np.asanyarray(image.dataobj)
    if not np.issubdtype(values.dtype, np.integer):
        values = image.get_fdata()
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise InputDataError(
                f'{path}: a 3-D image with non-integer values is not a label image; give '
                'integer labels, or probability maps as a 4-D image'
            )
    values = np.round(values).astype(np.int64)
    if values.min() < 0:
        raise InputDataError(f'{path}: negative label values; labels are 1, 2, ... (0 = none)')
    present = set(np.unique(values).tolist()) - {0}
    unnamed = sorted(present - set(network_of))
    if unnamed:
        shown = ', '.join(map(str, unnamed[:10])) + (' ...' if len(unnamed) > 10 else '')
        raise InputDataError(
            f'{table_path or path}: no name for the label values {shown} of {path.name}; add '
            'an index and name row for each'
        )
    lookup = np.zeros(max(present | set(network_of) | {0}) + 1, dtype=np.int16)
    for label, network in network_of.items():
        if label > 0:
            lookup[label] = network
    return nib.Nifti1Image(lookup[values], image.affine)


def _resample_labels(labels: nib.Nifti1Image, grid: nib.Nifti1Image, n: int) -> np.ndarray:
    """Return ``(n, *grid.shape)`` 0/1 maps of networks 1..n after nearest resampling."""
    from nilearn.image import resample_to_img

    resampled = resample_to_img(
        labels, grid, interpolation='nearest', force_resample=True, copy_header=True
    )
    values = np.round(np.asanyarray(resampled.dataobj)).astype(np.int64)
    return (values[None] == np.arange(1, n + 1)[:, None, None, None]).astype(np.float32)


def _resample_probabilities(
    path: Path, image: nib.spatialimages.SpatialImage, grid: nib.Nifti1Image
) -> np.ndarray:
    """Return ``(n, *grid.shape)`` probability maps, resampled and clipped to [0, 1]."""
    from nilearn.image import resample_to_img

    values = image.get_fdata(dtype=np.float32)
    if not np.all(np.isfinite(values)) or values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise InputDataError(
            f'{path}: probability maps must hold finite values in [0, 1] (found '
            f'{np.nanmin(values):g} to {np.nanmax(values):g}); rescale them'
        )
    source = nib.Nifti1Image(values, image.affine)
    with warnings.catch_warnings():
        # Probability maps that happen to be 0/1 are still resampled as documented.
        warnings.filterwarnings('ignore', message='Resampling binary images')
        resampled = resample_to_img(
            source, grid, interpolation='continuous', force_resample=True, copy_header=True
        )
    maps = np.moveaxis(resampled.get_fdata(dtype=np.float32), -1, 0)
    return np.clip(maps, 0.0, 1.0)
