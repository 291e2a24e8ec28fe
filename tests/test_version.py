"""One release version everywhere (DESIGN.md section 7): package, --version, descriptor, image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from bids_syncact import __version__

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False,
                          **kwargs)  # fmt: skip


def test_the_version_is_a_release_an_image_tag_can_hold():
    assert re.fullmatch(r'\d+\.\d+\.\d+((a|b|rc)\d+)?', __version__), __version__
    assert version('bids-syncact') == __version__  # the installed metadata: make install again


def test_a_fresh_clone_says_one_version_everywhere(tmp_path):
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        pytest.skip('needs git and the repository')
    clone = tmp_path / 'clone'
    proc = _run('git', 'clone', '--quiet', '--no-hardlinks', ROOT, clone)
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, 'PYTHONPATH': str(clone)}
    imported = _run(sys.executable, '-c', 'import bids_syncact; print(bids_syncact.__file__, '
                    'bids_syncact.__version__)', cwd=clone, env=env)  # fmt: skip
    where, committed = imported.stdout.split()
    assert Path(where).is_relative_to(clone)  # the clone's package, not the installed one
    cli = _run(sys.executable, '-m', 'bids_syncact.cli.run', '--version', cwd=clone, env=env)
    assert cli.stdout.strip() == f'bids-syncact {committed}'
    descriptor = json.loads((clone / 'boutiques.json').read_text())
    assert descriptor['tool-version'] == committed
    assert descriptor['container-image']['image'] == f'localhost/bids-syncact:{committed}'
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
    pyproject = tomllib.loads((clone / 'pyproject.toml').read_text())
    assert pyproject['project']['dynamic'] == ['version']
    assert pyproject['tool']['hatch']['version'] == {'path': 'bids_syncact/_version.py'}
    assert 'hatch-vcs' not in str(pyproject['build-system'])
    tag = _run('bash', clone / 'scripts' / 'image.sh', '--version', cwd=clone)
    assert tag.stdout.strip() == f'localhost/bids-syncact:{committed}', tag.stderr
    readme = (clone / 'README.md').read_text()
    assert set(re.findall(r'localhost/bids-syncact:([\w.]+)', readme)) == {committed, 'latest'}
    assert committed == __version__, 'the working tree changed the version: commit it'
