"""The group level on synthetic participant outputs with a planted answer."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout
from nilearn.image import load_img

from bids_syncact.bids.annotations import null_annotations_path, write_null_annotations
from bids_syncact.bids.boldmaps import boldmap_bytes, write_boldmap
from bids_syncact.bids.derivatives import PYBIDS_CONFIG, write_table
from bids_syncact.bids.references import load_reference_networks
from bids_syncact.cli.run import main
from bids_syncact.core.calibration import GROUP_STATISTIC, network_statistics

from .conftest import assert_refused

#: A coarse MNI grid (10 mm) and an ellipsoid brain inside it.
AFFINE = np.array([[10.0, 0, 0, -80], [0, 10.0, 0, -115], [0, 0, 10.0, -70], [0, 0, 0, 1]])
SHAPE = (17, 21, 18)
UNITS = [7, 12, 20]  # planted on Visual, noise, empty
#: Six: with fewer, no sign-flip p (two-sided) can be below 2 / 2 ** n = 0.05.
SUBJECTS = ('01', '02', '03', '04', '05', '06')
N_NULLS = 39
SIDECAR = {
    'CNN': 'alexnet', 'Layer': 'features.1', 'UnitIndices': UNITS,
    'Weights': {'Kind': 'none', 'Name': 'none', 'Seed': 0}, 'AlphaMode': 'auto',
    'FrameRate': 4.0, 'FrameFit': 'pad', 'HRF': 'spm', 'MaxUnits': 3,
    'ConfoundsStrategy': 'simple', 'HighPass': None, 'SmoothingFWHM': 0.0, 'RandomSeed': 0,
    'UnitCorrelation': 0.9, 'UnitClusters': [[7, 8], [12], [20]],
    'UnitClusterSigns': [[1, -1], [1], [1]], 'UnitClusterMinCorrelation': [0.95, 1.0, 1.0],
    'UnitClusterMaxCrossCorrelation': [0.4, 0.5, 0.5],
}  # fmt: skip


def _brain() -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    centre = np.array(SHAPE) / 2 - 0.5
    return ((i - centre[0]) / 7.5) ** 2 + ((j - centre[1]) / 9.5) ** 2 + (
        (k - centre[2]) / 7.5
    ) ** 2 <= 1.0


def _visual(mask: np.ndarray) -> np.ndarray:
    grid = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
    reference = load_reference_networks('seitzman2018', grid, mask=mask)
    return reference.maps[reference.names.index('Visual')] > 0


def write_participant_outputs(out: Path, subjects=SUBJECTS, cnns=('alexnet',), seed=0,
                              n_nulls=N_NULLS, **changes) -> Path:  # fmt: skip
    """Write the stat-coef maps a participant run would leave, with a planted Visual unit.

    With ``n_nulls``, also the annotation sidecar and the null annotation table: the null maps
    are noise like unit 12's map, so only the planted unit stands out.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'dataset_description.json').write_text(json.dumps(
        {'Name': 'syncact', 'BIDSVersion': '1.10.0', 'DatasetType': 'derivative',
         'GeneratedBy': [{'Name': 'bids-syncact'}]}))  # fmt: skip
    brain = _brain()
    visual = _visual(brain)[brain]
    for n, subject in enumerate(subjects):
        mask = brain.copy()
        if n == 0:
            mask[tuple(np.argwhere(brain)[0])] = False  # one voxel outside this subject's mask
        for c, cnn in enumerate(cnns):
            maps = np.zeros((len(UNITS), int(brain.sum())), dtype=np.float32)
            maps[0] = (1.0 + 0.2 * c) * visual + 0.15 * rng.standard_normal(visual.size)
            maps[1] = rng.standard_normal(visual.size)
            maps = maps[:, mask[brain]]
            mask_img = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
            sidecar = {**SIDECAR, 'CNN': cnn, **changes.get(subject, {}),
                       **changes.get(cnn, {})}  # fmt: skip
            path = (out / f'sub-{subject}' / 'func' / f'sub-{subject}_task-movie_space-'
                    f'MNI152NLin2009cAsym_cnn-{cnn}_layer-features1_stat-coef_boldmap.nii.gz')  # fmt: skip
            write_boldmap(path, boldmap_bytes(maps, mask_img, 'coef'), sidecar)
            _write_annotations(path, maps, mask, n_nulls, np.random.default_rng([seed, n, c]))
    return out


