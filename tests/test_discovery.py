"""Discovery on synthetic movie layouts: the plan is right, filters select the right runs."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from bids_syncact.demo import write_movie

from .conftest import TINY, assert_refused, edit_json, tree_state

FUNC = 'derivatives/fmriprep/sub-{s}/func/sub-{s}_task-movie_run-{r}'
SPACE = 'space-MNI152NLin2009cAsym'


def _preproc_json(dataset, sub='01', run=1):
    return dataset / f'{FUNC.format(s=sub, r=run)}_{SPACE}_desc-preproc_bold.json'


def _events(dataset, sub='01', run=1):
    return dataset / f'sub-{sub}' / 'func' / f'sub-{sub}_task-movie_run-{run}_events.tsv'


def _runs(plan):
    return {run['name']: run for run in plan['Runs']}


def test_plan_lists_files_tr_timing_onsets_and_dummies(cli, dataset, tmp_path, plan_of):
    result = cli(dataset, tmp_path / 'out', 'participant')
    assert result.code == 0, result.err
    runs = _runs(plan_of())
    assert sorted(runs) == [f'sub-{s}_task-movie_run-{r}' for s in ('01', '02') for r in (1, 2)]
    run = runs['sub-02_task-movie_run-2']
    prefix = str(dataset / FUNC.format(s='02', r=2))
    assert run['files'] == {
        'raw_bold': str(dataset / 'sub-02/func/sub-02_task-movie_run-2_bold.nii.gz'),
        'events': str(_events(dataset, '02', 2)),
        'preproc_bold': f'{prefix}_{SPACE}_desc-preproc_bold.nii.gz',
        'mask': f'{prefix}_{SPACE}_desc-brain_mask.nii.gz',
        'confounds': f'{prefix}_desc-confounds_timeseries.tsv',
    }
    assert run['RepetitionTime'] == TINY.t_r
    assert run['n_vols'] == TINY.n_vols
    # The demo's fMRIPrep sidecar: slice-time corrected to the middle of its SliceTiming.
    slice_timing = json.loads((dataset / 'task-movie_bold.json').read_text())['SliceTiming']
    assert run['TimingSource'] == 'StartTime'
    assert run['acq_offset_s'] == pytest.approx(
        (min(slice_timing) + max(slice_timing)) / 2, abs=1e-6
    )
    assert run['nss_volumes'] == list(range(TINY.n_dummies))
    assert run['drop_volumes'] == list(range(TINY.n_dummies))
    stim = run['stimulus']
    assert stim['kind'] == 'movie'
    assert stim['source'] == 'events'
    assert stim['path'] == str(dataset / 'stimuli' / 'movie.mp4')
    assert stim['onset_s'] == TINY.onset_s
    assert stim['start_s'] == 0.0
    assert stim['duration_s'] == pytest.approx(TINY.n_vols * TINY.t_r - TINY.onset_s + 1, abs=0.3)
    # The printed plan says the same.
    assert 'sub-02_task-movie_run-2' in result.out
    assert 'TimingSource StartTime' in result.out
    assert f'onset {TINY.onset_s:.3f} s' in result.out
    assert not (tmp_path / 'out').exists()  # nothing written to OUTPUT_DIR by the plan


@pytest.mark.parametrize(
    ('raw', 'preproc', 'source', 'offset'),
    [
        ({}, {'SliceTimingCorrected': True, 'StartTime': 0.3}, 'StartTime', 0.3),
        ({'DelayTime': 0.4}, {'SliceTimingCorrected': None, 'StartTime': None}, 'DelayTime', 0.3),
        ({}, {'SliceTimingCorrected': False, 'StartTime': 0.3}, 'SliceTiming', None),
        ({'SliceTiming': None}, {'SliceTimingCorrected': None, 'StartTime': None}, 'default', 0.5),
    ],
)
def test_timing_source_follows_the_table(cli, dataset, tmp_path, plan_of, raw, preproc, source,
                                         offset):  # fmt: skip
    edit_json(dataset / 'task-movie_bold.json', **raw)
    edit_json(_preproc_json(dataset), **preproc)
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '01').code == 0
    run = _runs(plan_of())['sub-01_task-movie_run-1']
    assert run['TimingSource'] == source
    if offset is None:
        times = json.loads((dataset / 'task-movie_bold.json').read_text())['SliceTiming']
        offset = (min(times) + max(times)) / 2
    assert run['acq_offset_s'] == pytest.approx(offset, abs=1e-6)


def test_dummy_scans_merge_with_fmriprep_flags(cli, dataset, tmp_path, plan_of):
    result = cli(dataset, tmp_path / 'out', 'participant', '--dummy-scans', '3')
    assert result.code == 0, result.err
    run = _runs(plan_of())['sub-01_task-movie_run-1']
    assert run['nss_volumes'] == [0, 1]
    assert run['dummy_scans'] == 3
    assert run['drop_volumes'] == [0, 1, 2]


@pytest.mark.parametrize('label', ['01', 'sub-01'])
def test_participant_label_with_or_without_prefix(cli, dataset, tmp_path, plan_of, label):
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', label).code == 0
    assert {r['entities']['subject'] for r in plan_of()['Runs']} == {'01'}


def test_bids_filter_file_selects_runs(cli, dataset, tmp_path, plan_of):
    filters = tmp_path / 'filters.json'
    filters.write_text(json.dumps({'bold': {'run': 2}}))
    result = cli(dataset, tmp_path / 'out', 'participant', '--bids-filter-file', filters)
    assert result.code == 0, result.err
    assert sorted(_runs(plan_of())) == ['sub-01_task-movie_run-2', 'sub-02_task-movie_run-2']


def test_bids_filter_file_with_an_unknown_key_is_refused(cli, dataset, tmp_path):
    filters = tmp_path / 'filters.json'
    filters.write_text(json.dumps({'t1w': {'run': 2}}))
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--bids-filter-file', filters),
                   64, 'unknown key(s) t1w', 'valid: bold')  # fmt: skip


@pytest.mark.parametrize(
    'argv',
    [
        ['--session-label', 'pre'],
        ['-t', 'rest'],
        ['--bids-filter-file', '{filters}'],
    ],
)
def test_filters_selecting_nothing_exit_18(cli, dataset, tmp_path, argv):
    filters = tmp_path / 'filters.json'
    filters.write_text(json.dumps({'bold': {'acquisition': 'fast'}}))
    argv = [a.format(filters=filters) for a in argv]
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', *argv), 18,
                   'selected no BOLD run', 'tasks there: movie')  # fmt: skip


def test_participant_not_found_exit_66(cli, dataset, tmp_path):
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '07'),
                   66, 'participant(s) 07 not found', 'it has: 01, 02')  # fmt: skip


def test_resolution_present_with_res_entity(cli, dataset, tmp_path, plan_of):
    for path in (dataset / 'derivatives' / 'fmriprep').rglob(f'*{SPACE}_*'):
        path.rename(path.with_name(path.name.replace(SPACE, f'{SPACE}_res-2')))
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    run = _runs(plan_of())['sub-01_task-movie_run-1']
    assert run['res'] == '2'
    assert f'{SPACE}_res-2_desc-preproc_bold' in run['files']['preproc_bold']
    assert f'{SPACE}_res-2_desc-brain_mask' in run['files']['mask']


def test_several_resolutions_need_res(cli, dataset, tmp_path, plan_of):
    for path in list((dataset / 'derivatives' / 'fmriprep').rglob(f'*{SPACE}_*')):
        shutil.copy(path, path.with_name(path.name.replace(SPACE, f'{SPACE}_res-2')))
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 64,
                   'several resolutions', '(no res), res-2', '--res')  # fmt: skip
    assert cli(dataset, tmp_path / 'out', 'participant', '--res', 'res-2').code == 0
    assert all('_res-2_' in r['files']['mask'] for r in plan_of()['Runs'])


def test_missing_space_lists_the_spaces_present(cli, dataset, tmp_path):
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--space', 'MNI152NLin6Asym'),
                   66, 'no preprocessed BOLD in space MNI152NLin6Asym',
                   'spaces there: MNI152NLin2009cAsym')  # fmt: skip


def _write_map(tmp_path, rows):
    path = tmp_path / 'maps' / 'movies.tsv'
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep='\t', index=False, na_rep='n/a')
    return path


def test_stimulus_map_most_specific_row_wins(cli, dataset, tmp_path, plan_of):
    own = write_movie(tmp_path / 'maps' / 'part2.mp4', 30.0, fps=4, size=(32, 24))
    movie = dataset / 'stimuli' / 'movie.mp4'
    path = _write_map(tmp_path, [
        {'task': 'movie', 'subject': None, 'session': None, 'run': None, 'path': str(movie),
         'onset': -4.0, 'start': None},
        {'task': 'movie', 'subject': 'sub-02', 'session': None, 'run': 2, 'path': 'part2.mp4',
         'onset': 1.5, 'start': 12.0},
        {'task': 'movie', 'subject': None, 'session': None, 'run': 2, 'path': str(movie),
         'onset': 0.5, 'start': None},
    ])  # fmt: skip
    result = cli(dataset, tmp_path / 'out', 'participant', '--stimulus-map', path)
    assert result.code == 0, result.err
    runs = _runs(plan_of())
    assert runs['sub-01_task-movie_run-1']['stimulus'] | {'duration_s': None} == {
        'kind': 'movie', 'source': 'stimulus-map', 'origin': '--stimulus-map line 2',
        'path': str(movie), 'onset_s': -4.0, 'start_s': 0.0, 'duration_s': None,
    }  # fmt: skip
    assert runs['sub-01_task-movie_run-2']['stimulus']['onset_s'] == 0.5
    sub02 = runs['sub-02_task-movie_run-2']['stimulus']
    assert (sub02['path'], sub02['onset_s'], sub02['start_s']) == (str(own), 1.5, 12.0)
    assert sub02['origin'] == '--stimulus-map line 3'


def test_stimulus_map_ambiguous_rows_are_refused(cli, dataset, tmp_path):
    movie = dataset / 'stimuli' / 'movie.mp4'
    path = _write_map(tmp_path, [
        {'task': 'movie', 'subject': '01', 'run': None, 'path': str(movie), 'onset': 0},
        {'task': 'movie', 'subject': None, 'run': 1, 'path': str(movie), 'onset': 3},
    ])  # fmt: skip
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus-map', path), 65,
                   'lines 2, 3', 'sub-01_task-movie_run-1', 'equally')  # fmt: skip


def test_stimulus_map_without_onset_column_is_refused(cli, dataset, tmp_path):
    path = _write_map(tmp_path, [{'task': 'movie', 'path': 'x.mp4'}])
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus-map', path), 65,
                   'lacks the column(s) onset')  # fmt: skip


def test_stimulus_shorthand_with_negative_onset(cli, dataset, tmp_path, plan_of):
    movie = write_movie(tmp_path / 'mine.mp4', 40.0, fps=4, size=(32, 24))
    result = cli(dataset, tmp_path / 'out', 'participant', '--stimulus', f'movie={movie}',
                 '--stimulus-onset', '-6.5')  # fmt: skip
    assert result.code == 0, result.err
    stim = _runs(plan_of())['sub-01_task-movie_run-1']['stimulus']
    assert (stim['source'], stim['path'], stim['onset_s']) == ('command line', str(movie), -6.5)
    assert stim['duration_s'] == pytest.approx(40.0, abs=0.3)


def test_events_with_images_make_a_sequence(cli, dataset, tmp_path, plan_of):
    for name in ('a.png', 'b.png'):
        (dataset / 'stimuli' / name).write_bytes(b'\x89PNG\r\n\x1a\n')
    for run in (1, 2):
        for sub in ('01', '02'):
            pd.DataFrame({'onset': [0.0, 10.0], 'duration': [4.0, 4.0],
                          'stim_file': ['a.png', 'b.png']}).to_csv(
                _events(dataset, sub, run), sep='\t', index=False)  # fmt: skip
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    stim = _runs(plan_of())['sub-01_task-movie_run-1']['stimulus']
    assert stim['kind'] == 'sequence'
    assert [(i['onset_s'], i['duration_s']) for i in stim['items']] == [(0.0, 4.0), (10.0, 4.0)]


def test_a_short_movie_is_warned_about(cli, dataset, tmp_path, plan_of):
    write_movie(dataset / 'stimuli' / 'movie.mp4', 14.0, fps=4, size=(32, 24))
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    warnings = _runs(plan_of())['sub-01_task-movie_run-1']['warnings']
    assert len(warnings) == 1
    assert 'ends 4.0 s before the run' in warnings[0]


def test_symlink_into_git_annex_inside_the_dataset_is_fine(cli, dataset, tmp_path, plan_of):
    annex = dataset / '.git' / 'annex' / 'objects' / 'Xk' / 'MD5E-s1--abc.mp4'
    annex.parent.mkdir(parents=True)
    (dataset / 'stimuli' / 'movie.mp4').rename(annex)
    os.symlink(os.path.relpath(annex, dataset / 'stimuli'), dataset / 'stimuli' / 'movie.mp4')
    result = cli(dataset, tmp_path / 'out', 'participant')
    assert result.code == 0, result.err
    assert _runs(plan_of())['sub-01_task-movie_run-1']['stimulus']['path'] == str(
        dataset / 'stimuli' / 'movie.mp4'
    )


def test_derivatives_elsewhere_and_output_in_derivatives(cli, dataset, tmp_path, plan_of):
    moved = tmp_path / 'fmriprep'
    shutil.move(dataset / 'derivatives' / 'fmriprep', moved)
    out = dataset / 'derivatives' / 'syncact'
    result = cli(dataset, out, 'participant', '-d', f'fmriprep={moved}')
    assert result.code == 0, result.err
    assert plan_of()['FMRIPrepDir'] == str(moved)
    assert all(r['files']['mask'].startswith(str(moved)) for r in plan_of()['Runs'])


def test_the_input_dataset_is_never_written(cli, dataset, tmp_path):
    before = tree_state(dataset)
    assert cli(dataset, dataset / 'derivatives' / 'syncact', 'participant', validate=True,
               ).code == 0  # fmt: skip
    assert tree_state(dataset) == before


def test_full_run_with_validation(cli, dataset, tmp_path):
    result = cli(dataset, tmp_path / 'out', 'participant', validate=True)
    assert result.code == 0, result.err
    assert (tmp_path / 'work' / 'bids_validator.json').is_file()


def _add_session(dataset, sub, ses):
    """Move every file of ``sub`` into ``ses-<ses>``, raw and derivatives."""
    for path in sorted(dataset.rglob(f'sub-{sub}_*')):
        target = path.parent.parent / f'ses-{ses}' / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        path.rename(target / path.name.replace(f'sub-{sub}_', f'sub-{sub}_ses-{ses}_'))


def test_sessions_are_discovered_and_filtered(cli, dataset, tmp_path, plan_of):
    _add_session(dataset, '01', 'pre')
    _add_session(dataset, '02', 'post')
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    runs = _runs(plan_of())
    assert sorted(runs) == [f'sub-01_ses-pre_task-movie_run-{r}' for r in (1, 2)] + [
        f'sub-02_ses-post_task-movie_run-{r}' for r in (1, 2)
    ]
    run = runs['sub-02_ses-post_task-movie_run-1']
    assert '/sub-02/ses-post/func/sub-02_ses-post_task-movie_run-1_' in run['files']['mask']
    assert run['files']['events'].endswith('sub-02_ses-post_task-movie_run-1_events.tsv')
    assert cli(dataset, tmp_path / 'out', 'participant', '--session-label', 'ses-pre').code == 0
    assert {r['entities']['session'] for r in plan_of()['Runs']} == {'pre'}


def test_bids_database_dir_is_created_and_reused(cli, dataset, tmp_path, plan_of):
    database = tmp_path / 'bids_db'
    assert cli(dataset, tmp_path / 'out', 'participant', '--bids-database-dir', database).code == 0
    (index,) = database.glob('*.sqlite')
    stamp = index.stat().st_mtime_ns
    assert cli(dataset, tmp_path / 'out', 'participant', '--bids-database-dir', database).code == 0
    assert index.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert len(plan_of()['Runs']) == 4


def test_bids_database_of_another_dataset_is_refused(cli, dataset, tmp_path):
    database = tmp_path / 'bids_db'
    assert cli(dataset, tmp_path / 'out', 'participant', '--bids-database-dir', database).code == 0
    other = tmp_path / 'other'
    shutil.copytree(dataset, other, symlinks=True)
    result = cli(other, tmp_path / 'out', 'participant', '--bids-database-dir', database)
    assert_refused(result, 64, '--bids-database-dir', f'indexes {dataset}', 'empty folder')


def test_stimulus_onset_from_events_must_be_a_number(cli, dataset, tmp_path):
    events = pd.read_csv(_events(dataset, '01', 2), sep='\t')
    events['onset'] = 'n/a'
    events.to_csv(_events(dataset, '01', 2), sep='\t', index=False)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'sub-01_task-movie_run-2_events.tsv', 'onset must be a number of seconds')  # fmt: skip


def test_stimulus_map_onset_must_be_a_number(cli, dataset, tmp_path):
    path = _write_map(tmp_path, [{'task': 'movie', 'path': 'x.mp4', 'onset': 'soon'}])
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus-map', path), 65,
                   'line 2', "onset must be a number of seconds, got 'soon'")  # fmt: skip


@pytest.mark.parametrize(
    ('argv', 'fragment'),
    [
        (['-d', '/a', 'fmriprep=/b'], 'names fMRIPrep twice'),
        (['--stimulus', 'movie=/a.mp4', 'movie=/b.mp4'], 'two movies for the same task'),
        (['--stimulus', '/a.mp4', 'rest=/b.mp4', '-t', 'movie'], 'no selected run has task rest'),
    ],
)
def test_contradictory_inputs_are_refused(cli, dataset, tmp_path, argv, fragment):
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', *argv), 64, fragment)


@pytest.mark.parametrize(('value', 'runs'), [(None, 4), ('*', 0)])
def test_bids_filter_null_and_any(cli, dataset, tmp_path, plan_of, value, runs):
    filters = tmp_path / 'filters.json'
    filters.write_text(json.dumps({'bold': {'acquisition': value}}))
    result = cli(dataset, tmp_path / 'out', 'participant', '--bids-filter-file', filters)
    if runs:
        assert result.code == 0, result.err
        assert len(plan_of()['Runs']) == runs
        assert plan_of()['Config']['inputs']['bids_filters'] == {'bold': {'acquisition': value}}
    else:  # no run has an acq- entity: "any value" selects none
        assert_refused(result, 18, 'selected no BOLD run')


def test_short_movie_warning_reaches_stderr(cli, dataset, tmp_path):
    write_movie(dataset / 'stimuli' / 'movie.mp4', 14.0, fps=4, size=(32, 24))
    result = cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '01')
    assert result.code == 0
    assert result.err.count('before the run does: modelled as a blank screen') == 2


def test_warnings_do_not_come_before_a_refusal(cli, dataset, tmp_path):
    write_movie(dataset / 'stimuli' / 'movie.mp4', 14.0, fps=4, size=(32, 24))
    edit_json(_preproc_json(dataset, '02', 2), RepetitionTime=2.0)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65, 'TR mismatch')


def test_tr_falls_back_to_raw_then_to_the_header(cli, dataset, tmp_path, plan_of):
    import nibabel as nb

    edit_json(_preproc_json(dataset), RepetitionTime=None)
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '01').code == 0
    run = _runs(plan_of())['sub-01_task-movie_run-1']
    assert run['RepetitionTime'] == 1.0
    assert 'the raw one is used' in run['warnings'][0]

    edit_json(dataset / 'task-movie_bold.json', RepetitionTime=None)
    preproc = _preproc_json(dataset).with_suffix('').with_suffix('.nii.gz')
    img = nb.load(preproc)
    img.header.set_xyzt_units('mm', 'msec')
    img.header.set_zooms((*img.header.get_zooms()[:3], 1500.0))
    nb.Nifti1Image(img.get_fdata(), img.affine, img.header).to_filename(preproc)
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '01').code == 0
    run = _runs(plan_of())['sub-01_task-movie_run-1']
    assert run['RepetitionTime'] == 1.5
    assert 'taken from the NIfTI header' in run['warnings'][0]


@pytest.mark.parametrize(
    ('key', 'value', 'fragment'),
    [
        ('RepetitionTime', '1.0 s', "RepetitionTime of the preprocessed BOLD sidecar is '1.0 s'"),
        ('RepetitionTime', 0, 'must be a positive number of seconds'),
        ('SliceTiming', 0.5, 'SliceTiming must be a list of seconds'),
    ],
)
def test_malformed_sidecar_values_are_refused(cli, dataset, tmp_path, key, value, fragment):
    edit_json(_preproc_json(dataset), SliceTimingCorrected=None, StartTime=None, **{key: value})
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'sub-01_task-movie_run-1', fragment)  # fmt: skip


@pytest.mark.parametrize('which', ['events', 'map'])
def test_empty_tsv_is_refused(cli, dataset, tmp_path, which):
    if which == 'events':
        _events(dataset, '01', 1).write_text('')
        argv = []
    else:
        path = tmp_path / 'empty.tsv'
        path.write_text('')
        argv = ['--stimulus-map', path]
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', *argv), 65, 'cannot read')


def test_plan_entities_hold_no_sidecar_metadata(cli, dataset, tmp_path, plan_of):
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    entities = _runs(plan_of())['sub-01_task-movie_run-1']['entities']
    assert entities == {'subject': '01', 'task': 'movie', 'run': 1, 'suffix': 'bold',
                        'datatype': 'func', 'extension': '.nii.gz'}  # fmt: skip


def test_runs_that_differ_in_dir_get_distinct_names(cli, dataset, tmp_path, plan_of):
    for path in sorted(dataset.rglob('sub-01_task-movie_run-2_*')):
        path.rename(path.with_name(path.name.replace('_run-2_', '_dir-PA_run-1_')))
    for path in sorted(dataset.rglob('sub-01_task-movie_run-1_*')):
        path.rename(path.with_name(path.name.replace('_run-1_', '_dir-AP_run-1_')))
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '01').code == 0
    assert sorted(_runs(plan_of())) == ['sub-01_task-movie_dir-AP_run-1',
                                         'sub-01_task-movie_dir-PA_run-1']  # fmt: skip
