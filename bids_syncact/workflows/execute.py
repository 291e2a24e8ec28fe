"""Running a Nipype graph: the plugin, the work dir, and failures turned into one line."""

from __future__ import annotations

import getpass
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from nipype import config as nipype_config
from nipype import logging as nipype_logging
from nipype.pipeline import engine as pe
from nipype.pipeline import plugins as nipype_plugins
from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer, run_node

from bids_syncact import errors
from bids_syncact.config import Config

LOGGER = logging.getLogger('bids_syncact.execute')
_SUBJECT = re.compile(r'__sub([A-Za-z0-9]+)(?:-|$)')
#: The plugins that run nodes in a pool of local processes, sized by ``n_procs``.
_LOCAL_POOLS = ('MultiProc', 'LegacyMultiProc')
_TRACKER_WARNINGS = 'ignore::UserWarning:multiprocessing.resource_tracker'
#: The plugins that run nodes on this machine, without a queue.
_IN_PROCESS = (*_LOCAL_POOLS, 'Linear')
_ERROR_LINE = re.compile(r'^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$')


def run_workflow(workflow: pe.Workflow, config: Config) -> None:
    """Run ``workflow`` in the work dir (reruns resume from it) with its plugin.

    Unless ``--stop-on-first-crash``, a failing subject does not stop the others.

    Raises
    ------
    SyncActError
        Nodes failed. When only some subjects failed: exit 1, naming them and the first error.
        Otherwise the first failure's message with the exit code of its error class when it is
        one of ours (a corrupt movie stays exit 65), else exit 1. Crash files are named in the
        log.
    """
    plugin, args = plugin_settings(config)
    if plugin not in _IN_PROCESS:
        # Nipype's batch plugins (SLURM, SGE, ...) name jobs after $LOGNAME, unset in containers
        os.environ.setdefault('LOGNAME', _user())
    crash_dir = config.execution.work_dir / 'logs' / 'nipype'
    crash_dir.mkdir(parents=True, exist_ok=True)
    workflow.config['execution'] = {
        'crashdump_dir': str(crash_dir),
        'crashfile_format': 'txt',
        'remove_unnecessary_outputs': False,
        'stop_on_first_crash': config.execution.stop_on_first_crash,
        # a local pool answers at once; a cluster's queue is asked once per pending job
        'poll_sleep_duration': 0.2 if plugin in _IN_PROCESS else 2.0,
    }
    level = 'INFO' if config.execution.verbosity else 'WARNING'
    nipype_config.update_config({'logging': {
        'workflow_level': level, 'interface_level': level, 'utils_level': level,
        # Nipype's log file handler locks with filelock, which refuses locks inherited across
        # fork: a MultiProc worker logging a failure would die and leave the run hanging.
        'log_to_file': False,
    }})  # fmt: skip
    nipype_logging.update_logging(nipype_config)
    _route_nipype_logs(config.execution.verbosity)
    # A worker killed mid-node leaves its semaphores to multiprocessing's resource tracker,
    # which unlinks them and warns on stderr after an interrupt; the tracker takes its warning
    # filters from these options when it starts.
    if _TRACKER_WARNINGS not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_WARNINGS)
    if plugin == 'MultiProc' and args.get('mp_context') == 'forkserver':
        # workers fork from a server that imported torch once, unused
        multiprocessing.get_context('forkserver').set_forkserver_preload(
            ['bids_syncact.interfaces.stimulus']
        )
    before = set(crash_dir.glob('crash-*.txt'))
    runner = InterruptibleMultiProcPlugin(plugin_args=args) if plugin == 'MultiProc' else None
    try:
        workflow.run(plugin=runner or plugin, plugin_args=args)
    except KeyboardInterrupt:
        if runner is not None:
            runner.stop_workers()
        for partial in config.execution.work_dir.rglob('*.pklz.tmp'):  # Nipype's, cut short
            partial.unlink(missing_ok=True)
        raise
    except RuntimeError as err:
        nodes = [name.split('.')[-1] for name in workflow.list_node_names()]
        crashes = sorted(
            crash for crash in set(crash_dir.glob('crash-*.txt')) - before
            if any(f'-{node}-' in crash.name for node in nodes)
        )  # fmt: skip
        subjects = sorted({m.group(1) for m in map(_SUBJECT.search, nodes) if m})
        raise _failure(crashes, err, subjects, config.execution.stop_on_first_crash) from None


