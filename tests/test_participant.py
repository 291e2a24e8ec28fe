"""The participant level end to end: FBN maps, their sidecars, reruns, failures and plugins."""

from __future__ import annotations

import gzip
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids import BIDSLayout
from nilearn.image import load_img
from scipy.stats import norm

from bids_syncact.bids.derivatives import PYBIDS_CONFIG
from bids_syncact.cli.run import main
from bids_syncact.config import DEFAULT_N_NULLS
from bids_syncact.core.nulls import MIN_SHIFT_S, allowed_shifts
from bids_syncact.demo import DemoSpec, make_dataset
from bids_syncact.workflows.execute import node_threads, plugin_settings

from .conftest import TINY, assert_refused

#: Long enough for the defaults (simple confounds, --alpha auto) and nulls 60 s from zero.
SHORT = DemoSpec(subjects=('01', '02'), runs=(1, 2), n_vols=150, shape=(7, 8, 9), n_dummies=2,
                 onset_s=2.0, movie_fps=4, movie_size=(32, 24), natural_movie=False,
                 planted=False)  # fmt: skip
LAYERS = ('features.1', 'features.4')
#: The default nulls, as many as the 150 volumes allow.
ARGS = ('--weights', 'none', '--layers', *LAYERS, '--max-units', '6', '--skip-bids-validation')
SHORT_NULLS = min(DEFAULT_N_NULLS, allowed_shifts(SHORT.n_vols, SHORT.t_r).size)
FAST = ('--weights', 'none', '--layers', 'features.1', '--max-units', '4',
        '--confounds-strategy', 'none', '--alpha', '0.05', '--n-nulls', '0')  # fmt: skip
SIDECAR_KEYS = (
    'Description', 'Sources', 'UnitIndices', 'CNN', 'Layer', 'Weights', 'FrameRate', 'FrameFit',
    'HRF', 'Alpha', 'AlphaSelection', 'ConfoundsStrategy', 'HighPass', 'ConditionNumber',
    'VarianceInflation', 'RandomSeed', 'SoftwareVersions', 'UnitCorrelation', 'UnitClusters',
    'UnitClusterSigns', 'UnitClusterMinCorrelation', 'UnitClusterMaxCrossCorrelation',
    'SingleUnitConditionNumber', 'SingleUnitVarianceInflation',
)  # fmt: skip


def _maps(out: Path) -> list[Path]:
    return sorted(out.glob('sub-*/func/*_boldmap.nii.gz'))


def _results(work: Path, kind: str) -> dict[str, int]:
    """mtime of the result file of every node of ``kind`` (rewritten only when it runs)."""
    return {p.parent.name: p.stat().st_mtime_ns for p in work.rglob(f'{kind}_*/result_*.pklz')}


@pytest.fixture(scope='module')
def short_run(tmp_path_factory):
    """The participant level with its defaults (the default nulls) on two subjects, run once."""
    root = tmp_path_factory.mktemp('short')
    bids = make_dataset(root / 'bids', SHORT)
    out, work = root / 'out', root / 'work'
    code = main([str(bids), str(out), 'participant', '-w', str(work), *ARGS])
    assert code == 0
    return bids, out, work


@pytest.mark.slow  # a whole participant run: make test-integration
def test_every_subject_and_layer_gets_coef_and_z_maps_that_pybids_and_nilearn_read(short_run):
    bids, out, _ = short_run
    layout = BIDSLayout(out, config=['bids', 'derivatives', str(PYBIDS_CONFIG)], validate=False)
    for subject in SHORT.subjects:
        for layer in ('features1', 'features4'):
            for stat in ('coef', 'z'):
                (found,) = layout.get(subject=subject, task='movie', cnn='alexnet', layer=layer,
                                      stat=stat, suffix='boldmap', extension='.nii.gz')  # fmt: skip
                img = load_img(found.path)
                meta = found.get_metadata()
                assert img.shape == (*SHORT.shape, 6)
                assert len(meta['UnitIndices']) == 6
                mask = nib.load(next((bids / 'derivatives' / 'fmriprep').rglob(
                    f'sub-{subject}_*run-1_*desc-brain_mask.nii.gz')))  # fmt: skip
                assert np.allclose(img.affine, mask.affine)
                outside = np.asarray(mask.dataobj) == 0
                assert np.all(np.isnan(np.asarray(img.dataobj)[outside]))  # no data there
    assert len(_maps(out)) == 2 * 2 * 2
    indexed = {Path(f.path) for f in layout.get()}
    written = {p for p in out.rglob('*') if p.is_file() and not p.name.startswith('.')}
    assert written <= indexed  # every output, its sidecars and the feature cache
    for found in layout.get(extension=['.nii.gz', '.tsv']):
        assert {'subject', 'cnn', 'layer'} <= set(found.entities) or 'stim' in found.entities


