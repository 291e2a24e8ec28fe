"""Container recipes and the Boutiques descriptor: linted, validated, in step with the parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bids_syncact import __version__
from bids_syncact.cli.boutiques import VERBOSITY_CHOICES, build_descriptor
from bids_syncact.cli.parser import build_parser

from .conftest import TINY, tree_state

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: A valid value for inputs whose type alone does not say what the parser accepts.
EXAMPLES = {
    'participant_label': ['01'], 'session_label': ['pre'], 'task_id': ['movie'],
    'derivatives': ['fmriprep=/d'], 'stimulus': ['movie=/m.mp4'], 'stimulus_onset': '2.5',
    'frame_rate': '4', 'alpha': 'auto', 'max_units': 'all', 'cnn_accuracy': ['net=70.5'],
    'layers': ['alexnet:features.1'], 'weights': ['alexnet=DEFAULT'], 'cnn': ['alexnet'],
    'high_pass': '0.01', 'smoothing_fwhm': '6', 'mem_gb': '8', 'res': '2', 'space': 'T1w',
    'reference_networks': 'seitzman2018', 'verbosity': '-vv', 'unit_correlation': '1',
    'n_nulls': '99',
}  # fmt: skip


def _run(*args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False,
                          **kwargs)  # fmt: skip


def test_hadolint_passes_on_the_dockerfile():
    proc = _run(BIN / 'hadolint', ROOT / 'Dockerfile')
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_singularity_recipe_bootstraps_from_the_docker_image():
    text = (ROOT / 'singularity.def').read_text()
    assert 'Bootstrap: docker-daemon' in text
    assert 'From: bids-syncact:latest' in text
    assert '%post' not in text  # no second recipe to drift


def test_dockerfile_keeps_caches_outside_home_and_fetches_at_build():
    text = (ROOT / 'Dockerfile').read_text()
    for setting in ('TORCH_HOME=/opt/', 'TEMPLATEFLOW_HOME=/opt/', 'TEMPLATEFLOW_AUTOUPDATE=0',
                    'HOME=/tmp', 'SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}"',
                    'scripts/install.sh --torch "${TORCH_VARIANT}"', 'ARG TORCH_VARIANT=cpu'):  # fmt: skip
        assert setting in text, setting


def test_committed_descriptor_is_the_parser_s():
    committed = json.loads((ROOT / 'boutiques.json').read_text())
    fresh = build_descriptor()
    for key in ('tool-version', 'container-image'):  # the image writes its own, versioned
        committed.pop(key)
        fresh.pop(key)
    assert committed == fresh, 'boutiques.json is stale: run make boutiques'


def test_descriptor_inputs_match_the_parser():
    descriptor = build_descriptor()
    by_dest = {i['id']: i for i in descriptor['inputs']}
    positional = {'output_dir': 'output_dir_name'}
    for action in build_parser()._actions:
        if action.dest in ('help', 'version'):
            continue
        entry = by_dest.pop(positional.get(action.dest, action.dest))
        if action.option_strings and action.dest != 'verbosity':
            assert entry['command-line-flag'] in action.option_strings
            assert entry.get('list', False) == (action.nargs == '+')
            assert (entry['type'] == 'Flag') == (action.nargs == 0)
        if action.choices:
            assert entry['value-choices'] == list(action.choices)
    assert set(by_dest) == {'participant_level_analysis_dir'}  # the group level's OUTPUT_DIR


def test_bosh_validate_bids():
    proc = _run(BIN / 'bosh', 'validate', '--bids', ROOT / 'boutiques.json')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'BIDS validation OK' in proc.stdout + proc.stderr


def test_bosh_simulate_gives_a_command_the_parser_accepts(tmp_path):
    descriptor = json.loads((ROOT / 'boutiques.json').read_text())
    invocation = {'bids_dir': '/data', 'output_dir_name': '/out', 'analysis_level': 'participant'}
    for entry in descriptor['inputs'][4:]:
        value = EXAMPLES.get(entry['id'])
        if value is None:
            value = {'Flag': True, 'Number': 3, 'File': '/f', 'String': 'x'}[entry['type']]
            value = entry.get('value-choices', [value])[-1]
            value = [value] if entry.get('list') else value
        invocation[entry['id']] = value
    path = tmp_path / 'invocation.json'
    path.write_text(json.dumps(invocation))
    proc = _run(BIN / 'bosh', 'exec', 'simulate', ROOT / 'boutiques.json', '-i', path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command = proc.stdout.strip().splitlines()[-1]
    mkdir, _, call = command.partition('; ')
    assert mkdir == 'mkdir -p /out'
    words = call.split()
    assert words[0] == 'bids-syncact'
    namespace = build_parser().parse_args(words[1:])
    for entry in descriptor['inputs'][4:]:  # every option reached the parser
        assert getattr(namespace, entry['id']) not in (None, False), entry['id']
    assert namespace.verbosity == 2


def test_versions_agree(cli, dataset, tmp_path, plan_of):
    proc = _run(BIN / 'bids-syncact', '--version')  # the installed entry point
    assert proc.stdout.strip() == f'bids-syncact {__version__}'
    made = _run(sys.executable, '-m', 'bids_syncact.cli.boutiques')  # what the image writes
    assert json.loads(made.stdout)['tool-version'] == __version__
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    assert plan_of()['GeneratedBy']['Version'] == __version__
    assert VERBOSITY_CHOICES[1] == '-vv'


def test_install_script_refuses_unknown_options():
    proc = _run('bash', ROOT / 'scripts' / 'install.sh', '--no-such-thing')
    assert proc.returncode == 64
    assert 'unknown option --no-such-thing' in proc.stderr


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """Run ``command`` with ``folder`` bind-mounted read-only (a user namespace: root too)."""
    unshare = ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c']
    probe = 'mount --bind -o ro "$1" "$1" && ! touch "$1/.probe" 2>/dev/null'
    if shutil.which('unshare') is None or subprocess.run(
        [*unshare, probe, 'sh', str(folder)], capture_output=True, check=False
    ).returncode != 0:  # fmt: skip
        if os.environ.get('CI') == 'true':
            pytest.fail('cannot bind-mount read-only in a user namespace (unshare) on CI')
        pytest.skip('unshare cannot bind-mount read-only here')
    run = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return [*unshare, run, 'sh', str(folder), *command]


@pytest.mark.slow  # a whole participant run: make test-integration
def test_cli_runs_under_container_constraints(_tiny_template):  # noqa: PT019
    """HOME not writable, TMPDIR and MPLCONFIGDIR set, the input read-only, umask 027."""
    top = Path(tempfile.mkdtemp(prefix='syncact-ro-'))
    try:
        top.chmod(0o755)
        dataset = top / 'bids'
        shutil.copytree(_tiny_template, dataset)
        for path in [dataset, *dataset.rglob('*')]:
            path.chmod(path.stat().st_mode & ~0o222)
        writable = top / 'rw'
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        (writable / 'tmp').mkdir(mode=0o777)
        (writable / 'tmp').chmod(0o777)
        env = {**os.environ, 'HOME': '/nonexistent', 'TMPDIR': str(writable / 'tmp'),
               'MPLCONFIGDIR': str(writable / 'tmp' / 'mpl')}  # fmt: skip
        before = tree_state(dataset)
        command = _read_only(dataset, [str(BIN / 'bids-syncact'), str(dataset),
                                       str(writable / 'out'), 'participant', '-w',
                                       str(writable / 'work'), '--weights', 'none', '--layers',
                                       'features.1', '--max-units', '4', '--confounds-strategy',
                                       'none', '--alpha', '0.05', '--n-nulls', '0'])  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                              preexec_fn=lambda: os.umask(0o027))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads((writable / 'work' / 'plan.json').read_text())['Runs']
        synced = list((writable / 'out').glob('sub-*/func/*_desc-sync_timeseries.tsv'))
        assert len(synced) == len(TINY.subjects) * len(TINY.runs)  # features and sync ran too
        assert tree_state(dataset) == before
        assert not Path('/nonexistent').exists()
    finally:
        for path in [top, *top.rglob('*')]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(top)


@pytest.mark.integration
def test_install_script_offline_mode():
    """What CI runs: the install steps of the image, with resources resolved, not fetched."""
    proc = _run('bash', ROOT / 'scripts' / 'install.sh', '--offline', '--editable', '--python',
                sys.executable)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'weights alexnet: AlexNet_Weights.' in proc.stdout
    assert 'atlas=Schaefer2018' in proc.stdout
    assert f'bids-syncact {__version__.split("+")[0]}' in proc.stdout


def test_caches_go_to_the_work_dir_when_home_is_not_writable(cli, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv('MPLCONFIGDIR', '/proc/not-writable')
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    seen = {}

    from bids_syncact.workflows import participant

    real = participant.discover

    def spy(*args, **kwargs):
        seen.update({k: os.environ.get(k) for k in ('MPLCONFIGDIR', 'XDG_CACHE_HOME')})
        return real(*args, **kwargs)

    monkeypatch.setattr(participant, 'discover', spy)
    assert cli(dataset, tmp_path / 'out', 'participant').code == 0
    work = tmp_path / 'work' / '.cache'
    assert seen == {'MPLCONFIGDIR': str(work / 'mplconfigdir'),
                    'XDG_CACHE_HOME': str(work / 'xdg_cache_home')}  # fmt: skip