class InterruptibleMultiProcPlugin(MultiProcPlugin):
    """Nipype's MultiProc, whose workers leave Ctrl-C to the parent and stop when it says.

    A terminal's Ctrl-C reaches every process of the foreground group. Nipype's workers would
    each print a traceback, and the pool could hang; here they ignore SIGINT. The parent, on
    its ``KeyboardInterrupt``, calls :meth:`stop_workers`. A worker's first SIGTERM (from the
    parent, or from a cluster ending the job) raises ``SystemExit`` inside the node it runs,
    so the node unwinds (its temporary files removed, as after any error); later ones are
    ignored while it does, and the worker then ends instead of taking more work. A task whose
    worker died (SIGKILL, out of memory) fails like a crashed node instead of being waited for.
    """

    def __init__(self, plugin_args: dict[str, Any] | None = None) -> None:
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # Nipype's: no worker started yet
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors,
            initializer=_worker_initializer,
            initargs=(self._cwd,),
            mp_context=multiprocessing.get_context(self.plugin_args.get('mp_context')),
        )

    def _submit_job(self, node: Any, updatehash: bool = False) -> int:
        # Nipype's, with _run_node for run_node
        self._taskid += 1
        if getattr(node.interface, 'terminal_output', '') == 'stream':
            node.interface.terminal_output = 'allatonce'
        future = self.pool.submit(_run_node, node, updatehash, self._taskid)
        future.add_done_callback(self._async_callback)
        self._task_obj[self._taskid] = future
        return self._taskid

    def _async_callback(self, future: Any) -> None:
        try:
            super()._async_callback(future)
        except (KeyboardInterrupt, SystemExit):
            # a Ctrl-C can land here when the callback runs in the main thread (a future that
            # was done when it was added): it is the user's, not the task's
            raise
        except BaseException as err:  # noqa: BLE001 - the pool broke: the task failed
            taskid = next((t for t, f in self._task_obj.items() if f is future), None)
            if taskid is not None:
                self._taskresult[taskid] = {
                    'result': None, 'taskid': taskid,
                    'traceback': traceback.format_exception(err),
                }  # fmt: skip

    def stop_workers(self, timeout_s: float = 30.0) -> None:
        """Stop every worker (SIGTERM; SIGKILL after ``timeout_s``), then the pool.

        A second Ctrl-C while they stop is ignored: the stop is what it would ask for.
        """
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            workers = list((getattr(self.pool, '_processes', None) or {}).values())
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
            deadline = time.monotonic() + timeout_s
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    worker.kill()
                    worker.join()
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            signal.signal(signal.SIGINT, previous)


#: Set in a worker by its first SIGTERM: end after the node unwinds.
_STOPPING = False


def _worker_initializer(cwd: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _unwind)
    process_initializer(cwd)


def _unwind(signum: int, frame: object) -> None:
    """Raise ``SystemExit`` in what the worker runs, once; ignore later SIGTERMs."""
    global _STOPPING
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _STOPPING = True
    raise SystemExit(128 + signum)


def _run_node(node: Any, updatehash: bool, taskid: int) -> dict[str, Any]:
    """Nipype's ``run_node``; a worker told to stop ends once the node has unwound."""
    result = run_node(node, updatehash, taskid)
    if _STOPPING:  # Nipype caught the SystemExit: do not go back for more work
        os._exit(128 + signal.SIGTERM)
    return result


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (docker run -u)
        return str(os.getuid())


def plugin_settings(config: Config) -> tuple[str, dict[str, Any]]:
    """Return the Nipype plugin and its arguments.

    ``--nipype-plugin-file`` (YAML with ``plugin`` and ``plugin_args``, as fMRIPrep reads it)
    chooses any Nipype plugin, SLURM included; otherwise MultiProc, or Linear with one process.
    ``--nprocs`` and ``--mem-gb`` override the file's ``n_procs`` and ``memory_gb``.

    Raises
    ------
    UsageError
        When the plugin file cannot be read or names no plugin.
    """
    execution = config.execution
    if execution.nipype_plugin_file is not None:
        plugin, args = _read_plugin_file(execution.nipype_plugin_file)
    else:
        n_procs = execution.nprocs or os.cpu_count() or 1
        plugin, args = ('Linear', {}) if n_procs == 1 else ('MultiProc', {'n_procs': n_procs})
    if plugin in _LOCAL_POOLS:
        # forkserver: workers start clean, never forked from a process whose torch thread
        # pool (or CUDA context) is already running, which deadlocks or breaks the child. A
        # node asking for more threads or memory than the pool has runs alone, not never.
        args.setdefault('mp_context', 'forkserver')
        args.setdefault('raise_insufficient', False)
        if execution.nprocs:
            args['n_procs'] = execution.nprocs
        if execution.mem_gb:
            args['memory_gb'] = execution.mem_gb
    return plugin, args


