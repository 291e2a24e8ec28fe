"""Refusals with their documented exit codes (DESIGN.md section 4).

Every refusal is raised as one of these exceptions, carrying a message of one line that says what is
wrong and what to do. :func:`bids_syncact.cli.run.main` turns it into that line on stderr and the
exit code; the traceback goes to the log file only.
"""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    """Exit codes of ``bids-syncact`` (DESIGN.md section 4)."""

    SUCCESS = 0
    PROCESSING_FAILED = 1
    BIDS_VALIDATION_FAILED = 16
    UNKNOWN_ANALYSIS_LEVEL = 17
    NOTHING_SELECTED = 18
    USAGE = 64
    BAD_INPUT_DATA = 65
    MISSING_INPUT = 66
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class SyncActError(Exception):
    """Base class of every refusal: a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.PROCESSING_FAILED

    def __init__(self, message: str) -> None:
        # One line, always: a message that spans lines is a bug in the caller.
        super().__init__(' '.join(str(message).split()))


class UsageError(SyncActError):
    """The command line asks for something impossible or not built yet (exit 64)."""

    exit_code = ExitCode.USAGE


class BIDSValidationError(SyncActError):
    """The BIDS validator rejected the input dataset (exit 16)."""

    exit_code = ExitCode.BIDS_VALIDATION_FAILED


class AnalysisLevelError(SyncActError):
    """The analysis level is neither ``participant`` nor ``group`` (exit 17)."""

    exit_code = ExitCode.UNKNOWN_ANALYSIS_LEVEL


class NothingSelectedError(SyncActError):
    """The filters (labels, tasks, filter file) selected no run (exit 18)."""

    exit_code = ExitCode.NOTHING_SELECTED


class InputDataError(SyncActError):
    """An input file is unreadable, inconsistent or unsafe (exit 65)."""

    exit_code = ExitCode.BAD_INPUT_DATA


class MissingInputError(SyncActError):
    """A required input does not exist (exit 66)."""

    exit_code = ExitCode.MISSING_INPUT


EXIT_CODE_HELP = '\n'.join(
    f'  {code.value:>3}  {text}'
    for code, text in [
        (ExitCode.SUCCESS, 'success'),
        (
            ExitCode.PROCESSING_FAILED,
            'a processing failure (traceback in the log of the work dir), or a full disk',
        ),
        (ExitCode.BIDS_VALIDATION_FAILED, 'BIDS validation failed'),
        (ExitCode.UNKNOWN_ANALYSIS_LEVEL, 'unknown analysis level'),
        (ExitCode.NOTHING_SELECTED, 'the filters selected nothing'),
        (ExitCode.USAGE, 'bad usage (options, an OUTPUT_DIR or -w that cannot be written)'),
        (
            ExitCode.BAD_INPUT_DATA,
            (
                'bad input data (unreadable or inconsistent files, unsafe stim_file, '
                'VolumeTiming, corrupt movie, TR mismatch)'
            ),
        ),
        (
            ExitCode.MISSING_INPUT,
            (
                'missing input (no derivatives, no movie task, no stimulus for a run, '
                'participant not found)'
            ),
        ),
        (ExitCode.INTERRUPTED, 'interrupted (Ctrl-C); a rerun resumes from the work dir'),
    ]
)


#: Errors of the disk written to, not of the data: a full disk, a quota, a read-only mount.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
_DISK_ADVICE = (
    'free space there (or choose another OUTPUT_DIR or -w), then run the same command again: '
    'it resumes from the work dir, and no output was left half-written'
)


def disk_error_message(err: OSError) -> str:
    """Return the one line for a write that the disk refused (see :data:`DISK_ERRORS`)."""
    where = f' {err.filename}' if err.filename else ''
    return f'cannot write{where} ({err.strerror}): {_DISK_ADVICE}'


def disk_advice(message: str) -> str:
    """Return ``message`` with the advice of :func:`disk_error_message` when a disk refused."""
    words = ('No space left on device', 'Disk quota exceeded', 'Read-only file system')
    return f'{message}: {_DISK_ADVICE}' if any(w in message for w in words) else message
