"""The 4-D maps of a subject's FBNs (``stat-coef``, ``stat-z``) and their sidecars (DESIGN.md 5).

Volume ``k`` of a map is unit ``UnitIndices[k]``, on the grid and in the space of fMRIPrep's
outputs, NaN outside the brain mask. Images are gzipped with a zero timestamp, so a rerun writes
the same bytes; each file is written to a temporary name and moved into place, the sidecar first.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_syncact.bids.cache import bids_label
from bids_syncact.bids.derivatives import sidecar_path, subject_dir
from bids_syncact.bids.io import atomic_write_bytes, atomic_write_json

#: Entities a subject's maps keep when every run shares them (runs are combined).
SHARED_ENTITIES = (('session', 'ses'), ('acquisition', 'acq'))
#: NIfTI intent of each ``stat``.
INTENTS = {'coef': 'estimate', 'z': 'z score', 't': 't test'}


def common_entities(run_entities: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the entities of a map made from these runs: subject, task, and what they share.

    >>> common_entities([{'subject': '01', 'task': 'movie', 'run': 1, 'session': 'a'},
    ...                  {'subject': '01', 'task': 'movie', 'run': 2, 'session': 'b'}])
    {'subject': '01', 'task': 'movie'}
    """
    first = run_entities[0]
    entities = {'subject': first['subject'], 'task': first['task']}
    for key, _ in SHARED_ENTITIES:
        values = {e.get(key) for e in run_entities}
        if len(values) == 1 and first.get(key) is not None:
            entities[key] = first[key]
    return entities


def boldmap_path(
    output_dir: Path, entities: Mapping[str, Any], *, space: str, res: str | None, cnn: str,
    layer: str, stat: str,
) -> Path:  # fmt: skip
    """Where a subject's map of one layer goes.

    >>> boldmap_path(Path('/out'), {'subject': '01', 'task': 'movie'}, space='MNI152NLin2009cAsym',
    ...              res=None, cnn='alexnet', layer='features.1', stat='coef').name
    'sub-01_task-movie_space-MNI152NLin2009cAsym_cnn-alexnet_layer-features1_stat-coef_boldmap.nii.gz'
    """
    parts = [f'sub-{entities["subject"]}']
    if entities.get('session') is not None:
        parts.append(f'ses-{entities["session"]}')
    parts.append(f'task-{entities["task"]}')
    if entities.get('acquisition') is not None:
        parts.append(f'acq-{entities["acquisition"]}')
    parts.append(f'space-{space}')
    if res:
        parts.append(f'res-{res}')
    parts += [f'cnn-{bids_label(cnn)}', f'layer-{bids_label(layer)}', f'stat-{stat}']
    return subject_dir(output_dir, entities) / ('_'.join(parts) + '_boldmap.nii.gz')


def boldmap_bytes(
    maps: np.ndarray, mask_img: nib.Nifti1Image, stat: str, intent_params: tuple = ()
) -> bytes:
    """Return the gzipped NIfTI of ``maps`` ``(K, V)`` put back into the mask's grid.

    The gzip header's timestamp is zero, so the same maps always give the same bytes.
    """
    inside = np.asarray(mask_img.dataobj) > 0
    if maps.shape[1] != int(inside.sum()):
        raise ValueError(f'{maps.shape[1]} voxels of maps for a mask of {int(inside.sum())}')
    volume = np.full((*inside.shape, maps.shape[0]), np.nan, dtype=np.float32)  # NaN: no data
    volume[inside] = np.asarray(maps, dtype=np.float32).T
    header = mask_img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    img = nib.Nifti1Image(volume, mask_img.affine, header)
    img.header.set_xyzt_units('mm', 'unknown')
    img.header.set_zooms((*mask_img.header.get_zooms()[:3], 1.0))
    img.header.set_intent(INTENTS.get(stat, 'none'), intent_params, name=stat)
    img.header['descrip'] = b'bids-syncact'
    img.header['cal_min'], img.header['cal_max'] = 0.0, 0.0
    # streamed into gzip: no uncompressed copy of the whole image besides ``volume``
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode='wb', compresslevel=6, mtime=0) as stream:
        img.to_file_map(nib.Nifti1Image.make_file_map({'image': stream}))
    return buffer.getvalue()


def write_boldmap(path: Path, data: bytes, sidecar: Mapping[str, Any]) -> Path:
    """Write a map's sidecar, then the map (gzipped NIfTI bytes), each atomically."""
    json_path = sidecar_path(path)
    atomic_write_json(json_path, json.loads(json.dumps(sidecar, default=str)))
    return atomic_write_bytes(path, data)
