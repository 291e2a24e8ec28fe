"""The installed package: entry points, layering, the README's promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ('name', 'target'),
    [
        ('bids-syncact', 'bids_syncact.cli.run:main'),
        ('bids-syncact-demo', 'bids_syncact.demo:main'),
    ],
)
def test_console_scripts_are_installed_and_load(name, target):
    (script,) = [ep for ep in entry_points(group='console_scripts') if ep.name == name]
    assert script.value == target
    assert callable(script.load())


def test_installed_script_runs_in_a_container_like_environment(tmp_path):
    """HOME not writable, TMPDIR and MPLCONFIGDIR set, a restrictive umask."""
    script = Path(sys.executable).with_name('bids-syncact')
    env = {
        **os.environ,
        'HOME': '/nonexistent',
        'TMPDIR': str(tmp_path),
        'MPLCONFIGDIR': str(tmp_path / 'mpl'),
    }
    proc = subprocess.run(
        [str(script), '--help'], capture_output=True, text=True, env=env, check=False,
        preexec_fn=lambda: os.umask(0o077),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert 'Sync-ACT' in proc.stdout
    assert proc.stderr == ''


def test_core_does_not_import_nipype_or_pybids():
    proc = subprocess.run(
        [str(Path(sys.executable).with_name('lint-imports')), '--no-cache'],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'KEPT' in proc.stdout


def test_readme_quick_start_targets_exist():
    readme = (ROOT / 'README.md').read_text()
    quick = readme.split('## Quick start')[1].split('\n## ')[0]
    assert re.findall(r'^make (\w+)', quick, re.MULTILINE) == ['demo', 'test']
    makefile = (ROOT / 'Makefile').read_text()
    for target in ('demo', 'test', 'test-integration', 'lint'):
        assert re.search(rf'^{target}:', makefile, re.MULTILINE), target
