"""The bad-input matrix of issue 9: one line, DESIGN.md's exit code, no traceback, nothing half-written.

Each case breaks one thing in a fresh copy of the tiny dataset and runs the command line.
Cases from the matrix that live beside the feature they guard:

- stim_file with ``..``, an absolute path or a symlink leaving BIDS_DIR, a corrupt movie, a movie
  on screen for less than half of its run, confounds of the wrong length: ``test_refusals.py``;
- a stimulus map without an onset column, or with rows that tie: ``test_discovery.py``;
- participant outputs of different settings, grids or layers mixed at the group level:
  ``test_group.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from bids_syncact.bids.derivatives import sidecar_path

from .conftest import assert_nothing_half_written, assert_refused, tree_state
from .test_discovery import _events, _preproc_json, _write_map
from .test_participant import FAST

#: One subject through the whole participant level, features included.
ONE = ('--participant-label', '01', *FAST)


def _preproc(dataset: Path, kind: str = 'desc-preproc_bold', sub: str = '01', run: int = 1):
    return _preproc_json(dataset, sub, run).with_name(
        _preproc_json(dataset, sub, run).name.replace('desc-preproc_bold.json', f'{kind}.nii.gz')
    )


def _refused(cli, dataset, out, code, *fragments, args=(), process=False):
    before = tree_state(dataset)
    assert_refused(cli(dataset, out, 'participant', *args, process=process), code, *fragments)
    assert_nothing_half_written(out)
    assert not list(out.glob('sub-01/**/sub-01_*_boldmap.nii.gz'))  # none of the refused subject
    assert tree_state(dataset) == before  # the input is never written, refused or not


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize('keep', [0.5, 0.02])
def test_a_truncated_bold_is_refused(cli, dataset, tmp_path, keep):
    bold = _preproc(dataset)
    data = bold.read_bytes()
    bold.write_bytes(data[: int(len(data) * keep)])  # half: the header reads; 2%: it does not
    _refused(cli, dataset, tmp_path / 'out', 65, 'sub-01_task-movie_run-1',
             args=ONE, process=keep == 0.5)  # fmt: skip


def test_a_bold_that_is_not_an_image_is_refused(cli, dataset, tmp_path):
    _preproc(dataset).write_bytes(gzip.compress(b'this is not a NIfTI header' * 20))
    _refused(cli, dataset, tmp_path / 'out', 65, 'sub-01_task-movie_run-1', 'cannot read',
             args=ONE)  # fmt: skip


def test_a_corrupt_mask_is_refused(cli, dataset, tmp_path):
    _preproc(dataset, 'desc-brain_mask').write_bytes(b'\x1f\x8b broken gzip')
    _refused(cli, dataset, tmp_path / 'out', 65, 'brain_mask', 'cannot read', args=ONE,
             process=True)  # fmt: skip


def test_a_mask_on_another_grid_is_refused(cli, dataset, tmp_path):
    mask = _preproc(dataset, 'desc-brain_mask')
    img = nib.load(mask)
    smaller = np.asarray(img.dataobj)[:-1]
    nib.Nifti1Image(smaller, img.affine, img.header).to_filename(mask)
    _refused(cli, dataset, tmp_path / 'out', 65, 'is not on the grid of', args=ONE,
             process=True)  # fmt: skip


def _edit_bold(dataset: Path, edit) -> None:
    bold = _preproc(dataset)
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    edit(data)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    nib.Nifti1Image(data, img.affine, header).to_filename(bold)


def test_every_voxel_nan_is_refused(cli, dataset, tmp_path):
    _edit_bold(dataset, lambda data: data.fill(np.nan))
    _refused(cli, dataset, tmp_path / 'out', 65, 'sub-01_task-movie_run-1', 'no finite',
             args=ONE, process=True)  # fmt: skip


def test_nan_and_constant_voxels_are_left_out_of_the_maps(cli, dataset, tmp_path):
    """The policy: such voxels leave the mask (NaN in the maps), counted in sidecar and report."""
    masks = [np.asarray(nib.load(_preproc(dataset, 'desc-brain_mask', run=r)).dataobj) > 0
             for r in (1, 2)]  # fmt: skip
    nan_once, inf_always, constant, kept = map(tuple, np.argwhere(masks[0] & masks[1])[:4])

    def edit(data):
        data[(*nan_once, 10)] = np.nan  # one kept volume of run 1 only
        data[inf_always] = np.inf
        data[constant] = 100.0

    _edit_bold(dataset, edit)
    out = tmp_path / 'out'
    result = cli(dataset, out, 'participant', *ONE, process=True)
    assert result.code == 0, result.err
    coef = next(out.rglob('sub-01_*stat-coef_boldmap.nii.gz'))
    maps = np.asarray(nib.load(coef).dataobj)
    assert [np.isnan(maps[v]).all() for v in (nan_once, inf_always, constant, kept)] == [
        True, True, True, False]  # fmt: skip
    assert json.loads(sidecar_path(coef).read_text())['VoxelsWithoutSignal'] == 3
    assert '3 voxels of the brain mask had no usable signal' in (out / 'sub-01.html').read_text()
    annotations = next(out.rglob('sub-01_*_annotations.tsv'))
    labels = pd.read_csv(annotations, sep='\t', keep_default_na=False)['label']
    assert (labels == 'n/a').all()  # --n-nulls 0: no label without nulls


# --- confounds and events -------------------------------------------------------------------


def test_confounds_missing_a_strategy_s_columns_are_refused(cli, dataset, tmp_path):
    path = _preproc(dataset).with_name('sub-01_task-movie_run-1_desc-confounds_timeseries.tsv')
    table = pd.read_csv(path, sep='\t')
    table.drop(columns=[c for c in table.columns if c.startswith('trans_')]).to_csv(
        path, sep='\t', index=False)  # fmt: skip
    _refused(cli, dataset, tmp_path / 'out', 65, 'confounds', 'simple',
             args=(*ONE, '--confounds-strategy', 'simple'), process=True)  # fmt: skip


def _edit_events(dataset: Path, edit) -> None:
    for sub in ('01', '02'):
        for run in (1, 2):
            events = pd.read_csv(_events(dataset, sub, run), sep='\t')
            edit(events).to_csv(_events(dataset, sub, run), sep='\t', index=False)


def test_events_without_an_onset_column_are_refused(cli, dataset, tmp_path):
    _edit_events(dataset, lambda events: events.drop(columns='onset'))
    _refused(cli, dataset, tmp_path / 'out', 65, 'no onset column')


def test_an_onset_past_the_end_of_the_run_is_refused(cli, dataset, tmp_path):
    _edit_events(dataset, lambda events: events.assign(onset=25.0))  # runs last 20 s
    _refused(cli, dataset, tmp_path / 'out', 65, 'onset 25 s is after the run', 'ends at 20 s')


def test_a_negative_onset_is_valid(cli, dataset, tmp_path, plan_of):
    _edit_events(dataset, lambda events: events.assign(onset=-3.0))
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    assert {run['stimulus']['onset_s'] for run in plan_of()['Runs']} == {-3.0}


# --- movies -------------------------------------------------------------------------------


def test_an_empty_movie_is_refused(cli, dataset, tmp_path):
    (dataset / 'stimuli' / 'movie.mp4').write_bytes(b'')
    _refused(cli, dataset, tmp_path / 'out', 65, 'movie.mp4', 'empty')


def test_an_audio_only_movie_is_refused(cli, dataset, tmp_path):
    path = tmp_path / 'sound.mp4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('aac', rate=8000)
        for index in range(30):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format='fltp', layout='mono'
            )
            frame.sample_rate, frame.pts = 8000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    _refused(cli, dataset, tmp_path / 'out', 65, 'sound.mp4', 'no video stream',
             args=('--stimulus', str(path)))  # fmt: skip


# --- weights, filters, names ---------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize('content', ['payload', 'list'])
def test_weights_that_are_not_a_state_dict_are_refused_and_never_run(cli, dataset, tmp_path,
                                                                     content):  # fmt: skip
    marker = tmp_path / 'pwned'
    weights = tmp_path / 'weights.pth'
    obj = {'features.0.weight': _Payload(marker)} if content == 'payload' else [torch.zeros(2)]
    torch.save(obj, weights)
    _refused(cli, dataset, tmp_path / 'out', 65, 'weights.pth',
             args=(*ONE, '--weights', str(weights)), process=True)  # fmt: skip
    assert not marker.exists()


def test_a_filter_file_of_bad_json_is_refused(cli, dataset, tmp_path):
    path = tmp_path / 'filter.json'
    path.write_text('{"bold": {"task": "movie",}')
    _refused(cli, dataset, tmp_path / 'out', 64, 'filter.json', 'JSON',
             args=('--bids-filter-file', str(path)))  # fmt: skip


def test_an_unknown_cnn_lists_the_valid_ones(cli, dataset, tmp_path):
    _refused(cli, dataset, tmp_path / 'out', 64, 'notanet', 'alexnet', 'resnet50',
             args=('--cnn', 'notanet'))  # fmt: skip


def test_an_unknown_layer_lists_the_valid_ones(cli, dataset, tmp_path):
    _refused(cli, dataset, tmp_path / 'out', 64, "'features.99'", 'features.1', 'classifier',
             args=(*ONE, '--layers', 'features.99'), process=True)  # fmt: skip


# --- the stimulus map ------------------------------------------------------------------------


def test_a_stimulus_map_missing_its_path_column_is_refused(cli, dataset, tmp_path):
    path = _write_map(tmp_path, [{'task': 'movie', 'onset': 0}])
    _refused(cli, dataset, tmp_path / 'out', 65, 'lacks the column(s) path',
             args=('--stimulus-map', path))  # fmt: skip


def test_a_stimulus_map_for_an_unknown_task_is_refused(cli, dataset, tmp_path):
    movie = dataset / 'stimuli' / 'movie.mp4'
    path = _write_map(tmp_path, [{'task': 'movie', 'path': str(movie), 'onset': 0},
                                 {'task': 'film', 'path': str(movie), 'onset': 0}])  # fmt: skip
    _refused(cli, dataset, tmp_path / 'out', 65, 'film', 'line 3', 'tasks here: movie',
             args=('--stimulus-map', path))  # fmt: skip


def test_a_stimulus_map_that_is_not_a_table_is_refused(cli, dataset, tmp_path):
    path = tmp_path / 'map.tsv'
    path.write_bytes(b'\x00\xff\xfe binary \x00')
    _refused(cli, dataset, tmp_path / 'out', 65, 'map.tsv', args=('--stimulus-map', path))


def test_a_refusal_before_any_work_writes_nothing(cli, dataset, tmp_path):
    """A refusal before any work leaves OUTPUT_DIR without even dataset_description.json."""
    shutil.rmtree(dataset / 'stimuli')
    out = tmp_path / 'out'
    assert cli(dataset, out, 'participant').code == 66
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize('kind', ['file', 'dangling link'])
def test_an_output_dir_that_cannot_be_a_folder_is_refused_before_any_work(cli, dataset, tmp_path,
                                                                         kind):  # fmt: skip
    out = tmp_path / 'out'
    if kind == 'file':
        out.write_text('not a folder')
    else:
        out.symlink_to(tmp_path / 'nowhere')
    _refused(cli, dataset, out, 64, f'cannot write OUTPUT_DIR {out}')
    assert not (tmp_path / 'work').exists()  # refused before the work dir was made
