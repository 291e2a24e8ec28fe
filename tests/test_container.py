"""Container recipes and the Boutiques descriptor: linted, validated, in step with the parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
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
    assert 'From: localhost/bids-syncact:latest' in text
    assert '%post' not in text  # no second recipe to drift


def test_dockerfile_keeps_caches_outside_home_and_fetches_at_build():
    text = (ROOT / 'Dockerfile').read_text()
    for setting in ('TORCH_HOME=/opt/', 'TEMPLATEFLOW_HOME=/opt/', 'TEMPLATEFLOW_AUTOUPDATE=0',
                    'HOME=/tmp', 'PATH=/opt/venv/bin:$PATH', 'ARG TORCH_VARIANT=cpu',
                    'ARG FETCH_RESOURCES=1', 'ARG BASE_IMAGE=python:3.11-slim-bookworm',
                    '--torch "${TORCH_VARIANT}" --deps-only'):  # fmt: skip
        assert setting in text, setting
    assert 'VERSION' not in text.replace('image.version', '')  # the version is the package's
    # dependencies from pyproject.toml alone, before the source: a source change keeps torch;
    # the source is bind-mounted in the last stage, which scripts/image.sh finds by this line
    assert 'COPY . ' not in text
    assert text.index('--deps-only') < text.index('\nFROM deps\n') < text.index('source=.,')


def test_committed_descriptor_is_the_parser_s():
    committed = json.loads((ROOT / 'boutiques.json').read_text())
    assert committed == build_descriptor(), 'boutiques.json is stale: run make boutiques'
    assert committed['tool-version'] == __version__


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


def test_install_script_refuses_an_unknown_torch_variant():
    proc = _run('bash', ROOT / 'scripts' / 'install.sh', '--torch', 'rocm', '--python', 'true')
    assert proc.returncode == 64
    assert proc.stderr.strip() == 'install.sh: --torch rocm is not cpu, cuNNN or pypi'


def test_image_script_tag_and_refusals():
    script = ROOT / 'scripts' / 'image.sh'
    assert _run('bash', script, '--version').stdout == f'localhost/bids-syncact:{__version__}\n'
    proc = _run('bash', script, '--rebuild')
    assert proc.returncode == 64
    assert 'unknown argument --rebuild' in proc.stderr
    proc = _run('bash', script, env={**os.environ, 'ENGINE': 'buildah'})
    assert proc.returncode == 64
    assert proc.stderr.strip() == 'image.sh: ENGINE=buildah is neither docker nor podman'


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


# ---------------------------------------------------------------------------------------------
# The image, built by `make image`, run as a user would (make test-container; DESIGN.md 8).
IMAGE = 'localhost/bids-syncact'
#: Where the comparison's timings and differences go (make test-container prints it).
RECORD = ROOT / '.cache' / 'container-test.json'
#: Maps and tables agree within |container - pip| <= ATOL + RTOL * |pip|: the image may resolve
#: another torch build than the pip install (CPU kernels differ in the last bits of float32).
RTOL, ATOL = 1e-3, 1e-5
#: Compared: every file of both output trees but these (they hold run ids, paths, timings or
#: versions by design, or are locks).
NOT_COMPARED = ('*.html', '*.lock', 'logs/CITATION.md', 'sub-*/log/*/config.toml')
#: Sidecar keys left out: software versions, the container entry, and nothing else.
KEYS_LEFT_OUT = ('SoftwareVersions', 'ParticipantSoftwareVersions', 'Versions', 'Container')
#: The feature cache's hash covers the software versions: it differs when torch does.
HASH = re.compile(r'hash-[0-9a-f]{8}')


def _engine() -> list[str]:
    """The engine ``make image`` used: docker when ``docker info`` works, else podman."""
    if shutil.which('docker') and _run('docker', 'info').returncode == 0:
        return ['docker']
    if shutil.which('podman'):
        opts = os.environ.get('PODMAN_OPTS', '--storage-driver vfs --runtime runc').split()
        return ['podman', *opts]
    return []


def _unavailable(reason: str):
    if os.environ.get('CI') == 'true':
        pytest.fail(f'{reason} (CI=true: the container test must run)')
    pytest.skip(reason)


def _readme_commands() -> list[list[str]]:
    """The `docker run` commands of the README's Docker section, continuation lines joined."""
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('### Docker')[1].split('\n### ')[0]
    block = section.split('```sh\n')[1].split('```')[0].replace('\\\n', ' ')
    return [shlex.split(line) for line in block.splitlines() if line.startswith('docker run')]


