"""The participant-level annotation node: a subject's coefficient maps against the networks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from bids import BIDSLayout

from bids_syncact.bids.annotations import annotations_path
from bids_syncact.bids.boldmaps import boldmap_bytes
from bids_syncact.bids.derivatives import PYBIDS_CONFIG
from bids_syncact.interfaces.annotation import AnnotateLayer

from .test_group import AFFINE, SIDECAR, UNITS, _brain, _visual


def _node_outputs(tmp_path: Path, rng) -> tuple[Path, Path, Path]:
    brain = _brain()
    visual = _visual(brain)[brain]
    maps = np.zeros((len(UNITS), int(brain.sum())), dtype=np.float32)
    maps[0] = visual * 0.5 + 0.05 * rng.standard_normal(visual.size)
    maps[1] = rng.standard_normal(visual.size)
    mask = nib.Nifti1Image(brain.astype(np.uint8), AFFINE)
    node = tmp_path / 'node'
    node.mkdir()
    (node / 'stat-coef.nii.gz').write_bytes(boldmap_bytes(maps, mask, 'coef'))
    (node / 'stat-coef.json').write_text(json.dumps({**SIDECAR, 'Sources': ['bids:x:y']}))
    mask.to_filename(node / 'brain_mask.nii.gz')
    return node / 'stat-coef.nii.gz', node / 'stat-coef.json', node / 'brain_mask.nii.gz'


def test_each_unit_is_annotated_and_pybids_finds_the_table(tmp_path, rng):
    coef, sidecar, mask = _node_outputs(tmp_path, rng)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'dataset_description.json').write_text(
        '{"Name": "s", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}'
    )
    path = annotations_path(out, {'subject': '01', 'task': 'movie'}, space='MNI152NLin2009cAsym',
                            res=None, cnn='alexnet', layer='features.1')  # fmt: skip
    AnnotateLayer(
        map_files=[str(coef)], sidecar_files=[str(sidecar)], stats=['coef'],
        mask_file=str(mask), reference_networks='seitzman2018', source='bids::sub-01/x.nii.gz',
        out_path=str(path),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(path, sep='\t')
    labels = table.drop_duplicates('unit').set_index('unit')['label'].to_dict()
    assert labels == {7: 'Visual', 12: 'none', 20: 'none'}
    assert table.network.nunique() == 13  # Seitzman's networks, unassigned left out
    assert len(table) == 13 * len(UNITS)
    meta = json.loads(path.with_suffix('.json').read_text())
    assert meta['ReferenceNetworks'] == 'seitzman2018'
    assert meta['Sources'] == ['bids::sub-01/x.nii.gz']
    assert meta['UnitIndices'] == UNITS
    assert meta['Weights'] == SIDECAR['Weights']
    layout = BIDSLayout(out, config=['bids', 'derivatives', str(PYBIDS_CONFIG)], validate=False)
    (found,) = layout.get(suffix='annotations', extension='.tsv')
    assert found.entities['cnn'] == 'alexnet'
    assert found.entities['layer'] == 'features1'
    assert found.entities['subject'] == '01'
    assert found.entities['space'] == 'MNI152NLin2009cAsym'


def test_a_reference_atlas_file_is_used(tmp_path, rng):
    coef, sidecar, mask = _node_outputs(tmp_path, rng)
    brain = _brain()
    labels = np.where(_visual(brain), 1, np.where(brain, 2, 0)).astype(np.int16)
    atlas = tmp_path / 'atlas.nii.gz'
    nib.Nifti1Image(labels, AFFINE).to_filename(atlas)
    (tmp_path / 'atlas.tsv').write_text('index\tname\n1\tSeeing\n2\tEverythingElse\n')
    path = tmp_path / 'out' / 'annotations.tsv'
    path.parent.mkdir()
    AnnotateLayer(
        map_files=[str(coef)], sidecar_files=[str(sidecar)], stats=['coef'],
        mask_file=str(mask), reference_networks=str(atlas), source='bids::x', out_path=str(path),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(path, sep='\t')
    assert set(table.network) == {'Seeing', 'EverythingElse'}
    assert table.drop_duplicates('unit').set_index('unit')['label'][7] == 'Seeing'
