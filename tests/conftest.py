"""Shared fixtures: seeded randomness, synthetic movie datasets, an in-process CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_syncact.bids.derivatives import sidecar_path
from bids_syncact.cli.run import main
from bids_syncact.demo import DemoSpec, make_dataset

SHARED_EXAMPLES = Path(__file__).resolve().parents[2] / 'shared' / 'bids-examples'
#: Small enough for seconds per test, with unequal grid sides (nilearn's habit).
TINY = DemoSpec(subjects=('01', '02'), runs=(1, 2), n_vols=20, shape=(7, 8, 9), n_dummies=2,
                onset_s=2.0, movie_fps=4, movie_size=(32, 24), natural_movie=False,
                planted=False)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason='needs CUDA (torch.cuda.is_available() is false)')
        for item in items:
            if 'gpu' in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope='session')
def _tiny_template(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('template') / 'bids', TINY)


@pytest.fixture
def dataset(_tiny_template, tmp_path):
    """A fresh copy of the tiny movie dataset (raw + derivatives/fmriprep) for this test."""
    root = tmp_path / 'bids'
    shutil.copytree(_tiny_template, root, symlinks=True)
    return root


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys, tmp_path):
    """Run ``bids-syncact`` in-process; returns code, stdout and stderr.

    By default the participant level stops after writing the plan (discovery tests); pass
    ``process=True`` to compute features and synchronized activations as well.
    """

    def run(*argv: str | Path, validate: bool = False, process: bool = False) -> Result:
        args = [str(a) for a in argv]
        if '-w' not in args and '--work-dir' not in args:
            args += ['-w', str(tmp_path / 'work')]
        if not validate:
            args.append('--skip-bids-validation')
        capsys.readouterr()
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.dict(os.environ))  # main() may point caches there
            if not process:
                stack.enter_context(mock.patch(
                    'bids_syncact.workflows.participant.process_runs', return_value=0
                ))  # fmt: skip
            code = main(args)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def plan_of(tmp_path):
    def read(work: Path | None = None) -> dict:
        return json.loads(((work or tmp_path / 'work') / 'plan.json').read_text())

    return read


def assert_refused(result: Result, code: int, *fragments: str) -> None:
    """One line on stderr, the documented code, no traceback, the fragments in the message."""
    assert result.code == code, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    assert 'Traceback' not in result.err
    line = result.err_lines[0]
    assert line.startswith('bids-syncact: error: '), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def assert_nothing_half_written(*roots: Path) -> None:
    """No temporary file under any root; every data file of a subject whole and with its sidecar.

    The first root is OUTPUT_DIR: its NIfTI and TSV files must read, JSON parse. Whole outputs
    of steps a refusal did not stop may stay: each is complete and a rerun reuses it.
    """
    for root in (r for r in roots if r.exists()):
        files = [p for p in root.rglob('*') if p.is_file()]
        assert not [p for p in files if p.name.endswith('.tmp')], root
        assert not [p for p in files if p.name.endswith('_raw.npy')], root
    for path in (p for p in roots[0].rglob('sub-*/**/*') if p.is_file()):
        if path.name.endswith('.nii.gz'):
            nib.load(path).get_fdata()
            assert sidecar_path(path).exists(), path
        elif path.suffix == '.tsv':
            pd.read_csv(path, sep='\t')
            assert sidecar_path(path).exists(), path
        elif path.suffix == '.json':
            json.loads(path.read_text())


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every path under root (symlinks not followed)."""
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob('*'))
    }


#: The reports tests: a whole run of both levels, shared by the report and browser tests.
REPORT_ARGS = ('--skip-bids-validation', '--weights', 'none', '--layers', 'features.1',
               'features.4', '--max-units', '4', '--confounds-strategy', 'none', '--alpha', '0.05',
               '--n-nulls', '20',
               '--reference-networks', 'seitzman2018')  # fmt: skip


@pytest.fixture(scope='session')
def both_levels(tmp_path_factory):
    """Three tiny subjects through both levels, 20 nulls; the movie ends before the runs do."""
    root = tmp_path_factory.mktemp('reports')
    bids = make_dataset(root / 'bids', replace(TINY, subjects=('01', '02', '03'), n_vols=140,
                                               movie_s=100.0))  # fmt: skip
    out, work = root / 'out', root / 'work'
    assert main([str(bids), str(out), 'participant', '-w', str(work), *REPORT_ARGS]) == 0
    assert main([str(bids), str(out), 'group', '-w', str(work), '--reference-networks',
                 'seitzman2018']) == 0  # fmt: skip
    return bids, out, work