def node_threads(config: Config) -> int:
    """Return the threads one node may use: ``--omp-nthreads``, at most the pool's processes.

    With a local pool (MultiProc, from the command line or a plugin file) a node never asks for
    more threads than the pool has, or the scheduler could never start it. Without
    ``--omp-nthreads``, one node may use the whole pool (Nipype's resource-aware scheduler
    then runs it alone); on a cluster plugin, the cores of this machine or ``--nprocs``.
    """
    execution = config.execution
    plugin, args = plugin_settings(config)
    pool = execution.nprocs or os.cpu_count() or 1
    if plugin in _LOCAL_POOLS:
        pool = int(args.get('n_procs') or os.cpu_count() or 1)
    return max(1, min(execution.omp_nthreads or pool, pool))


def _read_plugin_file(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        settings = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise errors.UsageError(f'--nipype-plugin-file {path}: cannot read it: {err}') from err
    if not isinstance(settings, dict) or not isinstance(settings.get('plugin'), str):
        raise errors.UsageError(
            f'--nipype-plugin-file {path}: give a mapping with "plugin: NAME" (e.g. MultiProc, '
            'SLURM) and optional "plugin_args: {...}"'
        )
    known = sorted(name[: -len('Plugin')] for name in dir(nipype_plugins)
                   if name.endswith('Plugin') and name != 'Plugin')  # fmt: skip
    if settings['plugin'] not in known:
        raise errors.UsageError(
            f'--nipype-plugin-file {path}: unknown Nipype plugin "{settings["plugin"]}"; '
            f'choose one of {", ".join(known)}'
        )
    args = settings.get('plugin_args') or {}
    if not isinstance(args, dict):
        raise errors.UsageError(f'--nipype-plugin-file {path}: plugin_args must be a mapping')
    return settings['plugin'], dict(args)


def _route_nipype_logs(verbosity: int) -> None:
    """Send Nipype's records to our handlers (the log file; stderr only with -v), not stdout.

    Nipype prints tracebacks of failed nodes on stdout: a refusal must stay one line.
    """
    nipype_logger = logging.getLogger('nipype')
    for handler in list(nipype_logger.handlers):
        nipype_logger.removeHandler(handler)
    for handler in logging.getLogger('bids_syncact').handlers:
        if handler.get_name() != 'stderr' or verbosity:
            nipype_logger.addHandler(handler)
    nipype_logger.propagate = False


def _failure(
    crashes: list[Path], err: BaseException, subjects: list[str], stopped: bool
) -> errors.SyncActError:
    """Return the refusal for failed nodes: which subjects failed, and the first error.

    When some subjects failed and the others went on (no ``--stop-on-first-crash``), the exit
    code is 1 (a processing failure) with the list. Otherwise (every subject failed, a shared
    node failed, or the run stopped at the first crash) it is the code of the first error's
    class when it is one of ours (a corrupt movie, bad input), else 1.
    """
    if not crashes:
        return errors.SyncActError(f'the workflow failed: {err}')
    for crash in crashes:
        LOGGER.info('Node failed, see %s', crash)
    matches = [_SUBJECT.search(crash.name) for crash in crashes]
    failed = sorted({m.group(1) for m in matches if m})
    shared = not all(matches)  # a node of no one subject (the features of a stimulus) failed
    kind, message = _last_error(crashes[0])
    message = errors.disk_advice(message)
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.SyncActError)):
        cls, message = errors.SyncActError, f'{kind}: {message}'
    more = f' (and {len(crashes) - 1} more)' if len(crashes) > 1 else ''
    where = f'crash files in {crashes[0].parent}'
    if failed and not shared and not stopped and len(failed) < len(subjects):
        return errors.SyncActError(
            f'{len(failed)} of {len(subjects)} subject(s) failed: '
            f'{", ".join("sub-" + s for s in failed)}; the others finished. First error: '
            f'{message}{more}; {where}'
        )
    if failed and not shared and len(failed) == len(subjects) > 1:
        message = (
            f'every subject failed ({", ".join("sub-" + s for s in failed)}); first: {message}'
        )
    return cls(f'{message}{more}; {where}')


def _last_error(crash: Path) -> tuple[str, str]:
    """Return the exception class name and message at the end of a Nipype crash file's traceback."""
    found = ('Error', crash.name)
    for line in crash.read_text(errors='replace').splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match:
            found = (match.group(1), match.group(2))
    return found