def _write_annotations(coef: Path, maps: np.ndarray, mask: np.ndarray, n_nulls: int, rng) -> None:
    """The annotation sidecar and (with nulls) the null table a participant run would leave."""
    reference = load_reference_networks('seitzman2018', nib.Nifti1Image(
        mask.astype(np.uint8), AFFINE), mask=mask)  # fmt: skip
    networks = reference.in_mask(mask)
    table = coef.with_name(coef.name.replace('_stat-coef_boldmap.nii.gz', '_annotations.tsv'))
    real = network_statistics(maps, networks)
    nulls = [network_statistics(rng.standard_normal(maps.shape), networks)
             for _ in range(n_nulls)]  # fmt: skip
    stats = np.stack([real, *nulls])
    sidecar = {'ReferenceNetworks': reference.name, 'ReferenceNetworksChecksum':
               reference.checksum, 'NumberOfNulls': n_nulls, 'Statistic': GROUP_STATISTIC}  # fmt: skip
    write_table(table, pd.DataFrame({'unit': UNITS}), sidecar)
    if n_nulls:
        write_null_annotations(null_annotations_path(table), UNITS, reference.names, stats,
                               np.ones(stats.shape[:2]), sidecar, stats)  # fmt: skip


def _group(tmp_path, out, *extra):
    bids = tmp_path / 'bids'
    bids.mkdir(exist_ok=True)
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    return main([str(bids), str(out), 'group', '-w', str(tmp_path / 'work'), *map(str, extra)])


@pytest.fixture(scope='module')
def group_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('group')
    out = write_participant_outputs(tmp / 'out')
    assert _group(tmp, out) == 0
    return out


def _group_file(out: Path, stat: str) -> Path:
    return out / (f'task-movie_space-MNI152NLin2009cAsym_cnn-alexnet_layer-features1_stat-{stat}'
                  '_desc-group_boldmap.nii.gz')  # fmt: skip


def test_group_outputs_are_found_by_pybids_and_read_by_nilearn(group_run):
    layout = BIDSLayout(group_run, config=['bids', 'derivatives', str(PYBIDS_CONFIG)],
                        validate=False)  # fmt: skip
    maps = layout.get(desc='group', suffix='boldmap', extension='.nii.gz')
    assert sorted(f.entities['stat'] for f in maps) == ['logp', 't']
    for bids_file in maps:
        assert bids_file.entities['cnn'] == 'alexnet'
        assert bids_file.entities['layer'] == 'features1'
        assert load_img(bids_file.path).shape == (*SHAPE, len(UNITS))
        # the shipped config's patterns name the file the way the app does
        built = layout.build_path(bids_file.get_entities(), validate=False)
        assert Path(built).name == Path(bids_file.path).name
        with_res = layout.build_path({**bids_file.get_entities(), 'res': '2'}, validate=False)
        assert '_space-MNI152NLin2009cAsym_res-2_cnn-alexnet_' in with_res
        meta = json.loads(Path(bids_file.path.replace('.nii.gz', '.json')).read_text())
        assert meta['UnitIndices'] == UNITS
        assert meta['Subjects'] == list(SUBJECTS)
        assert len(meta['Sources']) == len(SUBJECTS)
    tables = layout.get(desc='group', suffix='annotations', extension='.tsv')
    assert len(tables) == 1
    (similarity,) = layout.get(desc='group', suffix='similarity', extension='.tsv')
    assert similarity.entities['task'] == 'movie'
    assert Path(tables[0].path).with_suffix('.json').is_file()


