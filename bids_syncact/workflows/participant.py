"""The participant level (DESIGN.md section 6).

Discovery writes the plan (per run the files, TR, timing source and offset, stimulus, onset and
start, and the volumes to drop); then one Nipype graph computes the stimulus features (shared
cache), synchronizes each run, cleans each run's BOLD, and solves and writes the FBNs of every
subject, task, CNN and layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from bids_syncact import __version__
from bids_syncact.bids.discovery import RunPlan, discover
from bids_syncact.bids.io import atomic_write_json
from bids_syncact.config import DEFAULT_N_NULLS, Config
from bids_syncact.errors import InputDataError, SyncActError

LOGGER = logging.getLogger('bids_syncact.participant')


def run_participant_level(config: Config) -> int:
    """Discover the runs, then compute the stimulus features and the synchronized activations.

    The plan (files, TR, timing source, onsets, dropped volumes) is printed and written to
    ``<work_dir>/plan.json`` first. CNN names, layers and weights are checked here, in the
    parent, so that a wrong name or missing weights is one line before any job starts.

    Returns
    -------
    int
        The exit code (0).
    """
    plans = discover(config.inputs, config.stimulus)
    for plan in plans:  # warned only once nothing was refused: a refusal stays one line
        for warning in plan.warnings:
            LOGGER.warning(warning)
    plan_file = config.execution.work_dir / 'plan.json'
    atomic_write_json(plan_file, plan_document(config, plans))
    print(format_plan(plans))
    print(f'Plan of {len(plans)} run(s) written to {plan_file}')
    return process_runs(config, plans)


def process_runs(config: Config, plans: Sequence[RunPlan]) -> int:
    """Compute the stimulus features, then (unless ``--features-only``) everything else.

    Returns
    -------
    int
        The exit code (0); failures raise :class:`~bids_syncact.errors.SyncActError`.
    """
    from bids_syncact.bids.derivatives import write_dataset_description
    from bids_syncact.bids.features import prepare_cnn
    from bids_syncact.workflows.coupling import add_coupling_nodes
    from bids_syncact.workflows.execute import run_workflow
    from bids_syncact.workflows.stimulus import init_stimulus_wf, stimulus_hashes

    prepared = {
        cnn: prepare_cnn(cnn, config.cnn, config.stimulus, seed=config.execution.random_seed)
        for cnn in config.cnn.cnn
    }
    n_nulls = {} if config.cnn.features_only else check_coupling_inputs(config, plans)
    sha256_of = stimulus_hashes(plans)
    write_dataset_description(
        config.output_dir, config.inputs.bids_dir, config.inputs.fmriprep_dir
    )
    workflow, sync_nodes = init_stimulus_wf(config, plans, prepared, sha256_of)
    if not config.cnn.features_only:
        add_coupling_nodes(workflow, config, plans, prepared, sync_nodes, n_nulls)
    try:
        run_workflow(workflow, config)
    except SyncActError:
        if not config.cnn.features_only:  # the subjects that finished still get their reports
            try:
                write_reports(config, plans, best_effort=True)
            except Exception as err:  # noqa: BLE001 - the run's own error is the one to report
                LOGGER.info('No reports: %s', err)
        raise
    what = 'feature cache' if config.cnn.features_only else 'FBN maps'
    for spec in prepared.values():
        if spec.weights.random:
            LOGGER.warning(
                '%s ran with RANDOM weights (--weights none, seed %s): its units say nothing '
                'about vision; for tests only (flagged in every sidecar)',
                spec.cnn, spec.weights.seed,
            )  # fmt: skip
    print(f'Wrote the {what} of {len(plans)} run(s) under {config.output_dir}')
    if not config.cnn.features_only:
        write_reports(config, plans)
    return 0


def write_reports(config: Config, plans: Sequence[RunPlan], *, best_effort: bool = False) -> None:
    """Write each subject's report and ``log/<run-id>/config.toml``, and the boilerplate.

    With ``best_effort`` (some subjects failed), a subject whose report cannot be made is
    logged and skipped.
    """
    from bids_syncact.bids.provenance import new_run_id
    from bids_syncact.reports.run import participant_reports

    subjects = sorted({plan.entities['subject'] for plan in plans})
    for report in participant_reports(config.output_dir, subjects, config=config.to_dict(),
                                      run_id=new_run_id(), best_effort=best_effort):  # fmt: skip
        print(f'Report: {report}')


def check_coupling_inputs(config: Config, plans: Sequence[RunPlan]) -> dict[tuple[str, str], int]:
    """Refuse, before any work, inputs that denoising, coupling or annotation cannot use.

    Every mask is read and every BOLD header, on one grid per subject and task. The reference
    networks are read once. Each run's confounds are loaded as its denoising
    node will load them (degrees of freedom, columns, row count); per subject and task the kept
    samples must allow the cross-validation folds, and every run ``--n-nulls`` distinct shifts.

    Returns
    -------
    dict
        The nulls of each (subject, task): :func:`nulls_for_runs`.

    Raises
    ------
    InputDataError
        With the run and what to change.
    """
    from bids_syncact.bids.bold import check_run_images, clean_spec_for_run
    from bids_syncact.bids.discovery import by_subject_and_task
    from bids_syncact.bids.references import load_reference_networks
    from bids_syncact.core.fbn import sample_clock
    from bids_syncact.core.selection import blocked_folds

    coupling = config.coupling
    masks = {
        key: check_run_images([p.preproc_bold for p in group], [p.mask for p in group])
        for key, group in by_subject_and_task(plans).items()
    }
    # the reference networks, read once on the first grid: a bad name, file or TSV is refused
    # here, not by every annotation node at the end
    load_reference_networks(coupling.reference_networks, next(iter(masks.values())))
    n_nulls: dict[tuple[str, str], int] = {}
    for (subject, task), group in by_subject_and_task(plans).items():
        specs = [
            clean_spec_for_run(
                plan.preproc_bold, strategy=coupling.confounds_strategy, t_r=plan.t_r,
                n_vols=plan.n_vols, drop_volumes=plan.drop_volumes,
                high_pass=coupling.effective_high_pass,
            )
            for plan in group
        ]  # fmt: skip
        if coupling.alpha is None:
            try:
                blocked_folds(*sample_clock(specs))
            except InputDataError as err:
                raise InputDataError(f'sub-{subject} task-{task}: {err}') from None
        n_nulls[subject, task] = nulls_for_runs(  # the refusals name the run
            specs, coupling.n_nulls, seed=config.execution.random_seed
        )
    return n_nulls


def nulls_for_runs(specs: Sequence[Any], requested: int | None, *, seed: int) -> int:
    """Return how many nulls a subject's runs get (DESIGN.md 2.4).

    ``requested`` None (the default): ``DEFAULT_N_NULLS``, or the largest N >= 20 that every
    run allows (distinct circular shifts, :func:`~bids_syncact.core.nulls.allowed_shifts`), with
    a warning. A number: exactly that, or refused. 0: none.

    Raises
    ------
    InputDataError
        When the runs cannot give the number asked, or fewer than 20 nulls by default.
    """
    from bids_syncact.core.calibration import MIN_NULLS_FOR_LABELS
    from bids_syncact.core.nulls import MIN_SHIFT_S, allowed_shifts, draw_shifts

    if requested == 0:
        return 0
    if requested is not None:
        draw_shifts([s.n_vols for s in specs], [s.t_r for s in specs], requested, seed=seed,
                    names=[s.name for s in specs])  # fmt: skip
        return requested
    fewest = min(allowed_shifts(s.n_vols, s.t_r).size for s in specs)
    if fewest >= DEFAULT_N_NULLS:
        return DEFAULT_N_NULLS
    which = f'at least {MIN_SHIFT_S:g} s from zero' if MIN_SHIFT_S > 0 else 'other than zero'
    if fewest < MIN_NULLS_FOR_LABELS:
        shortest = min(specs, key=lambda s: allowed_shifts(s.n_vols, s.t_r).size)
        raise InputDataError(
            f'{shortest.name}: {shortest.n_vols} volumes at TR {shortest.t_r:g} s allow only '
            f'{fewest} distinct circular shifts ({which}), fewer than the '
            f'{MIN_NULLS_FOR_LABELS} nulls that labels need; pass --n-nulls 0 to turn inference '
            'off (labels n/a)'
        )
    LOGGER.warning('%s: the runs allow only %d distinct circular shifts (%s): %d nulls '
                   'instead of %d (the smallest p is then %.3f)',
                   specs[0].name.split('_run-')[0], fewest, which, fewest, DEFAULT_N_NULLS,
                   1 / (1 + fewest))  # fmt: skip
    return fewest


def plan_document(config: Config, plans: Sequence[RunPlan]) -> dict[str, Any]:
    """Return the plan as a JSON-serialisable document."""
    return {
        'GeneratedBy': {'Name': 'bids-syncact', 'Version': __version__},
        'Created': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'BIDSDir': str(config.inputs.bids_dir),
        'FMRIPrepDir': str(config.inputs.fmriprep_dir),
        'OutputDir': str(config.output_dir),
        'Config': config.to_dict(),
        'Runs': [plan.to_dict() for plan in plans],
    }


def format_plan(plans: Sequence[RunPlan]) -> str:
    """Return a human-readable listing of the plan, one block per run."""
    lines = []
    for plan in plans:
        stim = plan.stimulus
        if stim.kind == 'movie':
            length = f', {stim.movie.duration_s:.2f} s long' if stim.movie else ''
            what = (
                f'movie {stim.path} ({stim.origin}): onset {stim.onset_s:.3f} s, '
                f'start {stim.start_s:.3f} s{length}'
            )
        else:
            what = f'sequence of {len(stim.items)} item(s) ({stim.origin})'
        dropped = ', '.join(map(str, plan.drop_volumes)) or 'none'
        lines += [
            f'{plan.name}',
            (
                f'  TR {plan.t_r:.3f} s, {plan.n_vols} volumes; acquisition at i*TR + '
                f'{plan.acq_offset_s:.3f} s (TimingSource {plan.timing_source})'
            ),
            f'  volumes dropped after sampling: {dropped}',
            f'  bold       {plan.preproc_bold}',
            f'  mask       {plan.mask}',
            f'  confounds  {plan.confounds}',
            f'  stimulus   {what}',
            *(f'  warning    {w}' for w in plan.warnings),
        ]
    return '\n'.join(lines)
