"""``bids-syncact``: ``main(argv) -> exit code``.

Parses the command line, builds the one frozen :class:`~bids_syncact.config.Config`, checks the
locations, then runs the requested level. Every refusal is one line on stderr with its exit code
(:mod:`bids_syncact.errors`); tracebacks go to the log in the work dir, never to the terminal.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bids_syncact import __version__
from bids_syncact.bids.io import remove_stale_temporaries
from bids_syncact.cli.parser import (
    ANALYSIS_LEVELS,
    SyncActArgumentParser,
    build_parser,
    refuse_unbuilt_options,
)
from bids_syncact.config import (
    CNNConfig,
    Config,
    CouplingConfig,
    ExecutionConfig,
    InputConfig,
    StimulusConfig,
)
from bids_syncact.core.presets import check_cnn
from bids_syncact.errors import (
    DISK_ERRORS,
    AnalysisLevelError,
    ExitCode,
    MissingInputError,
    SyncActError,
    UsageError,
    disk_error_message,
)

LOGGER = logging.getLogger('bids_syncact')
PROG = 'bids-syncact'
#: Cache folders of libraries (matplotlib, XDG users such as fontconfig and TemplateFlow's
#: downloads) that must not land in an unwritable or shared HOME.
CACHE_VARIABLES = ('MPLCONFIGDIR', 'XDG_CACHE_HOME')
#: Marks a folder as a bids-syncact work dir: --clean-workdir only ever empties such a folder.
WORKDIR_MARKER = '.bids-syncact-workdir'


def main(argv: list[str] | None = None) -> int:
    """Run ``bids-syncact`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        namespace = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # --help, --version, and argparse errors (64)
        return int(stop.code or 0)
    _log_to_stderr(namespace.verbosity or 0)
    config = None
    try:
        config = build_config(namespace, parser)
        return run(config)
    except SyncActError as err:
        LOGGER.debug('Refused', exc_info=True)
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            return _crashed(config, err)
        LOGGER.info('Cannot write', exc_info=True)
        print(f'{PROG}: error: {disk_error_message(err)}', file=sys.stderr)
        return int(ExitCode.PROCESSING_FAILED)
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, no traceback
        return _crashed(config, err)


def _crashed(config: Config | None, err: Exception) -> int:
    where = _crash_report(config, err)
    summary = ' '.join(str(err).split())[:300]
    print(
        f'{PROG}: processing failed ({type(err).__name__}: {summary}); the traceback is in '
        f'{where}: please report it with that file',
        file=sys.stderr,
    )
    return int(ExitCode.PROCESSING_FAILED)


def build_config(namespace: argparse.Namespace, parser: SyncActArgumentParser) -> Config:
    """Check the parsed command line and freeze it into a :class:`Config`.

    Raises
    ------
    AnalysisLevelError
        The analysis level is not participant or group (exit 17).
    UsageError
        Options that contradict each other, or whose stage is not built yet (exit 64).
    """
    ns = namespace
    if ns.analysis_level not in ANALYSIS_LEVELS:
        raise AnalysisLevelError(
            f'unknown analysis level {ns.analysis_level!r}: use participant or group'
        )
    refuse_unbuilt_options(parser, ns)
    refuse_other_level_options(ns)
    if ns.stimulus and ns.stimulus_map:
        raise UsageError(
            '--stimulus and --stimulus-map both say which movie a run showed: give one (a map '
            'row with only task and path covers every run of a task)'
        )
    if ns.stimulus_onset is not None and not ns.stimulus:
        raise UsageError('--stimulus-onset needs --stimulus (the map has its own onset column)')
    strategy = ns.confounds_strategy or CouplingConfig().confounds_strategy
    if ns.high_pass is not None and strategy != 'none':
        raise UsageError(
            f'--high-pass with --confounds-strategy {strategy} would '
            "filter twice (the strategy has fMRIPrep's cosine regressors): drop --high-pass, or "
            'use --confounds-strategy none'
        )
    for cnn in ns.cnn or ():
        check_cnn(cnn)
    bids_dir = _absolute(ns.bids_dir)
    output_dir = _absolute(ns.output_dir)
    derivatives = dict(ns.derivatives or [])
    if len(ns.derivatives or []) > len(derivatives):
        raise UsageError('-d/--derivatives names fMRIPrep twice: give one fMRIPrep folder')
    stimulus_tasks = [task for task, _ in ns.stimulus or []]
    if len(set(stimulus_tasks)) < len(stimulus_tasks):
        raise UsageError(
            '--stimulus gives two movies for the same task: one movie per task (use '
            '--stimulus-map for per-run movies)'
        )
    fmriprep_dir = _absolute(derivatives.get('fmriprep', bids_dir / 'derivatives' / 'fmriprep'))
    work_dir = _absolute(ns.work_dir or Path('work'))
    filters = {}
    if ns.bids_filter_file is not None:
        from bids_syncact.bids.discovery import read_bids_filters  # pybids: imported on demand

        filters = read_bids_filters(ns.bids_filter_file)

    # the group level takes every CNN it finds unless --cnn selects some
    every_cnn = {'cnn': ()} if ns.analysis_level == 'group' and not ns.cnn else {}
    return Config(
        analysis_level=ns.analysis_level,
        output_dir=output_dir,
        inputs=InputConfig(**_given(ns, InputConfig, {
            'participant_label': _unique, 'session_label': _unique, 'task_id': _unique,
            'bids_database_dir': _absolute,
        }, bids_dir=bids_dir, fmriprep_dir=fmriprep_dir, bids_filters=filters)),
        stimulus=StimulusConfig(**_given(ns, StimulusConfig, {
            'stimulus_map': _absolute,
            'stimulus': lambda pairs: tuple((task, _absolute(path)) for task, path in pairs),
        })),
        cnn=CNNConfig(**_given(ns, CNNConfig, {
            'cnn': _unique, 'layers': tuple, 'weights': tuple, 'cnn_accuracy': dict,
            'max_units': lambda value: None if value == 'all' else value,
        }, **every_cnn)),
        coupling=CouplingConfig(**_given(ns, CouplingConfig, {
            'alpha': lambda value: None if value == 'auto' else value,
            'reference_networks': _reference_networks,
        })),
        execution=ExecutionConfig(**_given(ns, ExecutionConfig, {}, work_dir=work_dir)),
    )  # fmt: skip


#: Options that only the participant level uses: refused at the group level, never ignored.
PARTICIPANT_ONLY = (
    'bids_filter_file', 'derivatives', 'bids_database_dir', 'stimulus_map', 'stimulus',
    'stimulus_onset', 'dummy_scans', 'frame_rate', 'frame_fit', 'hrf', 'weights', 'max_units',
    'unit_correlation',
    'features_only', 'confounds_strategy', 'high_pass', 'smoothing_fwhm', 'alpha', 'n_nulls',
    'device', 'nprocs', 'omp_nthreads', 'mem_gb', 'nipype_plugin_file', 'stop_on_first_crash',
)  # fmt: skip
#: Options that only the group level uses.
GROUP_ONLY = ('cnn_accuracy',)
#: What ``--reports-only`` takes (with the positional arguments).
REPORTS_ONLY_OPTIONS = (
    'bids_dir', 'output_dir', 'analysis_level', 'reports_only', 'participant_label', 'work_dir',
    'verbosity', 'skip_bids_validation',
)  # fmt: skip


def _given_value(value: object) -> bool:
    """Whether an option was given: not None, and not a store_const flag left False (a 0 is)."""
    return value is not None and value is not False


def refuse_other_level_options(ns: argparse.Namespace) -> None:
    """Refuse (exit 64) an option the chosen analysis level would not use.

    The group level reads what the participant level wrote: its settings are in the sidecars,
    and the group level refuses subjects whose settings differ. ``--reports-only`` reads the
    outputs as they are and takes no selection or setting.
    """
    if ns.reports_only:
        # the reports are made from the outputs alone: a selection or setting would be ignored
        allowed = set(REPORTS_ONLY_OPTIONS) - (
            {'participant_label'} if ns.analysis_level == 'group' else set()
        )
        given = [dest for dest, value in vars(ns).items()
                 if dest not in allowed and _given_value(value)]  # fmt: skip
        if given:
            flags = _flags(given)
            raise UsageError(
                f'{flags}: --reports-only rebuilds the reports from the outputs as they are and '
                'takes only --participant-label (participant level), -w and -v; leave out '
                f'{flags}'
            )
        return
    other = PARTICIPANT_ONLY if ns.analysis_level == 'group' else GROUP_ONLY
    given = [dest for dest in other if _given_value(getattr(ns, dest, None))]
    if given:
        flags = _flags(given)
        level = 'participant' if ns.analysis_level == 'group' else 'group'
        raise UsageError(
            f'{flags}: only the {level} level uses it; leave it out of the '
            f'{ns.analysis_level} level (the group level reads the settings from the '
            'participant outputs)'
        )


def _given(
    ns: argparse.Namespace, cls: type, convert: dict[str, Callable[[Any], Any]], **fixed: Any
) -> dict[str, Any]:
    """Keyword arguments of ``cls``: ``fixed`` values, then the options the user gave.

    Options left out keep the dataclass default (the parser's defaults are None).
    """
    kwargs = dict(fixed)
    for name in cls.__dataclass_fields__:
        value = getattr(ns, name, None)
        if name not in kwargs and value is not None:
            kwargs[name] = convert.get(name, lambda v: v)(value)
    return kwargs


def _flags(dests: list[str]) -> str:
    """Return the options of ``dests`` as typed (``n_nulls`` -> ``--n-nulls``), comma-separated."""
    return ', '.join('--' + dest.replace('_', '-') for dest in dests)


def _reference_networks(value: str) -> str:
    """Return the name, or the path made absolute (annotation nodes run in their folders)."""
    from bids_syncact.bids.references import REFERENCE_NAMES

    looks_like_a_path = '/' in value or value.endswith(('.nii', '.nii.gz')) or Path(value).exists()
    return (
        str(_absolute(Path(value)))
        if looks_like_a_path and value not in REFERENCE_NAMES
        else value
    )


def _unique(values: list[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values or ()))


def _absolute(path: Path) -> Path:
    return Path(path).expanduser().absolute()


def run(config: Config) -> int:
    """Check the locations, then run the analysis level of ``config``."""
    inputs, execution = config.inputs, config.execution
    if not inputs.bids_dir.is_dir():
        raise MissingInputError(f'BIDS_DIR {inputs.bids_dir} does not exist: check the path')
    if not (inputs.bids_dir / 'dataset_description.json').is_file():
        raise MissingInputError(
            f'BIDS_DIR {inputs.bids_dir} is not a BIDS dataset: it has no dataset_description.json'
        )
    check_output_location(config.output_dir, inputs.bids_dir, inputs.fmriprep_dir, 'OUTPUT_DIR')
    check_output_location(execution.work_dir, inputs.bids_dir, inputs.fmriprep_dir, '--work-dir')
    if inputs.bids_database_dir is not None:
        check_output_location(
            inputs.bids_database_dir, inputs.bids_dir, inputs.fmriprep_dir, '--bids-database-dir'
        )
    _check_writable(config.output_dir)
    _prepare_work_dir(execution.work_dir, clean=execution.clean_workdir)
    _private_caches(execution.work_dir)
    log_file = _log_to_file(execution.work_dir, execution.verbosity)
    for removed in remove_stale_temporaries(config.output_dir):
        LOGGER.info('Removed %s, left by an interrupted run', removed)
    LOGGER.info('bids-syncact %s; log: %s', __version__, log_file)
    LOGGER.debug('Configuration:\n%s', config.to_json())

    if execution.reports_only:  # from the outputs alone: no validation, no discovery
        from bids_syncact.reports.run import group_report, participant_reports

        if config.analysis_level == 'group':
            print(f'Report: {group_report(config.output_dir)}')
        else:
            for report in participant_reports(config.output_dir, inputs.participant_label):
                print(f'Report: {report}')
        return 0
    if config.analysis_level == 'group':
        from bids_syncact.workflows.group import run_group_level  # reads OUTPUT_DIR only

        return run_group_level(config)
    from bids_syncact.workflows.participant import run_participant_level  # heavy imports

    if not inputs.skip_bids_validation:
        from bids_syncact.bids.validation import validate_bids

        validate_bids(inputs.bids_dir, inputs.participant_label, execution.work_dir)
    return run_participant_level(config)


def check_output_location(path: Path, bids_dir: Path, fmriprep_dir: Path, what: str) -> None:
    """Refuse (exit 64) a place to write that would modify an input dataset.

    Accepted: anywhere outside ``bids_dir``, and ``bids_dir/derivatives/<name>`` (the BIDS
    convention) other than the fMRIPrep derivatives themselves.

    Raises
    ------
    UsageError
        ``path`` is ``bids_dir``, an ancestor of it, inside a ``sub-*`` folder or elsewhere in
        ``bids_dir`` outside ``derivatives/``, or overlaps the fMRIPrep derivatives.
    """
    real, bids_real, fmriprep_real = (p.resolve() for p in (path, bids_dir, fmriprep_dir))
    if bids_real.is_relative_to(real):  # BIDS_DIR itself or an ancestor of it
        raise UsageError(
            f'{what} {path} is BIDS_DIR or contains it: the input dataset is never written; '
            'choose a folder outside it, e.g. BIDS_DIR/derivatives/syncact'
        )
    if fmriprep_real.is_relative_to(real) or real.is_relative_to(fmriprep_real):
        raise UsageError(
            f'{what} {path} overlaps the fMRIPrep derivatives {fmriprep_dir}: choose its own '
            'folder, e.g. BIDS_DIR/derivatives/syncact'
        )
    if real.is_relative_to(bids_real):
        parts = real.relative_to(bids_real).parts
        if (
            any(part.startswith('sub-') for part in parts)
            or parts[0] != 'derivatives'
            or len(parts) < 2
        ):
            raise UsageError(
                f'{what} {path} is inside the input dataset: the only place accepted there is '
                'BIDS_DIR/derivatives/<name>'
            )


def _prepare_work_dir(work_dir: Path, *, clean: bool) -> None:
    marker = work_dir / WORKDIR_MARKER
    if clean and work_dir.exists():
        if any(work_dir.iterdir()) and not marker.exists():
            raise UsageError(
                f'--clean-workdir: {work_dir} is not a bids-syncact work dir (no {WORKDIR_MARKER}); '
                'refusing to empty it: remove it yourself or choose another -w'
            )
        for child in work_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as err:
        raise UsageError(
            f'cannot write the work dir {work_dir} ({err.strerror}): give a writable -w DIR'
        ) from err


def _check_writable(output_dir: Path) -> None:
    """Refuse (exit 64), before any work, an OUTPUT_DIR that cannot be written or made.

    Nothing is created: the folder, or its nearest existing parent, is asked (``access(2)``,
    which also answers for read-only mounts).
    """
    existing = output_dir.absolute()
    try:
        while not existing.exists() and existing != existing.parent:
            if existing.is_symlink():  # dangling: mkdir would fail on it
                raise NotADirectoryError(errno.ENOTDIR, 'a link to nothing', str(existing))
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, 'not a folder', str(existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, _access_error(existing), str(existing))
    except OSError as err:
        where = '' if err.filename in (None, str(output_dir)) else f' at {err.filename}'
        raise UsageError(
            f'cannot write OUTPUT_DIR {output_dir} ({err.strerror}{where}): choose a folder you '
            'can write, or fix its permissions'
        ) from None


def _access_error(folder: Path) -> str:
    """Return why ``folder`` cannot be written, in the system's words."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return os.strerror(errno.EROFS if read_only else errno.EACCES)


def _private_caches(work_dir: Path) -> None:
    """Point library caches at the work dir when unset or not writable (containers, Apptainer)."""
    for name in CACHE_VARIABLES:
        current = os.environ.get(name)
        if current and _writable(Path(current)):
            continue
        folder = work_dir / '.cache' / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _log_to_stderr(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)  # -v info, -vv debug
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'))
    _replace_handler(handler, 'stderr')
    LOGGER.setLevel(logging.DEBUG)


def _log_to_file(work_dir: Path, verbosity: int) -> Path:
    log_dir = work_dir / 'logs'
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f'bids-syncact_{time.strftime("%Y%m%d-%H%M%S")}.log'
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter('%(asctime)s %(name)s %(levelname)s %(message)s'))
    _replace_handler(handler, 'file')
    return path


def _replace_handler(handler: logging.Handler, name: str) -> None:
    handler.set_name(name)
    for old in [h for h in LOGGER.handlers if h.get_name() == name]:
        LOGGER.removeHandler(old)
        old.close()
    LOGGER.addHandler(handler)
    LOGGER.propagate = False


def _crash_report(config: Config | None, err: BaseException) -> Path:
    text = ''.join(traceback.format_exception(err))
    candidates = [Path(tempfile.gettempdir())]
    if config is not None:
        candidates.insert(0, config.execution.work_dir / 'logs')
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            path = candidate / f'crash-{time.strftime("%Y%m%d-%H%M%S")}.txt'
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path('(could not be written)')


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
