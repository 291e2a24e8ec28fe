"""Whole-or-nothing writes, and the temporaries an interrupted run leaves behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

from bids_syncact.bids import io


def _temporary(folder: Path, name: str, age_s: float) -> Path:
    path = folder / f'.{name}.k2j4_x9a{io._SUFFIX}'
    path.write_text('partial')
    os.utime(path, (path.stat().st_atime - age_s, path.stat().st_mtime - age_s))
    return path


def test_only_unlocked_old_temporaries_are_removed(tmp_path):
    folder = tmp_path / 'sub-01' / 'func'
    folder.mkdir(parents=True)
    dead = _temporary(folder, 'a_boldmap.nii.gz', 3600)
    writing = _temporary(folder, 'b_boldmap.nii.gz', 3600)
    young = _temporary(folder, 'c_boldmap.nii.gz', 0)  # between its creation and its lock
    mine = folder / '.my_notes.tmp'  # not ours: never touched
    mine.write_text('notes')
    with open(writing, 'rb') as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live writer, in this or any other process
        assert io.remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (writing, young, mine))  # fmt: skip


def test_a_temporary_being_written_is_locked(tmp_path):
    with io.replacing(tmp_path / 'x.tsv') as tmp:
        os.utime(tmp, (0, 0))  # as old as can be, yet its writer is alive
        assert io.remove_stale_temporaries(tmp_path) == []
        Path(tmp).write_text('whole')
    assert (tmp_path / 'x.tsv').read_text() == 'whole'


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'table.tsv'
    target.write_text('old')

    def interrupted_write() -> None:
        with io.replacing(target) as tmp:
            Path(tmp).write_text('half')
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert target.read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['table.tsv']


def test_a_disk_error_names_the_file_being_written(tmp_path):
    def full_disk() -> None:
        with io.replacing(tmp_path / 'map.nii.gz'):
            raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space left') as raised:
        full_disk()
    assert raised.value.filename == str(tmp_path / 'map.nii.gz')


def test_a_paged_array_reads_what_the_file_holds(tmp_path, rng):
    data = rng.standard_normal((30, 5000)).astype(np.float32)
    np.save(tmp_path / 'S.npy', data)
    paged = io.PagedArray(tmp_path / 'S.npy', resident_bytes=1)  # handed back after each read
    assert (paged.shape, paged.ndim, paged.dtype, len(paged)) == (data.shape, 2, data.dtype, 30)
    np.testing.assert_array_equal(paged[:, 4090:4100], data[:, 4090:4100])
    np.testing.assert_array_equal(paged[:, 4090:4100], data[:, 4090:4100])  # after a release
    voxels = np.array([3, 17, 4999])
    np.testing.assert_array_equal(paged[:, voxels], data[:, voxels])


def test_released_pages_of_a_written_memmap_reach_the_file(tmp_path):
    out = np.lib.format.open_memmap(tmp_path / 'out.npy', mode='w+', dtype=np.float32,
                                    shape=(4, 3000))  # fmt: skip
    out[:, :1500] = 1.0
    io.release_pages(out)
    out[:, 1500:] = 2.0
    io.release_pages(out)
    del out
    back = np.load(tmp_path / 'out.npy')
    assert (back[:, :1500] == 1).all()
    assert (back[:, 1500:] == 2).all()