def test_the_planted_unit_is_labelled_with_its_network(group_run):
    table = pd.read_csv(next(group_run.glob('*_desc-group_annotations.tsv')), sep='\t')
    per_unit = table.drop_duplicates('unit').set_index('unit')
    assert per_unit['label'].to_dict() == {7: 'Visual', 12: 'none', 20: 'none'}
    # against the group null: every draw of one noise null per subject is below the real map
    assert per_unit.loc[7, 'p'] == pytest.approx(1 / (1 + 10_000))
    assert per_unit.loc[12, 'p'] > 0.05
    assert per_unit.loc[20, 'p'] == 1.0  # empty in every subject: the lowest statistic
    assert per_unit['n_subjects_same_label'].to_dict() == {7: 6, 12: 0, 20: 0}
    visual = table[(table.unit == 7) & (table.network == 'Visual')].iloc[0]
    assert visual.is_label
    assert visual.p_hypergeometric < 1e-6  # descriptive
    assert visual.enrichment > 3
    assert table[table.unit == 20].p_hypergeometric.isna().all()  # an empty t map: n/a
    meta = json.loads(next(group_run.glob('*_desc-group_annotations.json')).read_text())
    assert meta['NullsPerSubject'] == [N_NULLS] * 6
    assert 'not population inference' in meta['GroupTest']


def test_the_group_map_is_on_the_intersection_of_masks_and_finds_the_planted_unit(group_run):
    t = np.asarray(nib.load(_group_file(group_run, 't')).dataobj)
    logp = np.asarray(nib.load(_group_file(group_run, 'logp')).dataobj)
    brain = _brain()
    first = tuple(np.argwhere(brain)[0])
    assert np.all(np.isnan(t[first]))  # outside sub-01's mask: outside the group mask
    assert np.all(np.isnan(t[~brain]))
    visual = _visual(brain)
    assert np.nanmean(t[visual, 0]) > 3
    assert np.mean(logp[visual, 0] > -np.log10(0.05)) > 0.5
    assert np.all(np.isnan(t[brain, 2][np.isfinite(logp[brain, 2])]))  # empty: no t anywhere
    meta = json.loads(_group_file(group_run, 't').with_suffix('').with_suffix('.json').read_text())
    consistency = meta['Consistency']
    assert consistency[0] > 0.4  # a 3% network under noise of 0.15: about 0.6 expected
    assert abs(consistency[1]) < 0.3
    assert consistency[2] is None  # every map empty: stated as null
    assert meta['ConsistencyNumberOfSubjects'] == [6, 6, 0]
    assert meta['SmallestPossiblePValue'] == pytest.approx(2 / 2**6)
    assert meta['GroupMaskVoxels'] == int(brain.sum()) - 1


def test_each_subject_map_is_read_once(tmp_path, monkeypatch):
    out = write_participant_outputs(tmp_path / 'out')
    reads: dict[str, int] = {}
    original = nib.arrayproxy.ArrayProxy.__array__

    def counting(self, *args, **kwargs):
        name = Path(str(self.file_like)).name
        reads[name] = reads.get(name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, '__array__', counting)
    assert _group(tmp_path, out) == 0
    coef = {name: n for name, n in reads.items() if 'stat-coef' in name}
    assert coef == {f'sub-{s}_task-movie_space-MNI152NLin2009cAsym_cnn-alexnet_layer-features1_'
                    'stat-coef_boldmap.nii.gz': 1 for s in SUBJECTS}  # fmt: skip