@pytest.mark.slow  # a whole participant run: make test-integration
def test_coef_sidecars_record_what_made_them(short_run):
    _, out, _ = short_run
    for path in out.glob('sub-*/func/*_stat-coef_boldmap.json'):
        meta = json.loads(path.read_text())
        missing = [key for key in SIDECAR_KEYS if key not in meta]
        assert not missing, (path.name, missing)
        curve = meta['AlphaSelection']
        assert meta['Alpha'] == curve['alpha']
        assert meta['Alpha'] in curve['grid']
        assert len(curve['r2']) == len(curve['grid'])
        assert len(meta['VarianceInflation']) == len(meta['UnitIndices'])
        # what a volume is: cluster k, its named member first, |r| >= R inside
        assert [m[0] for m in meta['UnitClusters']] == meta['UnitIndices']
        assert [len(s) for s in meta['UnitClusterSigns']] == [len(m) for m in
                                                               meta['UnitClusters']]  # fmt: skip
        assert min(meta['UnitClusterMinCorrelation']) >= meta['UnitCorrelation'] == 0.9
        members = {i for m in meta['UnitClusters'] for i in m}
        assert set(meta['SingleUnitVarianceInflation']) == {f'unit{i:04d}' for i in members}
        annotations = path.with_name(path.name.replace('_stat-coef_boldmap', '_annotations'))
        annotation_meta = json.loads(annotations.read_text())
        assert annotation_meta['UnitClusters'] == meta['UnitClusters']
        table = pd.read_csv(annotations.with_suffix('.tsv'), sep='\t', dtype={'members': str})
        assert table.drop_duplicates('unit')['members'].tolist() == [
            ','.join(map(str, m)) for m in meta['UnitClusters']]  # fmt: skip
        assert meta['ConfoundsStrategy'] == 'simple'
        assert meta['HighPass'] is None
        assert meta['Weights']['Kind'] == 'none'
        sync = [s for s in meta['Sources'] if s.startswith('bids::')]
        assert len(sync) == 2
        assert all((out / s[len('bids::') :]).is_file() for s in sync)


@pytest.mark.slow  # a whole participant run: make test-integration
def test_z_sidecars_give_the_nulls_and_a_family_wise_threshold_per_unit(short_run):
    bids, out, _ = short_run
    for path in out.glob('sub-*/func/*_stat-z_boldmap.json'):
        meta = json.loads(path.read_text())
        assert meta['NumberOfNulls'] == SHORT_NULLS
        shifts = np.array(meta['NullShifts'])
        assert shifts.shape == (SHORT_NULLS, 2)
        assert np.all(np.minimum(shifts, SHORT.n_vols * SHORT.t_r - shifts) >= max(MIN_SHIFT_S, 1))
        assert len({tuple(row) for row in shifts}) == SHORT_NULLS
        assert len(meta['FWEThreshold']) == len(meta['UnitIndices'])
        z = np.asarray(nib.load(path.with_name(path.name[:-5] + '.nii.gz')).dataobj)
        coef = nib.load(str(path).replace('stat-z', 'stat-coef')[:-5] + '.nii.gz')
        subject = path.name.split('_')[0]
        mask = nib.load(next((bids / 'derivatives' / 'fmriprep').rglob(
            f'{subject}_*run-1_*desc-brain_mask.nii.gz')))  # fmt: skip
        zero = (np.asarray(coef.dataobj) == 0) & (np.asarray(mask.dataobj) > 0)[..., None]
        assert zero.any()
        assert np.all(z[zero] < 0)  # p = 1 where the coefficient is zero
        assert np.all(np.isfinite(z[np.asarray(mask.dataobj) > 0]))
        assert np.nanmax(z) <= norm.isf(1 / (SHORT_NULLS + 1)) + 1e-5  # the smallest p


