"""Whole-or-nothing writes, and the temporaries an interrupted run leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bids_syncact.bids import io


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_only_temporaries_of_dead_processes_of_this_host_are_removed(tmp_path):
    folder = tmp_path / 'sub-01' / 'func'
    folder.mkdir(parents=True)
    dead = folder / f'.x_boldmap.nii.gz.{io._HOST}-{_dead_pid()}.ab_12cd3.tmp'
    alive = folder / f'.x_boldmap.nii.gz.{io._HOST}-{os.getpid()}.ab_12cd3.tmp'
    elsewhere = folder / f'.x_boldmap.nii.gz.node7-{_dead_pid()}.ab_12cd3.tmp'
    mine = folder / '.my_notes.tmp'  # not ours: never touched
    for path in (dead, alive, elsewhere, mine):
        path.write_text('partial')
    assert io.remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (alive, elsewhere, mine))  # fmt: skip


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'table.tsv'
    target.write_text('old')
    names = []

    def interrupted_write() -> None:
        with io.replacing(target) as tmp:
            names.append(os.path.basename(tmp))
            Path(tmp).write_text('half')
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert io._TEMPORARY.match(names[0])
    assert target.read_text() == 'old'
    assert [p.name for p in tmp_path.iterdir()] == ['table.tsv']
