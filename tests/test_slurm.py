"""A one-node SLURM cluster (Debian's slurm-wlm with munge) on loopback, run through Nipype.

``make test-integration`` installs the packages. The cluster lives in a temporary folder: its
own munge key, socket and daemon, its own ``slurm.conf`` on unusual ports; nothing in ``/etc``
is used or changed. The daemons run as root, as they must, so the test is skipped elsewhere
(and fails in CI, where they must run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bids_syncact.demo import DemoSpec, make_dataset

from .test_faults import EXE, assert_same_outputs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FILE = REPO / 'examples' / 'slurm' / 'nipype-slurm.yml'
#: Two demo subjects, one layer: enough to send every kind of node through SLURM.
ARGS = ('--weights', 'none', '--layers', 'features.1', '--max-units', '8', '--alpha', '0.05',
        '--n-nulls', '0', '--skip-bids-validation', '--omp-nthreads', '1')  # fmt: skip
DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue')


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{why} in CI: make test-integration installs and runs SLURM as root')
        pytest.skip(why)


def _wait(predicate, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} within {timeout_s:g} s')
        time.sleep(0.2)


def _slurm_conf(root: Path, socket: Path) -> str:
    mem_mb = int(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**20 * 0.8)
    return '\n'.join([
        'ClusterName=syncacttest',
        'SlurmctldHost=localhost(127.0.0.1)',
        'SlurmUser=root', 'SlurmdUser=root',
        'AuthType=auth/munge', 'CredType=cred/munge', f'AuthInfo=socket={socket}',
        f'StateSaveLocation={root / "state"}', f'SlurmdSpoolDir={root / "spool"}',
        f'SlurmctldPidFile={root / "slurmctld.pid"}', f'SlurmdPidFile={root / "slurmd.pid"}',
        f'SlurmctldLogFile={root / "slurmctld.log"}', f'SlurmdLogFile={root / "slurmd.log"}',
        'SlurmctldPort=26817', 'SlurmdPort=26818',
        # no cgroups in a container: plain process tracking, no task binding or accounting
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none', 'MpiDefault=none',
        'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU_Memory',
        'ReturnToService=2',
        f'NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb}',
        'PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP',
    ]) + '\n'  # fmt: skip


@pytest.fixture(scope='module')
def slurm(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd; yield the environment that reaches them."""
    _need(all(shutil.which(d) for d in DAEMONS), 'SLURM (slurm-wlm, munge) is not installed')
    _need(os.geteuid() == 0, 'the SLURM daemons need root')
    root = tmp_path_factory.mktemp('slurm')
    for sub in ('state', 'spool', 'munge'):
        (root / sub).mkdir(mode=0o700)
    key, socket = root / 'munge' / 'munge.key', root / 'munge' / 'munge.socket'
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(['munged', '--force', f'--key-file={key}', f'--socket={socket}',
                    f'--pid-file={root / "munge" / "munged.pid"}',
                    f'--log-file={root / "munge" / "munged.log"}',
                    f'--seed-file={root / "munge" / "munged.seed"}'], check=True)  # fmt: skip
    conf = root / 'slurm.conf'
    conf.write_text(_slurm_conf(root, socket))
    env = {**os.environ, 'SLURM_CONF': str(conf)}
    try:
        subprocess.run(['slurmctld', '-f', str(conf)], check=True, env=env)
        subprocess.run(['slurmd', '-f', str(conf), '-N', 'localhost'], check=True, env=env)
        _wait(lambda: 'idle' in _sinfo(env), 'the node was not idle')
        yield env
    finally:
        subprocess.run(['scontrol', 'shutdown'], env=env, check=False, capture_output=True)
        for pid_file in (root / 'slurmd.pid', root / 'slurmctld.pid', root / 'munge/munged.pid'):
            if pid_file.exists():
                with_pid = int(pid_file.read_text().split()[0])
                subprocess.run(['kill', str(with_pid)], check=False, capture_output=True)


def _sinfo(env: dict[str, str]) -> str:
    return subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True, env=env,
                          check=False).stdout  # fmt: skip


def _run(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env,
                          check=False, timeout=1200)  # fmt: skip


def test_the_participant_level_through_slurm_equals_a_local_run(slurm, tmp_path):
    bids = make_dataset(tmp_path / 'bids', DemoSpec())
    common = ('--participant-label', '01', '02', *ARGS)
    local = _run(slurm, bids, tmp_path / 'local', 'participant', '-w', tmp_path / 'wl',
                 '--nprocs', '2', *common)  # fmt: skip
    assert local.returncode == 0, local.stderr
    # the shipped plugin file, with what this one small node can give each job
    plugin = yaml.safe_load(PLUGIN_FILE.read_text())
    assert plugin['plugin'] == 'SLURM'
    plugin['plugin_args']['sbatch_args'] = '--cpus-per-task=1 --mem=2G --time=00:20:00'
    plugin_file = tmp_path / 'slurm.yml'
    plugin_file.write_text(yaml.safe_dump(plugin))
    out, work = tmp_path / 'out', tmp_path / 'work'
    cluster = ('-w', work, '--nipype-plugin-file', plugin_file)
    features = _run(slurm, bids, out, 'participant', '--features-only', *cluster, *common)
    assert features.returncode == 0, features.stderr
    cached = sorted((out / 'features').glob('*.tsv'))
    assert cached
    jobs = {p.name for p in work.rglob('slurm-*.out')}
    assert jobs, 'no node ran as a SLURM job'
    participant = _run(slurm, bids, out, 'participant', *cluster, *common)
    assert participant.returncode == 0, participant.stderr
    assert sorted((out / 'features').glob('*.tsv')) == cached  # used, not made again
    assert {p.name for p in work.rglob('slurm-*.out')} > jobs  # the coupling ran there too
    assert_same_outputs(out, tmp_path / 'local')
