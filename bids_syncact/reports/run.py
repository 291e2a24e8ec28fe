"""Writing the reports, the methods boilerplate and the run's configuration."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_syncact.bids.participant_outputs import output_layout
from bids_syncact.bids.provenance import write_run_config
from bids_syncact.errors import MissingInputError
from bids_syncact.reports.citation import write_citation
from bids_syncact.reports.group import build_group_report
from bids_syncact.reports.subject import build_subject_report

LOGGER = logging.getLogger('bids_syncact.reports')


def participant_reports(
    output_dir: Path, subjects: Sequence[str], *, config: Mapping[str, Any] | None = None,
    run_id: str | None = None, best_effort: bool = False,
) -> list[Path]:  # fmt: skip
    """Write ``sub-<s>.html`` of each subject and ``logs/CITATION.md``; return the reports.

    OUTPUT_DIR is indexed once for all of them. With ``config`` and ``run_id`` (a run, not
    ``--reports-only``), also each subject's ``log/<run-id>/config.toml``. With
    ``best_effort`` (some subjects failed), a subject whose report cannot be made is logged
    (to the log file: stderr keeps its one line) and skipped.

    Raises
    ------
    MissingInputError
        When OUTPUT_DIR holds no output of a subject (``--reports-only`` before any run).
    """
    layout = output_layout(output_dir)
    found = set(layout.get_subjects(desc='sync', suffix='timeseries', extension='.tsv'))
    subjects = list(subjects) or sorted(found)
    missing = [s for s in subjects if s not in found]
    if (missing or not subjects) and not best_effort:
        raise MissingInputError(
            f'no participant outputs of sub-{(missing or ["<any>"])[0]} in {output_dir}: run '
            'the participant level before --reports-only'
        )
    reports = []
    for subject in subjects:
        if subject in missing:
            LOGGER.info('No report for sub-%s: it has no outputs', subject)
            continue
        if config is not None and run_id is not None:
            write_run_config(output_dir, subject, config, run_id)
        try:
            reports.append(build_subject_report(output_dir, subject, layout))
        except Exception as err:  # a failed subject may have partial outputs
            if not best_effort:
                raise
            LOGGER.info('No report for sub-%s: %s', subject, err)
            continue
        LOGGER.info('Report: %s', reports[-1])
    if found:
        write_citation(output_dir, layout)
    return reports


def group_report(output_dir: Path) -> Path:
    """Write ``group.html`` and refresh ``logs/CITATION.md``; return the report.

    Raises
    ------
    MissingInputError
        When OUTPUT_DIR holds no group output (``--reports-only`` before the group level).
    """
    layout = output_layout(output_dir)
    try:
        report = build_group_report(output_dir, layout)
    except FileNotFoundError as err:
        raise MissingInputError(f'{err} (before --reports-only)') from None
    write_citation(output_dir, layout)
    return report
