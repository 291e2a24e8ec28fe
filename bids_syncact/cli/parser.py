"""The command line of DESIGN.md section 4: parsing only, no side effects.

Every option is declared with the processing *stage* that honours it. An option the user gives
whose stage is not built yet is refused (exit 64) by :func:`refuse_unbuilt_options`, naming the
missing stage, instead of being parsed and silently ignored. Options default to ``None`` here so
that "given" and "not given" can be told apart; the real defaults live in :mod:`bids_syncact.config`
and are shown in ``--help`` from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from bids_syncact import __version__
from bids_syncact.config import (
    CONFOUNDS_STRATEGIES,
    DEFAULT_N_NULLS,
    DEFAULT_SPACE,
    DEVICES,
    FRAME_FITS,
    HIGH_PASS_WITHOUT_COSINES_HZ,
    HRF_MODELS,
    MIN_N_NULLS,
    CNNConfig,
    CouplingConfig,
    StimulusConfig,
)
from bids_syncact.errors import EXIT_CODE_HELP, ExitCode, UsageError

ANALYSIS_LEVELS = ('participant', 'group')

#: Processing stages and whether this version builds them. Options and analysis levels name one.
STAGES: dict[str, bool] = {
    'discovery': True,
    'stimulus features (movie decoding and CNN activations)': True,
    'synchronization (HRF and sampling on the scanner clock)': True,
    'denoising': True,
    'coupling (sparse coding)': True,
    'significance (null distributions)': True,
    'annotation (reference networks)': True,
    'workflow execution (Nipype)': True,
    'reports': True,
    'group level': True,
}
FEATURES, SYNC, DENOISE, COUPLE, NULLS, ANNOTATE, EXECUTE, REPORTS, GROUP = list(STAGES)[1:]

_LABEL = re.compile(r'^[A-Za-z0-9]+$')


class SyncActArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses bad usage with one line and exit 64."""

    #: Stage of each option's ``dest``; filled by :func:`_add`.
    stage_of: dict[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage_of = {}

    def error(self, message: str) -> NoReturn:
        """Print one line (what is wrong, what to do) and exit 64, argparse errors included."""
        self.exit(
            ExitCode.USAGE,
            f'{self.prog}: error: {message} (see {self.prog} --help)\n',
        )


def _default(cls: type, name: str) -> Any:
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


def _add(
    parser: SyncActArgumentParser,
    group: argparse._ArgumentGroup,
    *flags: str,
    stage: str = 'discovery',
    **kwargs: Any,
) -> None:
    if not STAGES[stage]:
        kwargs['help'] = f'{kwargs.get("help", "")} [not in this version: needs {stage}]'
    if kwargs.get('nargs') == '+':  # a repeated option adds to, not replaces, its values
        kwargs.setdefault('action', 'extend')
    action = group.add_argument(*flags, default=None, **kwargs)
    parser.stage_of[action.dest] = stage


# -- value types: each raises ArgumentTypeError, which argparse turns into exit 64 -------------


def _label(prefix: str) -> Any:
    def parse(value: str) -> str:
        label = value.removeprefix(f'{prefix}-')
        if not _LABEL.match(label):
            raise argparse.ArgumentTypeError(
                f'{value!r} is not a BIDS label (letters and digits only, {prefix}- optional)'
            )
        return label

    parse.__name__ = f'{prefix} label'
    return parse


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{value!r} is not a number') from None


def _positive_float(value: str) -> float:
    number = _float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f'{value!r} must be greater than 0')
    return number


def _non_negative_float(value: str) -> float:
    number = _float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f'{value!r} must be 0 or more')
    return number


