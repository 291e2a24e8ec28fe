"""Every refusal of DESIGN.md sections 3-4: one line, its exit code, no traceback, no output."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from bids_syncact.cli import run as cli_run
from bids_syncact.demo import write_movie

from .conftest import SHARED_EXAMPLES, assert_refused, edit_json, tree_state
from .test_discovery import _events, _preproc_json

DS001 = SHARED_EXAMPLES / 'ds001'
DS001_FMRIPREP = SHARED_EXAMPLES / 'ds000001-fmriprep'
needs_examples = pytest.mark.skipif(not DS001.is_dir(), reason='../shared/bids-examples missing')


def _set_stim_file(dataset, value):
    for sub, run in [(s, r) for s in ('01', '02') for r in (1, 2)]:
        events = pd.read_csv(_events(dataset, sub, run), sep='\t')
        events['stim_file'] = value
        events.to_csv(_events(dataset, sub, run), sep='\t', index=False)


def test_no_fmriprep_derivatives(cli, dataset, tmp_path):
    shutil.rmtree(dataset / 'derivatives')
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'no fMRIPrep derivatives at', '-d fmriprep=PATH')  # fmt: skip


def test_no_movie_task(cli, dataset, tmp_path):
    for sub in ('01', '02'):
        for run in (1, 2):
            events = pd.read_csv(_events(dataset, sub, run), sep='\t')
            events.drop(columns='stim_file').to_csv(_events(dataset, sub, run), sep='\t',
                                                    index=False)  # fmt: skip
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'no movie task', 'task(s) movie', '--stimulus-map')  # fmt: skip


def test_no_stimulus_for_one_run(cli, dataset, tmp_path):
    _events(dataset, '02', 2).unlink()
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'no stimulus for run sub-02_task-movie_run-2')  # fmt: skip


def test_selected_task_without_stimulus(cli, dataset, tmp_path):
    rest = dataset / 'sub-01' / 'func' / 'sub-01_task-rest_bold.nii.gz'
    shutil.copy(dataset / 'sub-01' / 'func' / 'sub-01_task-movie_run-1_bold.nii.gz', rest)
    (dataset / 'task-rest_bold.json').write_text(json.dumps({'TaskName': 'rest',
                                                            'RepetitionTime': 1.0}))  # fmt: skip
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '-t', 'movie', 'rest'), 66,
                   'task rest has no stimulus')  # fmt: skip
    # Without -t, a task with no stimulus is skipped, not refused.
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0


@pytest.mark.parametrize(
    ('stim_file', 'fragment'),
    [
        ('/etc/movie.mp4', 'is an absolute path'),
        ('C:\\movies\\movie.mp4', 'is an absolute path'),
        ('../movie.mp4', 'contains ".."'),
        ('clips/../../sub-01/movie.mp4', 'contains ".."'),
    ],
)
def test_unsafe_stim_file(cli, dataset, tmp_path, stim_file, fragment):
    _set_stim_file(dataset, stim_file)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65, fragment)


def test_symlink_resolving_outside_the_dataset(cli, dataset, tmp_path):
    outside = write_movie(tmp_path / 'elsewhere' / 'movie.mp4', 30, fps=4, size=(32, 24))
    (dataset / 'stimuli' / 'movie.mp4').unlink()
    os.symlink(outside, dataset / 'stimuli' / 'movie.mp4')
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'outside BIDS_DIR', '--stimulus-map')  # fmt: skip


def test_symlinked_folder_resolving_outside(cli, dataset, tmp_path):
    write_movie(tmp_path / 'elsewhere' / 'movie.mp4', 30, fps=4, size=(32, 24))
    os.symlink(tmp_path / 'elsewhere', dataset / 'stimuli' / 'clips')
    _set_stim_file(dataset, 'clips/movie.mp4')
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65, 'outside BIDS_DIR')


def test_annex_symlink_without_content(cli, dataset, tmp_path):
    (dataset / 'stimuli' / 'movie.mp4').unlink()
    os.symlink('../.git/annex/objects/zz/MD5E-s9--x.mp4', dataset / 'stimuli' / 'movie.mp4')
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'does not exist', 'datalad get')  # fmt: skip


def test_missing_stimulus_file(cli, dataset, tmp_path):
    (dataset / 'stimuli' / 'movie.mp4').unlink()
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66, 'does not exist')


def test_corrupt_movie(cli, dataset, tmp_path):
    (dataset / 'stimuli' / 'movie.mp4').write_bytes(b'not a movie at all' * 100)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'is corrupt or not a movie')  # fmt: skip


def test_unreadable_stimulus(cli, dataset, tmp_path, monkeypatch):
    movie = dataset / 'stimuli' / 'movie.mp4'
    original_open = type(movie).open

    def deny(self, *args, **kwargs):  # chmod 000 does not stop root, who runs CI containers
        if self == movie:
            raise PermissionError(13, 'Permission denied', str(self))
        return original_open(self, *args, **kwargs)

    monkeypatch.setattr(type(movie), 'open', deny)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'cannot read stimulus', 'Permission denied', 'permissions')  # fmt: skip


def test_stimulus_that_is_a_folder(cli, dataset, tmp_path):
    movie = tmp_path / 'folder.mp4'
    movie.mkdir()
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus', str(movie)), 65,
                   'is not a file')  # fmt: skip


def test_movie_covering_less_than_half_the_run(cli, dataset, tmp_path):
    movie = write_movie(tmp_path / 'short.mp4', 6.0, fps=4, size=(32, 24))
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus', str(movie)), 65,
                   'on screen for 6.0 s of the 20.0 s run')  # fmt: skip


def test_volume_timing(cli, dataset, tmp_path):
    edit_json(dataset / 'task-movie_bold.json', VolumeTiming=[0.0, 2.0, 3.5])
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'sub-01_task-movie_run-1', 'VolumeTiming')  # fmt: skip


def test_slice_timing_in_milliseconds(cli, dataset, tmp_path):
    edit_json(_preproc_json(dataset), SliceTimingCorrected=None, StartTime=None)
    edit_json(dataset / 'task-movie_bold.json', SliceTiming=[0, 250, 500, 750])
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'SliceTiming spans 0-750 s', 'milliseconds')  # fmt: skip


def test_tr_mismatch(cli, dataset, tmp_path):
    edit_json(_preproc_json(dataset, '02', 1), RepetitionTime=1.002)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65,
                   'sub-02_task-movie_run-1', 'TR mismatch', 'raw 1 s vs preprocessed 1.002 s')  # fmt: skip


def test_tr_within_a_millisecond_is_accepted(cli, dataset, tmp_path):
    edit_json(_preproc_json(dataset, '02', 1), RepetitionTime=1.0009)
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0


def test_confounds_of_another_length(cli, dataset, tmp_path):
    path = _preproc_json(dataset).parent / 'sub-01_task-movie_run-1_desc-confounds_timeseries.tsv'
    table = pd.read_csv(path, sep='\t')
    table.iloc[:-3].to_csv(path, sep='\t', index=False)
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 65, 'has 17 rows for 20 volumes')


def test_missing_mask(cli, dataset, tmp_path):
    next((dataset / 'derivatives').rglob('sub-02_task-movie_run-1_*brain_mask.nii.gz')).unlink()
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'sub-02_task-movie_run-1', 'no fMRIPrep brain mask')  # fmt: skip


@pytest.mark.parametrize(
    ('where', 'fragment'),
    [
        ('{bids}', 'is BIDS_DIR or contains it'),
        ('{bids}/..', 'is BIDS_DIR or contains it'),
        ('{bids}/sub-01/out', 'inside the input dataset'),
        ('{bids}/derivatives/syncact/sub-01', 'inside the input dataset'),
        ('{bids}/outputs', 'inside the input dataset'),
        ('{bids}/derivatives/fmriprep', 'overlaps the fMRIPrep derivatives'),
        ('{bids}/derivatives/fmriprep/syncact', 'overlaps the fMRIPrep derivatives'),
    ],
)
def test_output_dir_that_would_write_into_the_input(cli, dataset, tmp_path, where, fragment):
    before = tree_state(dataset)
    result = cli(dataset, where.format(bids=dataset), 'participant')
    assert_refused(result, 64, 'OUTPUT_DIR', fragment)
    assert tree_state(dataset) == before


def test_work_dir_inside_the_input_is_refused(cli, dataset, tmp_path):
    result = cli(dataset, tmp_path / 'out', 'participant', '-w', dataset / 'work')
    assert_refused(result, 64, '--work-dir', 'inside the input dataset')


def test_missing_bids_dir(cli, tmp_path):
    assert_refused(cli(tmp_path / 'nope', tmp_path / 'out', 'participant'), 66, 'does not exist')


def test_not_a_bids_dataset(cli, dataset, tmp_path):
    (dataset / 'dataset_description.json').unlink()
    assert_refused(cli(dataset, tmp_path / 'out', 'participant'), 66,
                   'no dataset_description.json')  # fmt: skip


def test_bids_validation_failure_is_16(cli, dataset, tmp_path):
    (dataset / 'sub-01' / 'func' / 'sub-01_task-movie_run-1_bold.nii.gz').write_bytes(b'')
    result = cli(dataset, tmp_path / 'out', 'participant', validate=True)
    assert_refused(result, 16, 'BIDS validation failed', 'EMPTY_FILE',
                   '--skip-bids-validation')  # fmt: skip
    # Errors in subjects that are not processed do not stop the ones that are.
    assert cli(dataset, tmp_path / 'out', 'participant', '--participant-label', '02',
               validate=True).code == 0  # fmt: skip


def test_clean_workdir_refuses_a_foreign_folder(cli, dataset, tmp_path):
    foreign = tmp_path / 'thesis'
    foreign.mkdir()
    (foreign / 'chapter1.tex').write_text('precious')
    result = cli(dataset, tmp_path / 'out', 'participant', '-w', foreign, '--clean-workdir')
    assert_refused(result, 64, 'not a bids-syncact work dir')
    assert (foreign / 'chapter1.tex').read_text() == 'precious'


def test_clean_workdir_empties_its_own_work_dir(cli, dataset, tmp_path):
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    stale = tmp_path / 'work' / 'stale.txt'
    stale.write_text('old')
    assert cli(dataset, tmp_path / 'out', 'participant', '--clean-workdir').code == 0
    assert not stale.exists()
    assert (tmp_path / 'work' / 'plan.json').is_file()


def test_refusal_traceback_goes_to_the_log_only(cli, dataset, tmp_path):
    shutil.rmtree(dataset / 'derivatives')
    result = cli(dataset, tmp_path / 'out', 'participant')
    assert result.code == 66
    logs = list((tmp_path / 'work' / 'logs').glob('bids-syncact_*.log'))
    assert logs
    assert 'Traceback' in logs[0].read_text()


def test_an_unexpected_failure_is_one_line_and_exit_1(cli, dataset, tmp_path, monkeypatch):
    from bids_syncact.workflows import participant

    def explode(*args, **kwargs):
        raise RuntimeError('disk on fire\nsecond line')

    monkeypatch.setattr(participant, 'discover', explode)
    result = cli(dataset, tmp_path / 'out', 'participant')
    assert result.code == 1
    assert len(result.err_lines) == 1
    assert 'processing failed (RuntimeError: disk on fire second line)' in result.err
    crash = next((tmp_path / 'work' / 'logs').glob('crash-*.txt'))
    assert 'Traceback' in crash.read_text()
    assert cli_run.PROG in result.err


@needs_examples
def test_ds001_is_not_movie_data(cli, tmp_path):
    result = cli(DS001, tmp_path / 'out', 'participant', '-d', DS001_FMRIPREP)
    assert_refused(result, 66, 'no movie task', 'balloonanalogrisktask')


@needs_examples
def test_ds001_without_derivatives(cli, tmp_path):
    assert_refused(cli(DS001, tmp_path / 'out', 'participant'), 66, 'no fMRIPrep derivatives')


@needs_examples
def test_ds001_fails_the_bids_validator(cli, tmp_path):
    result = cli(DS001, tmp_path / 'out', 'participant', '-d', DS001_FMRIPREP, validate=True)
    assert_refused(result, 16, 'BIDS validation failed', 'EMPTY_FILE')


@needs_examples
def test_ds001_derivatives_are_found_by_real_names(cli, tmp_path):
    """Raw run-01 matches fMRIPrep's run-1; res-2 is taken; the empty NIfTI is refused."""
    movie = write_movie(tmp_path / 'movie.mp4', 600, fps=1, size=(32, 24))
    result = cli(DS001, tmp_path / 'out', 'participant', '-d', DS001_FMRIPREP,
                 '--participant-label', '16', '--stimulus', str(movie))  # fmt: skip
    assert_refused(result, 65, 'sub-16_task-balloonanalogrisktask_run-01:',
                   'sub-16_task-balloonanalogrisktask_run-1_space-MNI152NLin2009cAsym_res-2_'
                   'desc-preproc_bold.nii.gz', 'empty or corrupt')  # fmt: skip
    no_derivs = cli(DS001, tmp_path / 'out', 'participant', '-d', DS001_FMRIPREP,
                    '--participant-label', '01', '--stimulus', str(movie))  # fmt: skip
    assert_refused(no_derivs, 66, 'sub-01_task-balloonanalogrisktask_run-01',
                   'no preprocessed BOLD for this run', 'run fMRIPrep on it')  # fmt: skip
