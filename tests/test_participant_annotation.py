"""The participant-level annotation node: a subject's coefficient maps against the networks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from bids import BIDSLayout

from bids_syncact.bids.annotations import (
    annotations_path,
    null_annotations_path,
    read_null_annotations,
)
from bids_syncact.bids.boldmaps import boldmap_bytes
from bids_syncact.bids.derivatives import PYBIDS_CONFIG
from bids_syncact.bids.references import load_reference_networks
from bids_syncact.core.calibration import network_statistics
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


def _network_stats(tmp_path: Path, coef: Path, mask: Path, reference: str, rng, n_nulls: int):
    """What CoupleLayer saves: the statistic of the real maps and of noise-only null maps."""
    mask_img = nib.load(mask)
    inside = np.asarray(mask_img.dataobj) > 0
    real = np.asarray(nib.load(coef).dataobj)[inside].T
    networks = load_reference_networks(reference, mask_img, mask=inside)
    maps = [real] + [rng.standard_normal(real.shape) for _ in range(n_nulls)]
    stats = np.stack([network_statistics(m, networks.in_mask(inside)) for m in maps])
    contrast = np.stack([network_statistics(m, networks.in_mask(inside), statistic='contrast')
                         for m in maps])  # fmt: skip
    max_abs = np.stack([np.abs(m).max(axis=1) for m in maps])
    path = tmp_path / 'node' / 'network_stats.npz'
    np.savez(path, statistic=stats[: 1 + n_nulls], subject_statistic=contrast[: 1 + n_nulls],
             max_abs_coef=max_abs[: 1 + n_nulls],
             networks=np.array(networks.names), n_nulls=n_nulls)  # fmt: skip
    return path


def test_each_unit_is_annotated_and_pybids_finds_the_table(tmp_path, rng):
    coef, sidecar, mask = _node_outputs(tmp_path, rng)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'dataset_description.json').write_text(
        '{"Name": "s", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}'
    )
    path = annotations_path(out, {'subject': '01', 'task': 'movie'}, space='MNI152NLin2009cAsym',
                            res=None, cnn='alexnet', layer='features.1')  # fmt: skip
    stats = _network_stats(tmp_path, coef, mask, 'seitzman2018', rng, n_nulls=39)
    AnnotateLayer(
        map_files=[str(coef)], sidecar_files=[str(sidecar)], stats=['coef'],
        mask_file=str(mask), reference_networks='seitzman2018', source='bids::sub-01/x.nii.gz',
        out_path=str(path), network_stats_file=str(stats),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(path, sep='\t')
    per_unit = table.drop_duplicates('unit').set_index('unit')
    # unit 7 is the visual map, far above its noise nulls (p = 1/40); unit 12 is itself noise
    assert per_unit['label'].to_dict() == {7: 'Visual', 12: 'none', 20: 'none'}
    assert per_unit['members'].astype(str).to_dict() == {7: '7,8', 12: '12', 20: '20'}
    assert per_unit.loc[7, 'p'] == 1 / 40
    assert per_unit.loc[12, 'p'] > 0.05
    assert per_unit.loc[20, 'p'] == 1.0  # an empty map: -inf, every null ties or beats it
    assert (table['p_fwe'] >= table['p']).all()
    # the null table holds the real map (0) and each null, per unit and network, and reads back
    null_path = null_annotations_path(path)
    statistic, units, _names, max_abs = read_null_annotations(null_path)
    assert statistic.shape == (40, len(UNITS), 13)
    assert units == UNITS
    saved = np.load(stats)
    np.testing.assert_allclose(statistic, saved['statistic'], rtol=1e-8)
    np.testing.assert_allclose(max_abs, saved['max_abs_coef'], rtol=1e-8)
    # the subject-level label's statistic (the contrast) is there too, map by map, and the
    # annotation table's statistic column is the real map's
    null_table = pd.read_csv(null_path, sep='\t', keep_default_na=False)
    np.testing.assert_allclose(null_table['subject_statistic'].to_numpy(float),
                               saved['subject_statistic'].ravel(), rtol=1e-8)  # fmt: skip
    np.testing.assert_allclose(table['statistic'].to_numpy(float),
                               saved['subject_statistic'][0].ravel(), rtol=1e-8)  # fmt: skip
    null_meta = json.loads(null_path.with_suffix('.json').read_text())
    assert (null_meta['Statistic'], null_meta['SubjectStatistic']) == ('logp', 'contrast')
    assert json.loads(null_path.with_suffix('.json').read_text())['NumberOfNulls'] == 39
    assert table.network.nunique() == 13  # Seitzman's networks, unassigned left out
    assert len(table) == 13 * len(UNITS)
    meta = json.loads(path.with_suffix('.json').read_text())
    assert meta['ReferenceNetworks'] == 'seitzman2018'
    assert meta['Sources'] == ['bids::sub-01/x.nii.gz']
    assert meta['UnitIndices'] == UNITS
    assert meta['Weights'] == SIDECAR['Weights']
    layout = BIDSLayout(out, config=['bids', 'derivatives', str(PYBIDS_CONFIG)], validate=False)
    (found,) = layout.get(suffix='annotations', extension='.tsv', desc=None)
    (null,) = layout.get(suffix='annotations', extension='.tsv', desc='null')
    assert null.entities['layer'] == 'features1'

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
    stats = _network_stats(tmp_path, coef, mask, str(atlas), rng, n_nulls=39)
    AnnotateLayer(
        map_files=[str(coef)], sidecar_files=[str(sidecar)], stats=['coef'],
        mask_file=str(mask), reference_networks=str(atlas), source='bids::x', out_path=str(path),
        network_stats_file=str(stats),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(path, sep='\t')
    assert set(table.network) == {'Seeing', 'EverythingElse'}
    assert table.drop_duplicates('unit').set_index('unit')['label'][7] == 'Seeing'


def test_without_nulls_labels_are_na_and_say_why(tmp_path, rng):
    coef, sidecar, mask = _node_outputs(tmp_path, rng)
    path = tmp_path / 'out' / 'sub-01_task-movie_cnn-alexnet_layer-features1_annotations.tsv'
    path.parent.mkdir()
    stale = null_annotations_path(path)
    stale.write_text('map\n0\n')  # from an earlier run with nulls: must not outlive it
    stats = _network_stats(tmp_path, coef, mask, 'seitzman2018', rng, n_nulls=0)
    AnnotateLayer(
        map_files=[str(coef)], sidecar_files=[str(sidecar)], stats=['coef'],
        mask_file=str(mask), reference_networks='seitzman2018', source='bids::x',
        out_path=str(path), network_stats_file=str(stats),
    ).run(cwd=str(tmp_path))  # fmt: skip
    table = pd.read_csv(path, sep='\t', keep_default_na=False)
    assert set(table['label']) == {'n/a'}
    assert 'p' not in table.columns
    assert not table['is_label'].any()
    # the descriptive columns are still there: the visual unit overlaps Visual
    visual = table[(table.unit == 7) & (table.network == 'Visual')]
    assert float(visual['enrichment'].iloc[0]) > 3
    meta = json.loads(path.with_suffix('.json').read_text())
    assert meta['NumberOfNulls'] == 0
    assert '--n-nulls 0' in meta['Description']
    assert not stale.exists()
