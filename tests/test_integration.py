"""Tests that need system packages; run by ``make test-integration`` (which installs them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration


def _npm_validator() -> str:
    found = shutil.which('bids-validator')
    if found is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('bids-validator (npm) is not on PATH: make test-integration installs it')
        pytest.skip('bids-validator (npm) not installed: run make test-integration')
    return found


def test_synthetic_movie_dataset_passes_the_npm_bids_validator(dataset):
    """The layout the tests and the demo are built on is valid BIDS for the legacy validator too."""
    proc = subprocess.run(
        [_npm_validator(), str(dataset), '--json'], capture_output=True, text=True, check=False
    )
    report = json.loads(proc.stdout)
    assert report['issues']['errors'] == [], report['issues']['errors']
    assert proc.returncode == 0
    summary = report['summary']
    assert summary['subjects'] == ['01', '02']
    assert summary['tasks'] == ['movie']


def test_the_npm_validator_catches_what_we_break(dataset):
    """The check above can fail: an empty BOLD file is an error."""
    (dataset / 'sub-01' / 'func' / 'sub-01_task-movie_run-1_bold.nii.gz').write_bytes(b'')
    proc = subprocess.run(
        [_npm_validator(), str(dataset), '--json'], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert json.loads(proc.stdout)['issues']['errors']


@pytest.fixture(scope='module')
def demo_dataset(tmp_path_factory):
    from bids_syncact.demo import make_dataset

    return make_dataset(tmp_path_factory.mktemp('demo') / 'demo')


@pytest.mark.slow
def test_the_demo_raw_dataset_passes_the_npm_bids_validator(demo_dataset):
    """The demo at its real size (3 subjects, 2 runs, 300 volumes, planted truth)."""
    proc = subprocess.run(
        [_npm_validator(), str(demo_dataset), '--json'], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert report['issues']['errors'] == [], report['issues']['errors']
    assert report['summary']['subjects'] == ['01', '02', '03']
    truth = json.loads((demo_dataset / 'sourcedata' / 'groundtruth' / 'truth.json').read_text())
    assert truth['MaxAbsCorrelation'] >= 0.5  # a collinear pair of planted units
    assert max(truth['VarianceInflation']) < 5  # yet every planted map is identifiable
