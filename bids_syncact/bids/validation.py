"""The BIDS validator (the schema-based, Deno one from PyPI) run on the input dataset."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bids_syncact.errors import BIDSValidationError, UsageError

LOGGER = logging.getLogger('bids_syncact.validation')
VALIDATORS = ('bids-validator-deno',)


def find_validator() -> str | None:
    """Path of the validator: next to this Python first (the installed dependency), then PATH."""
    here = Path(sys.executable).parent
    for name in VALIDATORS:
        if (here / name).is_file():
            return str(here / name)
        found = shutil.which(name)
        if found:
            return found
    return None


def validate_bids(bids_dir: Path, participants: Sequence[str], work_dir: Path) -> None:
    """Run the BIDS validator; refuse (exit 16) on errors in the selected participants.

    Errors in files of subjects that are not processed are logged, not fatal (fMRIPrep's rule).
    The full report is kept in ``work_dir/bids_validator.json``.

    Raises
    ------
    BIDSValidationError
        The validator reports errors.
    UsageError
        No validator is installed.
    """
    validator = find_validator()
    if validator is None:
        raise UsageError(
            'no BIDS validator found (bids-validator-deno): reinstall bids-syncact, or pass '
            '--skip-bids-validation'
        )
    deno_dir = work_dir / 'deno'
    env = {**os.environ, 'DENO_DIR': str(deno_dir), 'NO_COLOR': '1'}
    proc = subprocess.run(
        [validator, str(bids_dir), '--format', 'json', '--ignoreWarnings'],
        capture_output=True, text=True, env=env, check=False, timeout=1800,
    )  # fmt: skip
    report_file = work_dir / 'bids_validator.json'
    report_file.write_text(proc.stdout)
    try:
        issues = json.loads(proc.stdout)['issues']['issues']
    except (ValueError, KeyError, TypeError):
        raise BIDSValidationError(
            f'the BIDS validator failed to run (exit {proc.returncode}: '
            f'{proc.stderr.strip()[:200]}): pass --skip-bids-validation to go on without it'
        ) from None
    errors = [i for i in issues if i.get('severity') == 'error']
    prefixes = tuple(f'/sub-{p}/' for p in participants)
    fatal = [
        i for i in errors
        if not participants or not str(i.get('location', '')).startswith('/sub-')
        or str(i.get('location', '')).startswith(prefixes)
    ]  # fmt: skip
    for issue in errors:
        LOGGER.debug('BIDS validator: %s %s', issue.get('code'), issue.get('location'))
    if fatal:
        codes = sorted({str(i.get('code')) for i in fatal})
        first = fatal[0]
        raise BIDSValidationError(
            f'BIDS validation failed: {len(fatal)} error(s) ({", ".join(codes[:5])}; first: '
            f'{first.get("code")} at {first.get("location")}); the full report is in '
            f'{report_file}: fix the dataset, or pass --skip-bids-validation'
        )
    LOGGER.info('BIDS validation passed (%d issue(s) outside the selection)', len(errors))
