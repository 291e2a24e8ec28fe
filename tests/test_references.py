"""Reference networks on the data grid: Seitzman spheres, Schaefer via TemplateFlow, user files."""

from __future__ import annotations

import logging
import socket
import time

import nibabel as nib
import numpy as np
import pytest

from bids_syncact.bids.references import (
    SCHAEFER,
    SCHAEFER_NETWORKS,
    SEITZMAN,
    load_reference_networks,
)
from bids_syncact.errors import InputDataError, MissingInputError, UsageError

TEMPLATE_DIR = 'tpl-MNI152NLin2009cAsym'
SCHAEFER_STEM = 'tpl-MNI152NLin2009cAsym_{res}atlas-Schaefer2018_desc-400Parcels7Networks_dseg'


def _mni_grid(voxel_mm: float) -> nib.Nifti1Image:
    """Return an empty image on a grid of ``voxel_mm`` voxels that covers MNI space."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    shape = tuple(int(np.ceil(extent / voxel_mm)) + 1 for extent in (180, 216, 180))
    return nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine)


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to reach the network fail at once, and record it."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError('network access in a test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    return attempts


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / 'templateflow'
    home.mkdir()
    monkeypatch.setenv('TEMPLATEFLOW_HOME', str(home))
    return home


def _write_schaefer_tsv(folder, parcels: list[str]):
    lines = ['index\tname\tcolor'] + [f'{i}\t{n}\t#000000' for i, n in enumerate(parcels, 1)]
    (folder / (SCHAEFER_STEM.format(res='') + '.tsv')).write_text('\n'.join(lines) + '\n')


# ------------------------------------------------------------------------------ seitzman2018


def test_seitzman_on_a_coarse_mni_grid():
    grid = _mni_grid(10.0)
    ref = load_reference_networks(SEITZMAN, grid)
    assert ref.name == SEITZMAN
    assert len(ref.names) == 13
    assert 'unassigned' not in ref.names
    assert all(type(n) is str for n in ref.names)
    assert {'Visual', 'DefaultMode', 'SomatomotorDorsal'} <= set(ref.names)
    assert ref.maps.shape == (13, *grid.shape)
    assert set(np.unique(ref.maps).tolist()) == {0.0, 1.0}
    assert ref.maps.sum(axis=0).max() == 1.0  # exclusive
    sizes = dict(zip(ref.names, ref.maps.sum(axis=(1, 2, 3)), strict=True))
    # 285 assigned ROIs of 4-5 mm on 10 mm voxels: about one voxel each, none lost.
    assert 270 <= sum(sizes.values()) <= 300
    assert sizes['DefaultMode'] >= 60  # 67 ROIs
    assert 'Seitzman' in ref.description
    assert 'Seitzman' in ref.source


def test_seitzman_keeps_to_the_mask():
    grid = _mni_grid(4.0)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[: grid.shape[0] // 2] = True  # the left half (x < 0) only
    ref = load_reference_networks(SEITZMAN, grid, mask=mask)
    assert not ref.maps[:, ~mask].any()
    assert (ref.maps[:, mask].sum(axis=1) > 0).all()


# ------------------------------------------------------------------------------ schaefer2018-7


def test_auto_falls_back_to_seitzman_without_templateflow(empty_home, no_network, caplog):
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger='bids_syncact.references'):
        ref = load_reference_networks(None, _mni_grid(10.0))
    assert ref.name == SEITZMAN
    assert time.monotonic() - start < 10
    assert not no_network
    assert not any(empty_home.iterdir())  # TemplateFlow did not write its skeleton there
    assert any(
        'schaefer2018-7 not used' in r.message and 'empty' in r.message for r in caplog.records
    )


def test_auto_falls_back_when_templateflow_has_only_a_placeholder(empty_home, no_network, caplog):
    # What TemplateFlow's skeleton holds before a download: the TSV, an empty NIfTI.
    folder = empty_home / TEMPLATE_DIR
    folder.mkdir()
    _write_schaefer_tsv(folder, ['7Networks_LH_Vis_1'])
    (folder / (SCHAEFER_STEM.format(res='res-02_') + '.nii.gz')).touch()
    with caplog.at_level(logging.INFO, logger='bids_syncact.references'):
        ref = load_reference_networks('auto', _mni_grid(10.0))
    assert ref.name == SEITZMAN
    assert not no_network
    assert any('not downloaded' in r.message for r in caplog.records)


def test_explicit_schaefer_without_templateflow_is_refused(empty_home, no_network):
    with pytest.raises(MissingInputError) as err:
        load_reference_networks(SCHAEFER, _mni_grid(10.0))
    message = str(err.value)
    assert '\n' not in message
    assert f'TEMPLATEFLOW_HOME={empty_home}' in message
    assert '--reference-networks seitzman2018' in message
    assert not no_network


def test_schaefer_from_templateflow_groups_parcels_into_7_networks(empty_home, no_network):
    folder = empty_home / TEMPLATE_DIR
    folder.mkdir()
    # 14 parcels, two per network, in slabs along x of a 2 mm atlas grid.
    parcels = [f'7Networks_{h}_{n}_1' for n in SCHAEFER_NETWORKS for h in ('LH', 'RH')]
    _write_schaefer_tsv(folder, parcels)
    labels = np.zeros((14 * 3, 4, 4), dtype=np.int16)
    for parcel in range(14):
        labels[3 * parcel : 3 * parcel + 3] = parcel + 1
    atlas_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.Nifti1Image(labels, atlas_affine).to_filename(
        folder / (SCHAEFER_STEM.format(res='res-02_') + '.nii.gz')
    )
    target = nib.Nifti1Image(np.zeros((21, 2, 2), dtype=np.uint8), np.diag([4.0, 4, 4, 1]))
    ref = load_reference_networks(None, target)
    assert ref.name == SCHAEFER
    assert ref.names == SCHAEFER_NETWORKS
    assert ref.maps.shape == (7, 21, 2, 2)
    # Target voxel i sits at x = 4 i mm = atlas voxel 2 i, of parcel 2 i // 3 + 1.
    parcel = (2 * np.arange(21)) // 3
    expected_network = parcel // 2
    np.testing.assert_array_equal(ref.maps[:, :, 0, 0].argmax(axis=0), expected_network)
    assert ref.maps.sum(axis=0).min() == 1.0
    assert not no_network


# ------------------------------------------------------------------------------ a PATH


def test_label_atlas_path_is_resampled_to_the_target(tmp_path):
    # 2 mm atlas: x slabs of labels 3, 7, 9 and background 0; 7 and 9 share a name.
    labels = np.zeros((12, 6, 6), dtype=np.int32)
    labels[0:4], labels[4:8], labels[8:10] = 3, 7, 9
    nib.Nifti1Image(labels, np.diag([2.0, 2, 2, 1])).to_filename(tmp_path / 'atlas.nii.gz')
    (tmp_path / 'atlas.tsv').write_text('index\tname\n3\tVisual\n7\tMotor\n9\tMotor\n12\tSpare\n')
    target = nib.Nifti1Image(np.zeros((6, 3, 3), dtype=np.uint8), np.diag([4.0, 4, 4, 1]))
    ref = load_reference_networks(str(tmp_path / 'atlas.nii.gz'), target)
    assert ref.names == ('Visual', 'Motor', 'Spare')
    assert ref.maps.shape == (3, 6, 3, 3)
    # Target voxel i is atlas voxel 2 i: labels 3, 3, 7, 7, 9, 0.
    assert ref.maps[0, :, 1, 1].tolist() == [1, 1, 0, 0, 0, 0]
    assert ref.maps[1, :, 1, 1].tolist() == [0, 0, 1, 1, 1, 0]
    assert not ref.maps[2].any()  # named, but not in the image
    assert ref.name == str(tmp_path / 'atlas.nii.gz')
    assert 'nearest' in ref.description


def test_probabilistic_atlas_path_is_resampled_and_clipped(tmp_path):
    maps = np.zeros((8, 8, 8, 2), dtype=np.float32)
    maps[..., 0] = 0.7
    maps[:4, ..., 1] = 1.0
    nib.Nifti1Image(maps, np.diag([2.0, 2, 2, 1])).to_filename(tmp_path / 'prob.nii')
    (tmp_path / 'prob.tsv').write_text('name\nEverywhere\nLeft\n')
    target = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.diag([3.0, 3, 3, 1]))
    ref = load_reference_networks(str(tmp_path / 'prob.nii'), target)
    assert ref.names == ('Everywhere', 'Left')
    assert ref.maps.shape == (2, 4, 4, 4)
    assert ref.maps.min() >= 0
    assert ref.maps.max() <= 1
    np.testing.assert_allclose(ref.maps[0], 0.7, atol=1e-5)
    # Target x = 0, 3, 6, 9 mm is atlas voxel 0, 1.5, 3, 4.5; Left is voxels 0-3.
    assert ref.maps[1, 0, 1, 1] == pytest.approx(1.0, abs=1e-5)
    assert ref.maps[1, 2, 1, 1] == pytest.approx(1.0, abs=1e-5)
    assert ref.maps[1, 3, 1, 1] < 0.1
    assert 'continuous' in ref.description


# ------------------------------------------------------------------------------ refusals


def _labels(path, data=None, tsv='index\tname\n1\tA\n2\tB\n'):
    data = np.array([[[0, 1], [2, 2]]] * 2, dtype=np.int16) if data is None else data
    nib.Nifti1Image(data, np.eye(4)).to_filename(path)
    if tsv is not None:
        path.with_name(path.name.replace('.nii.gz', '.tsv')).write_text(tsv)
    return path


def _missing_tsv(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', tsv=None)


def _no_name_column(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', tsv='index\tlabel\n1\tA\n2\tB\n')


def _unnamed_label(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', tsv='index\tname\n1\tA\n')


def _non_integer_index(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', tsv='index\tname\n1\tA\ntwo\tB\n')


def _non_integer_labels(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', data=np.full((2, 2, 2), 0.5, dtype=np.float32))


def _wrong_row_count(tmp_path):
    nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)).to_filename(
        tmp_path / 'p.nii.gz'
    )
    (tmp_path / 'p.tsv').write_text('name\nA\nB\n')
    return tmp_path / 'p.nii.gz'


def _not_probabilities(tmp_path):
    nib.Nifti1Image(np.full((2, 2, 2, 1), 3.0, np.float32), np.eye(4)).to_filename(
        tmp_path / 'p.nii.gz'
    )
    (tmp_path / 'p.tsv').write_text('name\nA\n')
    return tmp_path / 'p.nii.gz'


def _five_d(tmp_path):
    return _labels(tmp_path / 'a.nii.gz', data=np.zeros((2, 2, 2, 2, 2), dtype=np.int16))


def _unreadable(tmp_path):
    path = tmp_path / 'a.nii.gz'
    path.write_bytes(b'not a nifti at all')
    path.with_name('a.tsv').write_text('index\tname\n1\tA\n')
    return path


@pytest.mark.parametrize(
    ('make', 'error', 'words'),
    [
        (_missing_tsv, InputDataError, 'no a.tsv next to it'),
        (_no_name_column, InputDataError, 'no column name'),
        (_unnamed_label, InputDataError, 'no name for the label values 2'),
        (_non_integer_index, InputDataError, 'index column'),
        (_non_integer_labels, InputDataError, 'non-integer values'),
        (_wrong_row_count, InputDataError, '2 rows for the 3 volumes'),
        (_not_probabilities, InputDataError, 'in [0, 1]'),
        (_five_d, InputDataError, 'a 5-D image'),
        (_unreadable, InputDataError, 'cannot read it'),
    ],
)
def test_bad_reference_files_are_refused_in_one_line(tmp_path, make, error, words):
    path = make(tmp_path)
    target = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    with pytest.raises(error) as err:
        load_reference_networks(str(path), target)
    assert type(err.value) is error
    assert '\n' not in str(err.value)
    assert words in str(err.value)


def test_unknown_names_and_missing_paths_are_refused(tmp_path):
    target = _mni_grid(10.0)
    with pytest.raises(UsageError) as err:
        load_reference_networks('schaefer2018-17', target)
    assert 'auto, schaefer2018-7, seitzman2018' in str(err.value)
    assert err.value.exit_code == 64
    with pytest.raises(MissingInputError, match='no such file'):
        load_reference_networks(str(tmp_path / 'atlas.nii.gz'), target)
