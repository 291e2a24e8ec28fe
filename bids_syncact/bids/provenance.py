"""Per-run provenance: ``sub-<s>/log/<run-id>/config.toml`` (fMRIPrep's habit).

Sidecars stay deterministic (a rerun writes the same bytes); what changes from run to run (when,
where, the run id) goes here.
"""

from __future__ import annotations

import datetime
import platform
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from bids_syncact import __version__
from bids_syncact.bids.io import atomic_write_text


def new_run_id(now: datetime.datetime | None = None) -> str:
    """Return a run id, ``YYYYMMDD-HHMMSS_<8 hex>``, UTC.

    >>> new_run_id(datetime.datetime(2026, 11, 29, 23, 5, 1, tzinfo=datetime.timezone.utc))[:16]
    '20261129-230501_'
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f'{now:%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}'


def write_run_config(output_dir: Path, subject: str, config: Mapping[str, Any],
                     run_id: str) -> Path:  # fmt: skip
    """Write the configuration of this run for ``subject``; return the path.

    TOML has no null: settings left unset (None) are left out, which means "the default";
    inside lists (``layers`` as ``[cnn, layer]`` pairs) None is written as ``""``.
    """
    document = {
        'environment': {
            'version': __version__, 'run_id': run_id, 'python': platform.python_version(),
            'hostname': platform.node(),
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        },
        **_without_none(dict(config)),
    }  # fmt: skip
    path = output_dir / f'sub-{subject}' / 'log' / run_id / 'config.toml'
    return atomic_write_text(path, tomli_w.dumps(document))


def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return ['' if v is None else _without_none(v) for v in value]
    return value