def _int_at_least(minimum: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{value!r} is not a whole number') from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f'{value!r} must be at least {minimum}')
        return number

    parse.__name__ = 'integer'
    return parse


def _n_nulls(value: str) -> int:
    number = _int_at_least(0)(value)
    if 0 < number < MIN_N_NULLS:
        raise argparse.ArgumentTypeError(
            f'{value!r} nulls are too few to label (the smallest p would be 1/{number + 1}); '
            f'give 0 (no inference) or at least {MIN_N_NULLS}'
        )
    return number


def _unit_correlation(value: str) -> float:
    number = _positive_float(value)
    if not 0.5 < number <= 1.0:
        raise argparse.ArgumentTypeError(
            f'{value!r} must be in (0.5, 1]: above 0.5 the signs inside a cluster agree; 1 '
            'gives single units'
        )
    return number


def _frame_rate(value: str) -> float | str:
    return 'native' if value == 'native' else _positive_float(value)


def _alpha(value: str) -> float | str:
    return 'auto' if value == 'auto' else _positive_float(value)


def _max_units(value: str) -> int | str:
    return 'all' if value == 'all' else _int_at_least(1)(value)


def _scoped(sep: str, what: str) -> Any:
    """``[SCOPE<sep>]VALUE`` where SCOPE is a BIDS-like label (a task, a CNN name)."""

    def parse(value: str) -> tuple[str | None, str]:
        scope, found, rest = value.partition(sep)
        if found and re.match(r'^[A-Za-z0-9_]+$', scope):
            if not rest:
                raise argparse.ArgumentTypeError(f'{value!r}: nothing after {sep!r}')
            return scope, rest
        return None, value

    parse.__name__ = what
    return parse


def _derivatives(value: str) -> tuple[str, Path]:
    name, found, path = value.partition('=')
    if not found:
        return 'fmriprep', Path(value)
    if name != 'fmriprep':
        raise argparse.ArgumentTypeError(
            f'derivatives {name!r} are not supported (only fmriprep=PATH, or a plain PATH)'
        )
    return name, Path(path)


def _accuracy(value: str) -> tuple[str, float]:
    name, found, acc = value.partition('=')
    if not found or not name:
        raise argparse.ArgumentTypeError(f'{value!r} is not NAME=ACC')
    number = _positive_float(acc)
    if number > 100:
        raise argparse.ArgumentTypeError(f'{value!r}: top-1 accuracy is a percentage (0-100]')
    return name, number


def build_parser() -> SyncActArgumentParser:
    """Build the ``bids-syncact`` argument parser (DESIGN.md section 4)."""
    stim, cnn, coup = StimulusConfig, CNNConfig, CouplingConfig
    parser = SyncActArgumentParser(
        prog='bids-syncact',
        description=(
            'Sync-ACT: couple the units of a convolutional neural network with the functional '
            'brain networks that follow them, from movie-watching fMRI preprocessed by fMRIPrep.'
        ),
        epilog=f'exit codes:\n{EXIT_CODE_HELP}',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('bids_dir', type=Path, help='the raw BIDS dataset (read only)')
    parser.add_argument(
        'output_dir', type=Path, help='where the BIDS derivatives go (not inside bids_dir)'
    )
    parser.add_argument(
        'analysis_level',
        metavar='{participant,group}',
        help='participant: per-subject maps; group: statistics over participant outputs',
    )
    parser.add_argument('--version', action='version', version=f'bids-syncact {__version__}')

    g = parser.add_argument_group('Inputs')
    _add(parser, g, '--participant-label', '--participant_label', nargs='+', metavar='LABEL',
         type=_label('sub'), dest='participant_label',
         help='subjects to process (sub- optional); default: all. Also filters the group level')  # fmt: skip
    _add(parser, g, '--session-label', nargs='+', metavar='LABEL', type=_label('ses'),
         help='sessions to process (ses- optional); default: all')  # fmt: skip
    _add(parser, g, '-t', '--task-id', nargs='+', metavar='TASK', type=_label('task'),
         help='tasks to process; default: every task with a stimulus')  # fmt: skip
    _add(parser, g, '--bids-filter-file', type=Path, metavar='FILE',
         help='JSON of pybids queries by key ("bold"), as in fMRIPrep')  # fmt: skip
    _add(parser, g, '-d', '--derivatives', nargs='+', type=_derivatives,
         metavar='[fmriprep=]PATH',
         help='fMRIPrep derivatives; default: BIDS_DIR/derivatives/fmriprep')  # fmt: skip
    _add(parser, g, '--space', metavar='SPACE',
         help=f'template space of the preprocessed BOLD; default: {DEFAULT_SPACE}')  # fmt: skip
    _add(parser, g, '--res', type=_label('res'), metavar='RES',
         help='resolution label (res- optional); default: the one resolution present')  # fmt: skip
    _add(parser, g, '--bids-database-dir', type=Path, metavar='DIR',
         help='a pybids database to reuse (created there when empty)')  # fmt: skip
    _add(parser, g, '--skip-bids-validation', '--skip_bids_validation', action='store_const',
         const=True, dest='skip_bids_validation',
         help='do not run the BIDS validator on bids_dir')  # fmt: skip

    g = parser.add_argument_group('Stimulus model')
    _add(parser, g, '--stimulus-map', type=Path, metavar='TSV',
         help='TSV with task, [session, run, subject,] path, onset[, start]: the movie of each '
              'run (the most specific row wins)')  # fmt: skip
    _add(parser, g, '--stimulus', nargs='+', type=_scoped('=', 'stimulus'),
         metavar='[TASK=]PATH', help='the movie of every run (of TASK)')  # fmt: skip
    _add(parser, g, '--stimulus-onset', type=_float, metavar='S',
         help='movie start (s) on the scanner clock for --stimulus; may be negative; default: 0')  # fmt: skip
    _add(parser, g, '--dummy-scans', type=_int_at_least(0), metavar='N',
         help="non-steady-state volumes to drop, merged with fMRIPrep's detected ones")  # fmt: skip
    _add(parser, g, '--frame-rate', type=_frame_rate, metavar='HZ|native', stage=FEATURES,
         help=f'frames forwarded per second; default: {_default(stim, "frame_rate"):g}')  # fmt: skip
    _add(parser, g, '--frame-fit', choices=FRAME_FITS, stage=FEATURES,
         help=f'fit of frames to the network input; default: {_default(stim, "frame_fit")}')  # fmt: skip
    _add(parser, g, '--hrf', choices=HRF_MODELS, stage=SYNC,
         help=f"nilearn's canonical HRF; default: {_default(stim, 'hrf')}")  # fmt: skip

    g = parser.add_argument_group('CNN')
    _add(parser, g, '--cnn', nargs='+', metavar='NAME', stage=FEATURES,
         help=f'torchvision CNN families with layer presets; default: '
              f'{" ".join(_default(cnn, "cnn"))}')  # fmt: skip
    _add(parser, g, '--layers', nargs='+', type=_scoped(':', 'layer'), metavar='[CNN:]LAYER',
         stage=FEATURES, help="module names; default: the family's preset of main stages")  # fmt: skip
    _add(parser, g, '--weights', nargs='+', type=_scoped('=', 'weights'),
         metavar='[CNN=]DEFAULT|none|PATH', stage=FEATURES,
         help="DEFAULT: torchvision's pretrained weights from TORCH_HOME; none: seeded random "
              'init (tests only); PATH: a state_dict (weights_only=True); default: DEFAULT')  # fmt: skip
    _add(parser, g, '--max-units', type=_max_units, metavar='N|all', stage=FEATURES,
         help=f'unit clusters per layer whose named members have the largest activation '
              f'variance; default: '
              f'{_default(cnn, "max_units")}')  # fmt: skip
    _add(parser, g, '--unit-correlation', type=_unit_correlation, metavar='R', stage=FEATURES,
         help='one FBN per cluster of units whose HRF-convolved activations correlate at '
              '|r| >= R over the stimuli (complete linkage), R in (0.5, 1]; 1: single units; '
              f'default: {_default(cnn, "unit_correlation")}')  # fmt: skip
    _add(parser, g, '--cnn-accuracy', nargs='+', type=_accuracy, metavar='NAME=ACC',
         stage=GROUP, help='ImageNet top-1 accuracy (%%) of CNNs with PATH weights')  # fmt: skip
    _add(parser, g, '--features-only', action='store_const', const=True, stage=FEATURES,
         help='fill the shared feature cache and exit (run once before a job array)')  # fmt: skip

    g = parser.add_argument_group('Coupling')
    _add(parser, g, '--confounds-strategy', choices=CONFOUNDS_STRATEGIES, stage=DENOISE,
         help=f"nilearn's load_confounds_strategy; default: "
              f'{_default(coup, "confounds_strategy")}')  # fmt: skip
    _add(parser, g, '--high-pass', type=_positive_float, metavar='HZ', stage=DENOISE,
         help=f"default: none (fMRIPrep's cosine regressors); {HIGH_PASS_WITHOUT_COSINES_HZ} Hz "
              'with --confounds-strategy none')  # fmt: skip
    _add(parser, g, '--smoothing-fwhm', type=_non_negative_float, metavar='MM', stage=DENOISE,
         help='spatial smoothing (mm); default: none')  # fmt: skip
    _add(parser, g, '--alpha', type=_alpha, metavar='auto|FLOAT', stage=COUPLE,
         help='sparsity (unit-norm columns); default: auto (blocked cross-validation)')  # fmt: skip
    _add(parser, g, '--n-nulls', type=_n_nulls, metavar='N', stage=NULLS,
         help=f'circular-shift nulls that calibrate p-values and labels: 0 (off: labels n/a) '
              f'or at least {MIN_N_NULLS}; default: {DEFAULT_N_NULLS}, or the largest '
              f'N >= {MIN_N_NULLS} that short runs allow')  # fmt: skip
    _add(parser, g, '--reference-networks', metavar='NAME|PATH', stage=ANNOTATE,
         help='reference networks; default: schaefer2018-7 (TemplateFlow), else seitzman2018')  # fmt: skip

    g = parser.add_argument_group('Performance and run')
    _add(parser, g, '--device', choices=DEVICES, stage=FEATURES,
         help='where the CNN and the solver run; default: auto')  # fmt: skip
    _add(parser, g, '--nprocs', '--n-cpus', type=_int_at_least(1), metavar='N', stage=EXECUTE,
         dest='nprocs', help='processes of the Nipype plugin; default: all CPUs')  # fmt: skip
    _add(parser, g, '--omp-nthreads', type=_int_at_least(1), metavar='N', stage=EXECUTE,
         help='threads per process')  # fmt: skip
    _add(parser, g, '--mem-gb', type=_positive_float, metavar='N', stage=EXECUTE,
         help='memory limit (GB) given to the Nipype scheduler')  # fmt: skip
    _add(parser, g, '-w', '--work-dir', type=Path, metavar='DIR',
         help='intermediate results, logs and the plan; default: ./work')  # fmt: skip
    _add(parser, g, '--nipype-plugin-file', type=Path, metavar='YAML', stage=EXECUTE,
         help='Nipype plugin settings (e.g. SLURM)')  # fmt: skip
    _add(parser, g, '--random-seed', type=_int_at_least(0), metavar='N', stage=FEATURES,
         help='seed of random init, null shifts and permutations; default: 0')  # fmt: skip
    _add(parser, g, '--stop-on-first-crash', action='store_const', const=True, stage=EXECUTE,
         help='stop at the first failing node')  # fmt: skip
    _add(parser, g, '--clean-workdir', action='store_const', const=True,
         help="remove this run's work dir content before starting")  # fmt: skip
    _add(parser, g, '--reports-only', action='store_const', const=True, stage=REPORTS,
         help='only rebuild the HTML reports from existing outputs')  # fmt: skip
    _add(parser, g, '-v', '--verbose', action='count', dest='verbosity',
         help='more log output (repeatable)')  # fmt: skip
    return parser


def refuse_unbuilt_options(parser: SyncActArgumentParser, namespace: argparse.Namespace) -> None:
    """Refuse (exit 64) the first given option, or analysis level, whose stage is not built.

    Raises
    ------
    UsageError
        Naming the option and its missing stage.
    """
    if namespace.analysis_level == 'group' and not STAGES[GROUP]:
        raise UsageError(
            'the group level is not built in this version yet (missing stage: group level); '
            'run the participant level'
        )
    for dest, stage in parser.stage_of.items():
        if getattr(namespace, dest) is not None and not STAGES[stage]:
            flag = _flag_of(parser, dest)
            raise UsageError(
                f'{flag} is not available yet: its stage ({stage}) is not built in this version; '
                f'leave {flag} out'
            )


def _flag_of(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:
        if action.dest == dest:
            return max(action.option_strings, key=len)
    return dest  # pragma: no cover - every dest comes from an action


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); exits 64 on bad usage, 0 on --help/--version."""
    parser = build_parser()
    return parser.parse_args(sys.argv[1:] if argv is None else argv)