@pytest.mark.slow  # a whole participant run: make test-integration
def test_every_layer_is_annotated_with_the_reference_networks(short_run):
    _, out, _ = short_run
    layout = BIDSLayout(out, config=['bids', 'derivatives', str(PYBIDS_CONFIG)], validate=False)
    tables = layout.get(suffix='annotations', extension='.tsv', desc=None)
    nulls = layout.get(suffix='annotations', extension='.tsv', desc='null')
    for found in (tables, nulls):
        assert sorted((f.entities['subject'], f.entities['layer']) for f in found) == [
            (s, layer.replace('.', '')) for s in SHORT.subjects for layer in LAYERS
        ]
    for table_file in tables:
        table = pd.read_csv(table_file.path, sep='\t')
        meta = json.loads(Path(table_file.path).with_suffix('.json').read_text())
        assert sorted(table.unit.unique()) == sorted(meta['UnitIndices'])
        # the default: Schaefer when TemplateFlow holds it, else (here, offline) Seitzman
        assert meta['ReferenceNetworks'] in ('schaefer2018-7', 'seitzman2018')
        assert meta['Sources'][0].endswith('_stat-coef_boldmap.nii.gz')
        assert (out / meta['Sources'][0].removeprefix('bids::')).is_file()
        labels = table.drop_duplicates('unit').label
        assert set(labels) <= {*table.network, 'none'}
        assert meta['NumberOfNulls'] == SHORT_NULLS
        assert (table['p'] >= 1 / (1 + SHORT_NULLS)).all()
        assert (table['p_fwe'] >= table['p']).all()


@pytest.mark.slow  # a whole participant run: make test-integration
def test_images_are_gzipped_without_a_timestamp(short_run):
    _, out, _ = short_run
    for path in _maps(out):
        with path.open('rb') as stream:
            header = stream.read(8)
        assert header[:2] == b'\x1f\x8b'
        assert header[4:8] == b'\x00\x00\x00\x00'  # mtime 0
        assert gzip.decompress(path.read_bytes())[344:348] == b'n+1\x00'


@pytest.mark.slow  # a whole participant run: make test-integration
def test_a_rerun_resumes_and_a_fresh_one_writes_the_same_bytes(short_run, tmp_path):
    bids, out, work = short_run
    before = {p: p.read_bytes() for p in _maps(out)}
    couple_before = _results(work, 'couple')
    denoise_before = _results(work, 'denoise')
    assert len(couple_before) == 4
    assert len(denoise_before) == 4
    removed = _maps(out)[0]
    removed.unlink()  # an output removed since is written again, from the cache
    assert main([str(bids), str(out), 'participant', '-w', str(work), *ARGS]) == 0
    assert _results(work, 'couple') == couple_before  # not run again
    assert _results(work, 'denoise') == denoise_before
    assert {p: p.read_bytes() for p in _maps(out)} == before

    fresh = tmp_path / 'out'
    assert main([str(bids), str(fresh), 'participant', '-w', str(tmp_path / 'w'), *ARGS]) == 0
    for path, data in before.items():
        assert (fresh / path.relative_to(out)).read_bytes() == data, path.name