def test_participant_label_filters_the_group(tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    assert _group(tmp_path, out, '--participant-label', '02', 'sub-03', '04') == 0
    meta = json.loads(_group_file(out, 't').with_suffix('').with_suffix('.json').read_text())
    assert meta['Subjects'] == ['02', '03', '04']
    assert meta['SmallestPossiblePValue'] == 0.25  # 2 of the 8 flips reach the observed max


@pytest.mark.parametrize(('changes', 'words'), [
    ({'03': {'UnitIndices': [7, 12, 21]}}, ['sub-03', 'UnitIndices']),
    ({'02': {'Weights': {'Kind': 'DEFAULT', 'Name': 'AlexNet_Weights.IMAGENET1K_V1'}}},
     ['sub-02', 'Weights']),
    ({'04': {'AlphaMode': 'fixed'}}, ['sub-04', 'AlphaMode']),
    # other clusters (other stimuli, or another --unit-correlation): the first difference named
    ({'05': {'UnitClusters': [[7, 8], [12, 13], [20]]}},
     ['sub-05', 'sub-01', 'UnitClusters', 'item 1: [12, 13] vs [12]']),
    ({'02': {'UnitClusters': None}}, ['sub-02', 'no UnitClusters', 'older bids-syncact']),
])  # fmt: skip
def test_subjects_processed_differently_are_refused(cli, tmp_path, changes, words):
    out = write_participant_outputs(tmp_path / 'out', **changes)
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, *words)
    assert not list(out.glob('*desc-group*'))


def test_a_subject_on_another_grid_is_refused(cli, tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    path = next(out.glob('sub-03/func/*_boldmap.nii.gz'))
    img = nib.load(path)
    nib.Nifti1Image(np.asarray(img.dataobj)[1:], img.affine).to_filename(path)
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, 'sub-03', 'grid')


def test_a_subject_missing_a_layer_is_refused(cli, tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    for path in out.glob('sub-02/func/*'):
        path.rename(path.with_name(path.name.replace('features1', 'features4')))
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, 'layer')


@pytest.mark.parametrize(('subjects', 'args', 'words'), [
    (('01', '02'), [], ['at least 3 subjects', 'has 2']),
    (SUBJECTS, ['--participant-label', '01', '09'], ['sub-09']),
    ((), [], ['no participant outputs']),
])  # fmt: skip
def test_too_few_or_unknown_subjects_are_refused(cli, tmp_path, subjects, args, words):
    out = tmp_path / 'out'
    if subjects:
        write_participant_outputs(out, subjects=subjects)
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group', *args), 66, *words)


def test_similarity_against_accuracy_with_three_cnns(tmp_path):
    cnns = ('alexnet', 'vgg11', 'resnet18')
    path_weights = {cnn: {'Weights': {'Kind': 'path', 'Name': f'{cnn}.pth', 'File': f'/w/{cnn}'}}
                    for cnn in cnns}  # fmt: skip
    out = write_participant_outputs(tmp_path / 'out', cnns=cnns, **path_weights)
    accuracy = {'alexnet': 56.5, 'vgg11': 69.0, 'resnet18': 69.8}
    assert _group(tmp_path, out, '--cnn-accuracy',
                  *(f'{c}={a}' for c, a in accuracy.items())) == 0  # fmt: skip
    table = pd.read_csv(out / 'task-movie_desc-group_similarity.tsv', sep='\t')
    assert table.cnn.tolist() == sorted(cnns)
    assert table.set_index('cnn').imagenet_top1.to_dict() == accuracy
    assert (table.accuracy_source == '--cnn-accuracy').all()
    assert table.descriptive.all()  # fewer than 5 CNNs
    # every CNN has a planted unit among 3: far above its null interval
    assert np.all(table.similarity > table.null_high)
    assert np.all(table.null_low < 0)
    meta = json.loads((out / 'task-movie_desc-group_similarity.json').read_text())
    correlation = meta['AccuracyCorrelation']
    assert correlation['Descriptive'] is True
    assert correlation['NumberOfCNNs'] == 3