@pytest.fixture(scope='module')
def engine():
    if os.geteuid() != 0:
        _unavailable('the container test needs root (podman as root, uid 1000 owns the outputs)')
    engine = _engine()
    if not engine:
        _unavailable('no container engine: docker info fails and podman is not installed')
    with pytest.MonkeyPatch.context() as patch:
        if 'CONTAINERS_CONF' not in os.environ:  # what make image gives podman
            patch.setenv('CONTAINERS_CONF', str(ROOT / 'scripts' / 'containers.conf'))
        inspect = _run(*engine, 'image', 'inspect', f'{IMAGE}:{__version__}', '--format',
                       '{{index .Config.Labels "org.opencontainers.image.version"}}')  # fmt: skip
        if inspect.returncode != 0:
            _unavailable(f'no image {IMAGE}:{__version__}: run make image')
        assert inspect.stdout.strip() == __version__
        yield engine


#: The source snapshot make image built from (scripts/image.sh): the pip reference runs it too,
#: so edits to the checkout while the test runs change neither side.
SNAPSHOT = ROOT / '.cache' / 'image-context'


def _same_source(engine: list[str]) -> None:
    label = _run(*engine, 'image', 'inspect', f'{IMAGE}:{__version__}', '--format',
                 '{{index .Config.Labels "org.bids-syncact.source"}}').stdout.strip()  # fmt: skip
    snapshot = _run('bash', ROOT / 'scripts' / 'image.sh', '--source-digest', cwd=ROOT)
    assert snapshot.returncode == 0, snapshot.stderr
    assert label == snapshot.stdout.strip(), (
        f'the image ({label}) was not built from {SNAPSHOT} ({snapshot.stdout.strip()}): '
        'rerun make test-container'
    )


@pytest.fixture(scope='module')
def runs(engine):
    """The demo at both levels, with the pip install and in the image, from the README."""
    top = Path(tempfile.mkdtemp(prefix='syncact-container-', dir='/var/tmp'))
    try:
        yield from _demo_runs(engine, top)
    finally:
        shutil.rmtree(top)


def _demo_runs(engine: list[str], top: Path):
    from bids_syncact.demo import DemoSpec, make_dataset

    top.chmod(0o755)
    demo = make_dataset(top / 'demo', DemoSpec())
    dirs = {}
    for name in ('pip', 'container'):
        for kind in ('out', 'work'):
            dirs[name, kind] = top / name / kind
            dirs[name, kind].mkdir(parents=True)
        if name == 'container':  # the image runs as uid 1000
            for path in (top / name, dirs[name, 'out'], dirs[name, 'work']):
                os.chown(path, 1000, 1000)
    _same_source(engine)
    # the pip install's dependencies and entry point, the image's source
    env = {**os.environ, 'PYTHONPATH': str(SNAPSHOT)}
    # from outside the checkout: python -c puts the working directory first on the path
    code = 'import bids_syncact; print(bids_syncact.__file__)'
    where = _run(BIN / 'python', '-c', code, env=env, cwd=top)
    assert Path(where.stdout.strip()).is_relative_to(SNAPSHOT), where.stdout + where.stderr
    commands = _readme_commands()
    assert len(commands) == 2, 'the README shows the participant and the group command'
    record, times = {}, {}
    for level, words in zip(('participant', 'group'), commands, strict=True):
        image_at = words.index(f'{IMAGE}:{__version__}')
        values = {'$DEMO': str(demo), '$OUT': str(dirs['container', 'out']),
                  '$WORK': str(dirs['container', 'work']), '$(id -u):$(id -g)': '1000:1000'}  # fmt: skip
        container = [_expand(w, values) for w in words]
        assert container[:2] == ['docker', 'run']
        assert level in container
        app_args = [_expand(w, values) for w in words[image_at + 1 :]]
        pip_args = [{'/out': str(dirs['pip', 'out']), '/work': str(dirs['pip', 'work'])}.get(a, a)
                    for a in app_args]  # fmt: skip
        for name, command in (('pip', [str(BIN / 'bids-syncact'), *pip_args]),
                              ('container', [*engine, *container[1:]])):  # fmt: skip
            start = time.monotonic()
            proc = _run(*command, env=env, cwd=top)
            times[f'{name}_{level}_s'] = round(time.monotonic() - start, 1)
            assert proc.returncode == 0, f'{name} {level}: {proc.stderr[-3000:]}'
    _same_source(engine)  # no make image while both ran
    record.update(times, pip_source=str(SNAPSHOT))
    for name in ('pip', 'container'):  # the torch each install resolved, from the feature cache
        (sidecar,) = dirs[name, 'out'].glob('features/*_desc-activations_timeseries.json')
        record[f'{name}_versions'] = json.loads(sidecar.read_text())['Settings']['Versions']
    yield {'top': top, 'demo': demo, 'engine': engine,
           'pip': dirs['pip', 'out'], 'container': dirs['container', 'out'], 'record': record}  # fmt: skip
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1) + '\n')


