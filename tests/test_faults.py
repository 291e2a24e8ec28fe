"""Faults of issue 9: SIGKILL and resume, two jobs at once, read-only input, full or read-only disk, Ctrl-C.

Each runs the installed ``bids-syncact`` in its own process group, as a cluster or a terminal
would, on the tiny dataset. Read-only and full disks are real mounts (a read-only bind mount, a
small tmpfs), so they need root, as in CI's container; elsewhere they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import assert_nothing_half_written
from .test_participant import FAST

pytestmark = pytest.mark.slow  # whole participant runs in subprocesses: make test-integration

EXE = str(Path(sys.executable).parent / 'bids-syncact')
#: Keys that say when a run happened and where its inputs were, not what it computed.
PROVENANCE_KEYS = {'RunId', 'DateTime', 'Date', 'Host', 'Duration', 'DatasetLinks',
                   'SourceDatasets'}  # fmt: skip
#: What differs between two runs by design: logs, reports and lock files.
NOT_COMPARED = ('log', 'logs')


def _command(bids: Path, out: Path, work: Path, *args: str) -> list[str]:
    return [EXE, str(bids), str(out), 'participant', '-w', str(work), *FAST,
            '--skip-bids-validation', '--nprocs', '2', *args]  # fmt: skip


def _start(command: list[str]) -> subprocess.Popen:
    # SIGINT at its default, as for a terminal's foreground job: a test session started in the
    # background of a script (`make ... &`) ignores SIGINT, and so would the run, for good
    # (an ignored signal stays ignored across exec; a caught one is reset to the default)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


def _run(command: list[str]) -> tuple[int, list[str]]:
    return _finish(_start(command))


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, 'the run ended before the fault could be injected'
        assert time.monotonic() < deadline, 'the run never reached the point of the fault'
        time.sleep(0.05)


def _wait_for_group_to_end(pgid: int, timeout_s: float = 10.0) -> None:
    """Wait until no process is left in the group (orphans are reaped by init, not at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, subprocess.run(
            ['ps', '-o', 'pid,stat,cmd', '-g', str(pgid)], capture_output=True, text=True,
            check=False).stdout  # fmt: skip
        time.sleep(0.2)


def outputs(out: Path, bids: Path | None = None) -> dict[str, object]:
    """Every output by path: arrays of maps, TSV text, JSON without provenance keys.

    Logs, reports (they name their run), lock files and .bidsignore are left out. Where
    ``bids`` is given, its path in the JSON reads ``BIDS_DIR``.
    """
    found: dict[str, object] = {}
    for path in sorted(p for p in out.rglob('*') if p.is_file()):
        rel = path.relative_to(out)
        if (
            rel.parts[0] in NOT_COMPARED
            or set(rel.parts) & {'log'}
            or rel.suffix in {'.html', '.lock', '.md'}
        ):
            continue
        if path.name.endswith('.nii.gz'):
            found[str(rel)] = np.asarray(nib.load(path).dataobj)
        elif rel.suffix == '.json':
            # the shared cache names the movie file that made it first, wherever it was
            ignored = PROVENANCE_KEYS | ({'Sources'} if rel.parts[0] == 'features' else set())
            text = path.read_text().replace(str(bids), 'BIDS_DIR') if bids else path.read_text()
            found[str(rel)] = {k: v for k, v in json.loads(text).items()
                               if k not in ignored}  # fmt: skip
        else:
            found[str(rel)] = path.read_text()
    return found


def assert_same_outputs(
    got: Path, expected: Path, bids: tuple[Path, Path] | tuple[()] = ()
) -> None:
    """Equal outputs; ``bids``: the input paths of the two runs, when they differ."""
    a, b = outputs(got, *bids[:1]), outputs(expected, *bids[1:])
    assert sorted(a) == sorted(b)
    assert any(name.endswith('_boldmap.nii.gz') for name in a)
    for name, value in b.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(a[name], value, err_msg=name)
        else:
            assert a[name] == value, name


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The tiny dataset and an uninterrupted run of it, once for the module."""
    from bids_syncact.demo import make_dataset

    from .conftest import TINY

    root = tmp_path_factory.mktemp('faults')
    bids = make_dataset(root / 'bids', TINY)
    code, err = _run(_command(bids, root / 'out', root / 'work'))
    assert code == 0, err
    return bids, root / 'out'


def test_a_run_killed_part_way_resumes_to_the_same_outputs(reference, tmp_path):
    bids, expected = reference
    out, work = tmp_path / 'out', tmp_path / 'work'
    proc = _start(_command(bids, out, work))
    # killed once the first subject's maps are being made, features and tables written
    _wait_for(lambda: any(work.rglob('couple_*/_report')) or any(out.rglob('*_boldmap.nii.gz')),
              proc)  # fmt: skip
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {p.parent.name for p in work.rglob('result_*.pklz')}
    assert done_before, 'nothing was done before the kill: the test did not test a resume'
    code, err = _run(_command(bids, out, work))
    assert code == 0, err
    done_after = {p.parent.name for p in work.rglob('result_*.pklz')}
    assert done_after > done_before, 'everything was done before the kill: nothing resumed'
    assert done_after == {p.parent.name for p in (expected.parent / 'work').rglob('result_*.pklz')}
    assert_same_outputs(out, expected)
    assert_nothing_half_written(out, work)


def test_two_jobs_at_once_share_the_cache_and_dataset_description(reference, tmp_path):
    bids, expected = reference
    out = tmp_path / 'out'
    procs = [_start(_command(bids, out, tmp_path / f'work{s}', '--participant-label', s))
             for s in ('01', '02')]  # fmt: skip
    results = [_finish(proc) for proc in procs]
    assert [code for code, _ in results] == [0, 0], results
    assert_same_outputs(out, expected)
    assert (
        json.loads((out / 'dataset_description.json').read_text())['DatasetType'] == 'derivative'
    )
    assert sorted(p.name for p in (out / 'features').glob('*.tsv')) == sorted(
        p.name for p in (expected / 'features').glob('*.tsv'))  # fmt: skip
    assert_nothing_half_written(out)


def test_ctrl_c_leaves_no_temporary_file(reference, tmp_path):
    bids, _ = reference
    out, work = tmp_path / 'out', tmp_path / 'work'
    proc = _start(_command(bids, out, work))
    _wait_for(lambda: any(work.rglob('denoise*/_report')), proc)
    disposition = _signal_masks(proc.pid)  # why, if the Ctrl-C is lost
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground group
    code, err = _finish(proc, timeout=60)
    assert code == 130, (err, disposition)
    assert err == ['bids-syncact: interrupted'], err  # one line: no worker's traceback
    _wait_for_group_to_end(proc.pid)  # no worker left behind
    assert_nothing_half_written(out, work)


def _signal_masks(pid: int) -> dict[str, bool]:
    """Whether SIGINT is ignored, blocked, caught or pending in a process (``/proc``)."""
    try:
        status = Path(f'/proc/{pid}/status').read_text().splitlines()
    except OSError:
        return {}
    bit = 1 << (signal.SIGINT - 1)
    fields = dict(line.split(':\t', 1) for line in status if ':\t' in line)
    return {name: bool(int(fields[key].strip(), 16) & bit)
            for name, key in (('ignored', 'SigIgn'), ('blocked', 'SigBlk'),
                              ('caught', 'SigCgt'), ('pending', 'ShdPnd'))
            if key in fields}  # fmt: skip


# --- mounts ------------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    proc = subprocess.run(['mount', *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'mount {" ".join(args)} failed in CI: {proc.stderr.strip()}')
        pytest.skip(f'cannot mount here ({proc.stderr.strip()}): run as root, as CI does')


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    _mount(*args, str(target))
    try:
        yield target
    finally:
        subprocess.run(['umount', '-l', str(target)], check=False)


def test_a_read_only_input_dataset_works(reference, tmp_path):
    bids, expected = reference
    with mounted(tmp_path / 'ro', '--bind', str(bids)) as ro:
        _mount('-o', 'remount,bind,ro', str(ro))
        with pytest.raises(OSError, match='Read-only'):
            (ro / 'probe').touch()
        code, err = _run(_command(ro, tmp_path / 'out', tmp_path / 'work'))
    assert code == 0, err
    assert_same_outputs(tmp_path / 'out', expected, (ro, bids))


def test_a_read_only_output_dir_is_one_line_before_any_work(reference, tmp_path):
    bids, _ = reference
    with mounted(tmp_path / 'out', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs') as out:
        code, err = _run(_command(bids, out, tmp_path / 'work'))
        assert not list(out.iterdir())
    assert code == 64, err
    assert len(err) == 1, err
    assert err[0].startswith('bids-syncact: error: cannot write OUTPUT_DIR'), err
    assert 'Read-only file system' in err[0]


def test_a_full_disk_is_one_line_and_leaves_whole_files(reference, tmp_path):
    bids, expected = reference
    with mounted(tmp_path / 'out', '-t', 'tmpfs', '-o', 'size=160k', 'tmpfs') as out:
        code, err = _run(_command(bids, out, tmp_path / 'work'))
        assert code == 1, err
        err = [line for line in err if 'WARNING' not in line]  # RANDOM weights, of the tests
        assert len(err) == 1, err
        assert 'No space left on device' in err[0], err
        assert 'free space there' in err[0], err
        assert 'Traceback' not in err[0]
        assert_nothing_half_written(out)
        written = outputs(out)
    whole = outputs(expected)
    for name, value in written.items():  # what was written is what a full run writes
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, whole[name], err_msg=name)