def test_two_cnns_get_a_table_without_a_correlation(tmp_path):
    out = write_participant_outputs(tmp_path / 'out', cnns=('alexnet', 'vgg11'))
    assert _group(tmp_path, out) == 0
    table = pd.read_csv(out / 'task-movie_desc-group_similarity.tsv', sep='\t')
    assert table.imagenet_top1.isna().all()  # random weights: excluded
    assert 'AccuracyCorrelation' not in json.loads(
        (out / 'task-movie_desc-group_similarity.json').read_text()
    )


@pytest.mark.parametrize(('value', 'code', 'words'), [
    ('nosuchatlas', 64, ['nosuchatlas', 'seitzman2018']),
    ('/nowhere/atlas.nii.gz', 66, ['/nowhere/atlas.nii.gz']),
])  # fmt: skip
def test_bad_reference_networks_are_refused_before_any_work(cli, tmp_path, value, code, words):
    out = write_participant_outputs(tmp_path / 'out')
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group', '--reference-networks', value), code, *words)
    assert not list(out.glob('*desc-group*'))
    assert not (tmp_path / 'work' / 'group').exists()


def _with_sessions(out: Path) -> None:
    """Move sub-01's maps into two sessions (as two participant runs with ses- would)."""
    for path in list(out.glob('sub-01/func/*')):
        for session in ('A', 'B'):
            target = out / 'sub-01' / f'ses-{session}' / 'func' / path.name.replace(
                'sub-01_', f'sub-01_ses-{session}_')  # fmt: skip
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        path.unlink()


def test_two_sessions_of_a_subject_are_not_two_subjects(cli, tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    _with_sessions(out)
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, 'sub-01', 'sessions A, B', '--session-label')
    # one session selected: one map per subject
    assert _group(tmp_path, out, '--session-label', 'A') == 0


def test_task_and_cnn_select_the_maps(tmp_path):
    out = write_participant_outputs(tmp_path / 'out', cnns=('alexnet', 'vgg11'))
    assert _group(tmp_path, out, '--cnn', 'vgg11', '-t', 'movie') == 0
    assert not list(out.glob('*cnn-alexnet*desc-group*'))
    assert len(list(out.glob('*cnn-vgg11*_desc-group_boldmap.nii.gz'))) == 2
    table = pd.read_csv(out / 'task-movie_desc-group_similarity.tsv', sep='\t')
    assert table.cnn.tolist() == ['vgg11']  # one CNN selected: no accuracy columns
    assert 'imagenet_top1' not in table


def test_subjects_without_nulls_give_maps_without_labels(tmp_path):
    out = write_participant_outputs(tmp_path / 'out', n_nulls=0)
    assert _group(tmp_path, out) == 0
    table = pd.read_csv(next(out.glob('*_desc-group_annotations.tsv')), sep='\t',
                        keep_default_na=False)  # fmt: skip
    assert set(table['label']) == {'n/a'}
    assert _group_file(out, 't').is_file()
    assert not (out / 'task-movie_desc-group_similarity.tsv').exists()


def test_some_subjects_without_nulls_are_refused_with_what_to_rerun(cli, tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    write_participant_outputs(tmp_path / 'other', subjects=('03',), n_nulls=0)
    for path in (tmp_path / 'other' / 'sub-03' / 'func').iterdir():
        (out / 'sub-03' / 'func' / path.name).write_bytes(path.read_bytes())
    (next(out.glob('sub-03/func/*_desc-null_annotations.tsv'))).unlink()
    (next(out.glob('sub-03/func/*_desc-null_annotations.json'))).unlink()
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, 'sub-03', '--n-nulls 0', 'rerun')


def test_subjects_with_other_reference_networks_are_refused(cli, tmp_path):
    out = write_participant_outputs(tmp_path / 'out')
    sidecar = next(out.glob('sub-02/func/*_layer-features1_annotations.json'))
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, 'ReferenceNetworksChecksum': 'other'}))
    bids = tmp_path / 'bids'
    bids.mkdir()
    (bids / 'dataset_description.json').write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    assert_refused(cli(bids, out, 'group'), 65, 'sub-02', 'checksums')
    assert not list(out.glob('*desc-group*'))