def _expand(word: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        word = word.replace(name, value)
    assert '$' not in word, f'unexpanded: {word}'
    return word


def _compared(out: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(p for p in out.rglob('*') if p.is_file()):
        rel = path.relative_to(out)
        if not any(rel.match(pattern) for pattern in NOT_COMPARED):
            files[HASH.sub('hash-*', str(rel))] = path
    return files


def _difference(pip: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference, and the largest in units of the tolerance (<= 1 passes)."""
    pip, box = np.asarray(pip, float), np.asarray(box, float)
    assert pip.shape == box.shape
    assert np.array_equal(np.isnan(pip), np.isnan(box))
    assert np.array_equal(np.isinf(pip), np.isinf(box))
    assert np.array_equal(pip[np.isinf(pip)], box[np.isinf(box)])
    finite = np.isfinite(pip)
    if not finite.any():
        return 0.0, 0.0
    diff = np.abs(pip[finite] - box[finite])
    return float(diff.max()), float((diff / (ATOL + RTOL * np.abs(pip[finite]))).max())


def _json_leaves(value, path=''):
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in KEYS_LEFT_OUT:
                yield from _json_leaves(item, f'{path}/{key}')
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_leaves(item, f'{path}[{i}]')
    else:
        yield path, HASH.sub('hash-*', value) if isinstance(value, str) else value


@pytest.mark.container
def test_version_and_help_inside_the_image(engine):
    base = [*engine, 'run', '--rm', '--network', 'none', '--read-only', '--tmpfs', '/tmp',
            '-u', '1000:1000']  # fmt: skip
    proc = _run(*base, f'{IMAGE}:latest', '--version')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f'bids-syncact {__version__}'
    # docker cannot unset an image's variable: an empty HOME is the nearest
    unset = ['--unsetenv', 'HOME'] if engine[0] == 'podman' else ['-e', 'HOME=']
    proc = _run(*base, *unset, f'{IMAGE}:{__version__}', '--help')
    assert proc.returncode == 0, proc.stderr
    assert 'Sync-ACT' in proc.stdout


def compare_trees(pip_out: Path, box_out: Path) -> dict:
    """Compare two output trees file by file; fail on any difference beyond the tolerance.

    Returns what was compared and, per file, the largest absolute difference and the largest in
    units of the tolerance.
    """
    pip, box = _compared(pip_out), _compared(box_out)
    assert sorted(pip) == sorted(box)
    kinds = {'.nii.gz': 0, '.tsv': 0, '.json': 0, 'bytes': 0}
    worst = {}
    for rel, path in pip.items():
        other = box[rel]
        if rel.endswith('.nii.gz'):
            a, b = nib.load(path), nib.load(other)
            assert np.allclose(a.affine, b.affine), rel
            assert a.shape == b.shape, rel
            worst[rel] = _difference(a.get_fdata(), b.get_fdata())
            kinds['.nii.gz'] += 1
        elif rel.endswith('.tsv'):
            a, b = (pd.read_csv(p, sep='\t', na_values=['n/a'], keep_default_na=False)
                    for p in (path, other))  # fmt: skip
            assert list(a.columns) == list(b.columns), rel
            assert len(a) == len(b), rel
            numeric = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])
                       and not pd.api.types.is_bool_dtype(a[c])]  # fmt: skip
            text = [c for c in a.columns if c not in numeric]
            assert a[text].equals(b[text]), f'{rel}: labels or names differ'
            worst[rel] = _difference(a[numeric].to_numpy(), b[numeric].to_numpy())
            kinds['.tsv'] += 1
        elif rel.endswith('.json'):
            a, b = (dict(_json_leaves(json.loads(p.read_text()))) for p in (path, other))
            assert sorted(a) == sorted(b), rel
            numbers = [k for k, v in a.items() if isinstance(v, float | int)
                       and not isinstance(v, bool)]  # fmt: skip
            assert {k: v for k, v in a.items() if k not in numbers} == {
                k: v for k, v in b.items() if k not in numbers
            }, rel  # fmt: skip
            worst[rel] = _difference([a[k] for k in numbers], [b[k] for k in numbers])
            kinds['.json'] += 1
        else:
            assert path.read_bytes() == other.read_bytes(), rel
            kinds['bytes'] += 1
    failing = {rel: w for rel, w in worst.items() if w[1] > 1}
    assert not failing, f'beyond |container - pip| <= {ATOL} + {RTOL} * |pip|: {failing}'
    return {
        'tolerance': f'|container - pip| <= {ATOL} + {RTOL} * |pip|',
        'files_compared': sorted(pip), 'files_not_compared': list(NOT_COMPARED),
        'sidecar_keys_left_out': list(KEYS_LEFT_OUT), 'counts': kinds,
        'max_abs_difference': {rel: w[0] for rel, w in worst.items()},
        'max_in_tolerance_units': {rel: w[1] for rel, w in worst.items()},
    }  # fmt: skip


def test_the_comparison_sees_a_difference_beyond_the_tolerance(tmp_path):
    """The check the container test rests on fails where it should (no container needed)."""
    pip, box = tmp_path / 'pip', tmp_path / 'box'
    stem = 'features/stim-1_cnn-a_layer-b_hash-0123abcd_desc-activations_timeseries'
    for out in (pip, box):
        (out / 'features').mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4),
                                 np.eye(4)), out / 'map.nii.gz')  # fmt: skip
        pd.DataFrame({'label': ['Visual', 'none'], 'p': [0.01, 0.5]}).to_csv(
            out / f'{stem}.tsv', sep='\t', index=False)  # fmt: skip
        (out / 'map.json').write_text(json.dumps({'Alpha': 0.05, 'Weights': {'File': '/w.pth'},
                                                  'SoftwareVersions': {'torch': str(out)}}))  # fmt: skip
        (out / 'x.html').write_text(str(out))  # not compared
    box.joinpath(f'{stem}.tsv').rename(box / f'{stem.replace("0123abcd", "89abcdef")}.tsv')
    assert compare_trees(pip, box)['counts'] == {'.nii.gz': 1, '.tsv': 1, '.json': 1, 'bytes': 0}
    data = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    data[1, 2, 3] *= 1 + 3 * RTOL
    nib.save(nib.Nifti1Image(data, np.eye(4)), box / 'map.nii.gz')
    with pytest.raises(AssertionError, match=r'map\.nii\.gz'):
        compare_trees(pip, box)
    data[1, 2, 3] = 1 + RTOL / 2
    nib.save(nib.Nifti1Image(data, np.eye(4)), box / 'map.nii.gz')
    compare_trees(pip, box)  # within the tolerance
    (box / 'map.json').write_text(json.dumps({'Alpha': 0.05, 'Weights': {'File': '/v.pth'}}))
    with pytest.raises(AssertionError, match=r'map\.json'):
        compare_trees(pip, box)


@pytest.mark.container
def test_image_and_pip_install_agree_on_the_demo(runs):
    found = compare_trees(runs['pip'], runs['container'])
    runs['record'].update(found)
    assert found['counts']['.nii.gz'] >= 2 * 3 + 2  # coef and z per demo subject, group maps
    assert found['counts']['.tsv'] >= 4 * 3 + 3  # sync x2, annotations, nulls; group tables


@pytest.mark.container
def test_image_run_is_stamped_with_the_package_version(runs):
    description = json.loads((runs['container'] / 'dataset_description.json').read_text())
    (generated,) = description['GeneratedBy']
    assert generated['Version'] == __version__
    assert generated['Container'] == {'Type': 'docker', 'Tag': f'{IMAGE}:{__version__}'}
    demo = runs['demo']
    assert description['DatasetLinks']['raw'] == demo.as_uri()  # mounted at the same path