def test_a_rerun_redoes_only_what_a_changed_input_touches(cli, dataset, tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    args = (dataset, out, 'participant', *FAST, '--participant-label', '01', '-w', work)
    assert cli(*args, '--nprocs', '2', process=True).code == 0
    denoise, couple = _results(work, 'denoise'), _results(work, 'couple')
    assert len(denoise) == 2
    assert len(couple) == 1
    # threads and device say where it runs, not what it computes: nothing is redone
    assert cli(*args, '--nprocs', '1', '--omp-nthreads', '1', process=True).code == 0
    assert _results(work, 'denoise') == denoise
    assert _results(work, 'couple') == couple
    # fMRIPrep rewrote one run's confounds (same content, new time): that run and the coupling
    # are redone, the other run is not
    confounds = next(dataset.rglob('sub-01_*run-1_desc-confounds_timeseries.tsv'))
    os.utime(confounds, ns=(confounds.stat().st_atime_ns, confounds.stat().st_mtime_ns + 10**9))
    assert cli(*args, process=True).code == 0
    again = _results(work, 'denoise')
    changed = {name for name in denoise if again[name] != denoise[name]}
    assert changed == {name for name in denoise if 'run1' in name or 'run-1' in name}
    assert len(changed) == 1
    assert _results(work, 'couple') != couple


def test_writing_maps_without_nulls_removes_the_z_map_an_earlier_run_made(tmp_path):
    from bids_syncact.interfaces.coupling import WriteBoldmaps

    made = tmp_path / 'node'
    made.mkdir()
    (made / 'coef.nii.gz').write_bytes(b'coef')
    (made / 'coef.json').write_text('{"Alpha": 0.1}')
    out = tmp_path / 'out'
    out.mkdir()
    paths = {stat: out / f'sub-01_stat-{stat}_boldmap.nii.gz' for stat in ('coef', 'z')}
    stale = [paths['z'], out / 'sub-01_stat-z_boldmap.json']
    for path in stale:
        path.write_text('from an earlier run with nulls')
    WriteBoldmaps(
        map_files=[str(made / 'coef.nii.gz')], sidecar_files=[str(made / 'coef.json')],
        stats=['coef'], out_paths={k: str(v) for k, v in paths.items()},
    ).run(cwd=str(tmp_path))  # fmt: skip
    assert not any(path.exists() for path in stale)
    assert paths['coef'].read_bytes() == b'coef'
    assert json.loads((out / 'sub-01_stat-coef_boldmap.json').read_text()) == {'Alpha': 0.1}


def test_unknown_reference_networks_are_refused_before_any_work(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, '--reference-networks', 'yeo2011',
                 process=True)  # fmt: skip
    assert_refused(result, 64, 'yeo2011', 'seitzman2018')
    assert not _maps(out)
    assert not list(out.rglob('*_desc-sync_timeseries.tsv'))


def test_nulls_are_refused_before_any_work_when_runs_are_too_short(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, '--n-nulls', '20', process=True)
    assert_refused(result, 65, '--n-nulls 20', 'sub-01_task-movie_run-1')
    assert not (out / 'features').exists()


def test_default_nulls_that_runs_cannot_give_are_refused_with_what_to_do(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    fast = [a for a in FAST if a not in ('--n-nulls', '0')]
    result = cli(dataset, out, 'participant', *fast, process=True)
    assert_refused(result, 65, 'fewer than the 20 nulls that labels need', 'pass --n-nulls 0')
    assert not (out / 'features').exists()


@pytest.mark.parametrize('n_nulls', ['1', '19'])
def test_too_few_nulls_to_label_are_refused(cli, dataset, tmp_path, n_nulls):
    result = cli(dataset, tmp_path / 'out', 'participant', '--n-nulls', n_nulls)
    assert_refused(result, 64, 'too few to label', 'at least 20')


def test_default_nulls_fall_back_to_what_short_runs_allow_and_say_so(tmp_path):
    # runs that allow 39 distinct shifts: between the 20 that labels need and the default 99
    n_vols = 2 * math.ceil(MIN_SHIFT_S) + 40
    bids = make_dataset(tmp_path / 'bids', replace(TINY, subjects=('01',), runs=(1,),
                                                   n_vols=n_vols, movie_s=float(n_vols)))  # fmt: skip
    expected = allowed_shifts(n_vols, TINY.t_r).size
    assert 20 <= expected < DEFAULT_N_NULLS
    out, work = tmp_path / 'out', tmp_path / 'work'
    fast = [a for a in FAST if a not in ('--n-nulls', '0')]
    assert main([str(bids), str(out), 'participant', '-w', str(work), '--skip-bids-validation',
                 *fast]) == 0  # fmt: skip
    meta = json.loads(next(out.glob('sub-01/func/*_annotations.json')).read_text())
    assert meta['NumberOfNulls'] == expected
    assert len(json.loads(next(out.glob('sub-01/func/*_stat-z_boldmap.json')).read_text())[
        'NullShifts']) == expected  # fmt: skip
    log = '\n'.join(p.read_text() for p in (work / 'logs').rglob('*.log'))
    assert f'{expected} nulls instead of {DEFAULT_N_NULLS}' in log


def test_too_few_volumes_for_the_confounds_are_refused_before_any_work(cli, dataset, tmp_path):
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', '--weights', 'none', process=True)
    assert_refused(result, 65, 'degrees of freedom', '--confounds-strategy none')
    assert not (out / 'features').exists()


def _break_bold(dataset: Path, subject: str) -> None:
    bold = next((dataset / 'derivatives' / 'fmriprep').rglob(
        f'sub-{subject}_*run-2_*desc-preproc_bold.nii.gz'))  # fmt: skip
    data = bold.read_bytes()
    bold.write_bytes(data[: len(data) // 2])  # the header reads; the volumes do not


@pytest.mark.slow  # a whole participant run: make test-integration
def test_a_failing_subject_is_listed_and_the_others_finish(cli, dataset, tmp_path):
    _break_bold(dataset, '02')
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, process=True)
    assert_refused(result, 1, '1 of 2 subject(s) failed: sub-02', 'crash files in')
    assert sorted(p.name.split('_')[0] for p in _maps(out)) == ['sub-01']
    # the subject that finished gets its report; the failed one says it has no maps
    assert 'No FBN maps' not in (out / 'sub-01.html').read_text()
    assert 'No FBN maps' in (out / 'sub-02.html').read_text()


def test_stop_on_first_crash_ends_with_the_error_s_own_code(cli, dataset, tmp_path):
    _break_bold(dataset, '02')
    result = cli(dataset, tmp_path / 'out', 'participant', *FAST, '--stop-on-first-crash',
                 '--participant-label', '02', process=True)  # fmt: skip
    assert_refused(result, 65, 'sub-02_task-movie_run-2')


def test_a_plugin_file_chooses_the_nipype_plugin(cli, dataset, tmp_path):
    plugin = tmp_path / 'plugin.yml'
    plugin.write_text('plugin: Linear\nplugin_args: {}\n')
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *FAST, '--participant-label', '01',
                 '--nipype-plugin-file', plugin, '-v', process=True)  # fmt: skip
    assert result.code == 0, result.err
    assert 'Running serially' in result.err  # Linear's own log line
    assert len(_maps(out)) == 1


@pytest.mark.parametrize(
    'text', ['plugin: [unclosed', 'plugin_args: {n_procs: 2}', '- a', 'plugin: MultiProcess']
)
def test_a_bad_plugin_file_is_one_line(cli, dataset, tmp_path, text):
    plugin = tmp_path / 'plugin.yml'
    plugin.write_text(text)
    result = cli(dataset, tmp_path / 'out', 'participant', *FAST, '--nipype-plugin-file',
                 plugin, process=True)  # fmt: skip
    assert_refused(result, 64, '--nipype-plugin-file')


def _plugin_config(tmp_path, **execution):
    from bids_syncact.config import Config, ExecutionConfig, InputConfig

    inputs = InputConfig(bids_dir=tmp_path, fmriprep_dir=tmp_path)
    return Config(
        analysis_level='participant', output_dir=tmp_path, inputs=inputs,
        execution=ExecutionConfig(work_dir=tmp_path, **execution),
    )  # fmt: skip


def test_nprocs_and_mem_gb_override_the_plugin_file(tmp_path):
    plugin = tmp_path / 'plugin.yml'
    plugin.write_text('plugin: MultiProc\nplugin_args: {n_procs: 8, memory_gb: 30}\n')

    def settings(**execution):
        return plugin_settings(_plugin_config(tmp_path, **execution))

    pool = {'mp_context': 'forkserver', 'raise_insufficient': False}
    assert settings(nipype_plugin_file=plugin) == (
        'MultiProc', {'n_procs': 8, 'memory_gb': 30, **pool})  # fmt: skip
    assert settings(nipype_plugin_file=plugin, nprocs=2, mem_gb=4.5) == (
        'MultiProc', {'n_procs': 2, 'memory_gb': 4.5, **pool})  # fmt: skip
    assert settings(nprocs=1) == ('Linear', {})
    name, args = settings(nprocs=3, mem_gb=2.0)
    assert name == 'MultiProc'
    assert args == {'n_procs': 3, 'memory_gb': 2.0, **pool}
    assert os.cpu_count()  # the default n_procs is the machine's


def test_a_plugin_file_keeps_its_own_pool_settings(tmp_path):
    plugin = tmp_path / 'plugin.yml'
    plugin.write_text('plugin: MultiProc\nplugin_args: {mp_context: spawn, raise_insufficient: '
                      'true}\n')  # fmt: skip
    _, args = plugin_settings(_plugin_config(tmp_path, nipype_plugin_file=plugin))
    assert args == {'mp_context': 'spawn', 'raise_insufficient': True}


@pytest.mark.parametrize(('text', 'execution', 'expected'), [
    # a node never asks for more threads than the plugin file's pool has
    ('plugin: MultiProc\nplugin_args: {n_procs: 2}', {'omp_nthreads': 8}, 2),
    ('plugin: MultiProc\nplugin_args: {n_procs: 6}', {'omp_nthreads': 4}, 4),
    ('plugin: MultiProc\nplugin_args: {n_procs: 3}', {}, 3),
    ('plugin: MultiProc\nplugin_args: {n_procs: 6}', {'nprocs': 2, 'omp_nthreads': 4}, 2),
    (None, {'nprocs': 4, 'omp_nthreads': 16}, 4),
    (None, {'nprocs': 4}, 4),
    ('plugin: SLURM\nplugin_args: {sbatch_args: "-c 4"}', {'nprocs': 4, 'omp_nthreads': 2}, 2),
])  # fmt: skip
def test_node_threads_fit_the_pool(tmp_path, text, execution, expected):
    if text is not None:
        plugin = tmp_path / 'plugin.yml'
        plugin.write_text(text)
        execution = {**execution, 'nipype_plugin_file': plugin}
    assert node_threads(_plugin_config(tmp_path, **execution)) == expected


def _crash(tmp_path, node: str, line: str) -> Path:
    path = tmp_path / f'crash-20261129-000000-root-{node}-0a1b.txt'
    path.write_text(f'Node: {node}\nTraceback (most recent call last):\n  File "x"\n{line}\n')
    return path


@pytest.mark.parametrize('stopped', [False, True])
def test_when_every_subject_fails_they_are_all_named(tmp_path, stopped):
    from bids_syncact.workflows.execute import _failure

    crashes = [
        _crash(tmp_path, f'denoise_taskmovierun1__sub{s}', f'bids_syncact.errors.InputDataError: '
               f'sub-{s}_task-movie_run-1: BOLD is truncated')
        for s in ('01', '02')
    ]  # fmt: skip
    err = _failure(crashes, RuntimeError('x'), ['01', '02'], stopped)
    assert err.exit_code == 65  # the error's own class: every subject failed the same way
    assert str(err).startswith('every subject failed (sub-01, sub-02); first: sub-01_task-movie')
    assert '\n' not in str(err)

    some = _failure(crashes[:1], RuntimeError('x'), ['01', '02', '03'], False)
    assert some.exit_code == 1
    assert str(some).startswith('1 of 3 subject(s) failed: sub-01; the others finished.')


@pytest.mark.parametrize(('args', 'expected'), [
    (('--nprocs', '2', '--omp-nthreads', '1'), 1),
    (('--nprocs', '2'), 2),  # one node may use the whole pool
    (('--nprocs', '1', '--omp-nthreads', '4'), 1),  # never more than the pool
])  # fmt: skip
def test_nodes_run_with_the_threads_they_were_given(cli, dataset, tmp_path, args, expected):
    work = tmp_path / 'work'
    result = cli(dataset, tmp_path / 'out', 'participant', *FAST, '--participant-label', '01',
                 '-w', work, *args, process=True)  # fmt: skip
    assert result.code == 0, result.err
    recorded = {p.parent.name: json.loads(p.read_text()) for p in work.rglob('threads.json')}
    kinds = {name.split('_')[0] for name in recorded}
    assert kinds == {'features', 'denoise', 'couple'}
    for name, threads in recorded.items():
        assert threads['torch'] == expected, name
        assert threads['blas'], name  # numpy's BLAS is loaded in every node
        assert set(threads['blas']) == {expected}, name


def test_a_ctrl_c_in_a_done_callback_is_not_taken_for_a_failed_task(monkeypatch):
    """A future done when its callback is added runs the callback in the main thread, where a
    Ctrl-C can land: it must reach the run, not be recorded as the task's failure."""
    from concurrent.futures import Future

    from nipype.pipeline.plugins.multiproc import MultiProcPlugin

    from bids_syncact.workflows.execute import InterruptibleMultiProcPlugin

    def interrupted(self, future):
        raise KeyboardInterrupt

    monkeypatch.setattr(MultiProcPlugin, '_async_callback', interrupted)
    plugin = InterruptibleMultiProcPlugin(plugin_args={'n_procs': 1})
    try:
        future: Future = Future()
        plugin._task_obj[1] = future
        with pytest.raises(KeyboardInterrupt):
            plugin._async_callback(future)
        assert 1 not in plugin._taskresult

        def broken(self, future):
            raise RuntimeError('the pool broke')

        monkeypatch.setattr(MultiProcPlugin, '_async_callback', broken)
        plugin._async_callback(future)  # a broken pool: the task failed, the run goes on
        assert plugin._taskresult[1]['result'] is None
    finally:
        plugin.pool.shutdown(wait=False)
