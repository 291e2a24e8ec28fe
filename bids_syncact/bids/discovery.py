"""Input discovery with pybids: the runs to process and everything known about them.

:func:`discover` returns one :class:`RunPlan` per run of a movie task: the fMRIPrep files in the
requested space and resolution, the TR, when each volume was acquired, the non-steady-state volumes
and the stimulus (DESIGN.md sections 2.2 and 3). Every refusal is an exception of
:mod:`bids_syncact.errors` with one line that names the run and says what to do.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd
from bids import BIDSLayout
from bids.layout import BIDSFile, Query

from bids_syncact.bids.stimulus import Stimulus, StimulusResolver, read_stimulus_map, run_name
from bids_syncact.config import InputConfig, StimulusConfig
from bids_syncact.core.timing import acquisition_offset
from bids_syncact.errors import (
    InputDataError,
    MissingInputError,
    NothingSelectedError,
    UsageError,
)

LOGGER = logging.getLogger('bids_syncact.discovery')

#: Entities that tell runs apart; the derivatives of a run must agree on all of them.
RUN_ENTITIES = ('subject', 'session', 'task', 'acquisition', 'ceagent', 'reconstruction',
                'direction', 'run')  # fmt: skip
#: Keys a --bids-filter-file may hold (fMRIPrep's format, restricted to what we query).
FILTER_KEYS = ('bold',)
NIFTI = ['.nii.gz', '.nii']
TR_TOLERANCE_S = 1e-3
MIN_MOVIE_COVERAGE = 0.5
_NSS_COLUMN = re.compile(r'^non_steady_state_outlier\d+$')


@dataclass(frozen=True)
class RunPlan:
    """One run to process: files, clock and stimulus."""

    name: str
    """BIDS prefix, e.g. ``sub-01_task-movie_run-1``."""
    entities: Mapping[str, Any]
    raw_bold: Path
    events: Path | None
    preproc_bold: Path
    mask: Path
    confounds: Path
    space: str
    res: str | None
    t_r: float
    """Repetition time (s), from the preprocessed BOLD's sidecar."""
    n_vols: int
    """Stored volumes, non-steady-state ones included."""
    acq_offset_s: float
    """``c``: volume ``i`` was acquired at ``i * t_r + c`` (s)."""
    timing_source: str
    nss_volumes: tuple[int, ...]
    """Non-steady-state volumes flagged by fMRIPrep (original indices)."""
    dummy_scans: int | None
    stimulus: Stimulus
    warnings: tuple[str, ...] = field(default=())

    @property
    def drop_volumes(self) -> tuple[int, ...]:
        """Volumes removed after sampling: fMRIPrep's flags merged with ``--dummy-scans``."""
        return tuple(sorted(set(self.nss_volumes) | set(range(self.dummy_scans or 0))))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, the run's entry in the plan."""
        stim = self.stimulus
        stimulus: dict[str, Any] = {
            'kind': stim.kind,
            'source': stim.source,
            'origin': stim.origin,
        }
        if stim.kind == 'movie':
            stimulus |= {
                'path': str(stim.path),
                'onset_s': stim.onset_s,
                'start_s': stim.start_s,
                'duration_s': stim.movie.duration_s if stim.movie else None,
            }
        else:
            stimulus['items'] = [
                {'path': str(i.path), 'onset_s': i.onset_s, 'duration_s': i.duration_s}
                for i in stim.items
            ]
        return {
            'name': self.name,
            'entities': {k: v for k, v in self.entities.items() if v is not None},
            'files': {
                'raw_bold': str(self.raw_bold),
                'events': None if self.events is None else str(self.events),
                'preproc_bold': str(self.preproc_bold),
                'mask': str(self.mask),
                'confounds': str(self.confounds),
            },
            'space': self.space,
            'res': self.res,
            'RepetitionTime': self.t_r,
            'n_vols': self.n_vols,
            'TimingSource': self.timing_source,
            'acq_offset_s': self.acq_offset_s,
            'nss_volumes': list(self.nss_volumes),
            'dummy_scans': self.dummy_scans,
            'drop_volumes': list(self.drop_volumes),
            'stimulus': stimulus,
            'warnings': list(self.warnings),
        }


def read_bids_filters(path: Path) -> dict[str, dict[str, Any]]:
    """Read a ``--bids-filter-file``: ``{"bold": {entity: value}}``, as plain JSON values.

    ``null`` selects files without the entity and ``"*"`` files with any value (fMRIPrep's rules),
    applied when querying.

    Raises
    ------
    UsageError
        Not JSON, not an object of objects, or keys other than ``bold``.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f'--bids-filter-file {path} does not exist') from None
    except (OSError, ValueError) as err:
        raise UsageError(f'--bids-filter-file {path} is not valid JSON: {err}') from err
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise UsageError(f'--bids-filter-file {path} must map "bold" to an object of entities')
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise UsageError(
            f'--bids-filter-file {path}: unknown key(s) {", ".join(unknown)}; '
            f'valid: {", ".join(FILTER_KEYS)}'
        )
    return raw


def _as_query(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a filter-file entry into a pybids query: ``null`` is ``Query.NONE``, ``"*"`` ANY."""
    return {
        k: Query.NONE if v is None else Query.ANY if v == '*' else v for k, v in filters.items()
    }


def discover(inputs: InputConfig, stimulus: StimulusConfig) -> tuple[RunPlan, ...]:
    """Find every run to process and everything needed to process it.

    Parameters
    ----------
    inputs : InputConfig
        Dataset locations and filters.
    stimulus : StimulusConfig
        Stimulus map, ``--stimulus`` shorthands and ``--dummy-scans``.

    Returns
    -------
    tuple of RunPlan
        Sorted by name.

    Raises
    ------
    SyncActError
        Every refusal of DESIGN.md sections 3-4 (see :mod:`bids_syncact.errors`).
    """
    if not inputs.fmriprep_dir.is_dir():
        raise MissingInputError(
            f'no fMRIPrep derivatives at {inputs.fmriprep_dir}: run fMRIPrep first, or point to '
            'them with -d fmriprep=PATH'
        )
    layout = _layout(inputs.bids_dir, database_path=inputs.bids_database_dir)
    fmriprep = _layout(inputs.fmriprep_dir, derivatives=True)
    runs = _select_runs(layout, inputs)
    map_rows = read_stimulus_map(stimulus.stimulus_map) if stimulus.stimulus_map else ()
    _check_map_tasks(map_rows, set(layout.get_tasks()))
    resolver = StimulusResolver(
        inputs.bids_dir,
        map_rows=map_rows,
        cli_stimuli=stimulus.stimulus,
        cli_onset_s=stimulus.stimulus_onset,
    )
    _check_cli_stimuli(stimulus.stimulus, {run.entities['task'] for run in runs})

    stimuli = [resolver.resolve(run.entities, run.events) for run in runs]
    movie_tasks = {
        run.entities['task'] for run, stim in zip(runs, stimuli, strict=True) if stim is not None
    }
    if not movie_tasks:
        tasks = ', '.join(sorted({run.entities['task'] for run in runs}))
        raise MissingInputError(
            f'no movie task: no run of task(s) {tasks} has a stimulus (no stim_file in its '
            'events): give the movie with --stimulus-map TSV or --stimulus [TASK=]PATH'
        )
    for task in sorted(set(inputs.task_id) - movie_tasks):
        raise MissingInputError(
            f'task {task} has no stimulus in any run: give its movie with --stimulus-map TSV or '
            f'--stimulus {task}=PATH'
        )
    plans = []
    for run, stim in zip(runs, stimuli, strict=True):
        if run.entities['task'] not in movie_tasks:
            LOGGER.info('Skipping %s: task without a stimulus', run.name)
            continue
        if stim is None:
            raise MissingInputError(
                f'no stimulus for run {run.name}: add a --stimulus-map row or a stim_file to its '
                'events'
            )
        plans.append(_plan_run(run, layout, fmriprep, inputs, stim, stimulus.dummy_scans))
    return tuple(sorted(plans, key=lambda p: p.name))


@dataclass(frozen=True)
class _Run:
    """A selected raw run: its BOLD file, entities (no metadata) and events file."""

    bold: BIDSFile
    entities: Mapping[str, Any]
    events: Path | None

    @property
    def name(self) -> str:
        return run_name(self.entities)


def _layout(
    root: Path, *, derivatives: bool = False, database_path: Path | None = None
) -> BIDSLayout:
    what = 'fMRIPrep derivatives' if derivatives else 'BIDS dataset'
    if not (root / 'dataset_description.json').is_file():
        raise MissingInputError(f'{root} is not a {what}: it has no dataset_description.json')
    kwargs: dict[str, Any] = {'validate': False}
    if derivatives:
        kwargs['config'] = ['bids', 'derivatives']
        kwargs['is_derivative'] = True
    if database_path is not None:
        kwargs['database_path'] = database_path
    try:
        layout = BIDSLayout(root, **kwargs)
    except (ValueError, OSError) as err:  # pybids' BIDSValidationError is a ValueError
        raise InputDataError(f'cannot index the {what} at {root}: {err}') from err
    if Path(layout.root).resolve() != root.resolve():
        raise UsageError(
            f'--bids-database-dir {database_path} indexes {layout.root}, not {root}: give an '
            'empty folder or the database of this dataset'
        )
    return layout


def _select_runs(layout: BIDSLayout, inputs: InputConfig) -> list[_Run]:
    subjects = layout.get_subjects()
    missing = sorted(set(inputs.participant_label) - set(subjects))
    if missing:
        raise MissingInputError(
            f'participant(s) {", ".join(missing)} not found in {inputs.bids_dir} '
            f'(it has: {_listing(subjects)})'
        )
    query = _as_query(inputs.bids_filters.get('bold', {}))
    query |= {'datatype': 'func', 'suffix': 'bold', 'extension': NIFTI}
    for key, values in (('subject', inputs.participant_label), ('session', inputs.session_label),
                        ('task', inputs.task_id)):  # fmt: skip
        if values:
            query[key] = list(values)
    try:
        files = layout.get(**query)
    except (ValueError, TypeError) as err:  # unknown entity in the filter file
        raise UsageError(f'--bids-filter-file: {err}') from err
    unique: dict[tuple[tuple[str, str], ...], BIDSFile] = {}
    for bold in files:  # one entry per run: the echoes of a multi-echo run share it
        unique.setdefault(_run_key(bold.get_entities(metadata=False)), bold)
    if not unique:
        raise NothingSelectedError(
            f'the filters selected no BOLD run in {inputs.bids_dir} (tasks there: '
            f'{_listing(layout.get_tasks())}; sessions: {_listing(layout.get_sessions())}): '
            'check --participant-label, --session-label, -t and --bids-filter-file'
        )
    runs = []
    for key in sorted(unique, key=str):
        bold = unique[key]
        entities = bold.get_entities(metadata=False)
        runs.append(_Run(bold=bold, entities=entities, events=_events_file(layout, bold)))
    names = [run.name for run in runs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:  # entities this app cannot tell apart in its output names
        raise InputDataError(
            f'runs that differ only in entities not used in output names share the name '
            f'{clashes[0]}: select one of them with --bids-filter-file'
        )
    return runs


def _check_cli_stimuli(cli_stimuli: Sequence[tuple[str | None, Path]], tasks: set[str]) -> None:
    for task, path in cli_stimuli:
        if task is None and len(tasks) > 1:
            raise UsageError(
                f'--stimulus {path} names no task but tasks {", ".join(sorted(tasks))} are '
                'selected: write --stimulus TASK=PATH, or select one task with -t'
            )
        if task is not None and task not in tasks:
            raise UsageError(
                f'--stimulus {task}={path}: no selected run has task {task} '
                f'(selected: {", ".join(sorted(tasks))})'
            )


def _check_map_tasks(rows: Sequence[Any], tasks: set[str]) -> None:
    """Refuse a ``--stimulus-map`` row for a task the dataset does not have (a typo)."""
    for row in rows:
        if row.task not in tasks:
            raise InputDataError(
                f'--stimulus-map line {row.line}: task {row.task!r} is not in the dataset '
                f'(tasks here: {", ".join(sorted(tasks))}); fix the task column'
            )


def _run_key(entities: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(entities[k])) for k in RUN_ENTITIES if k in entities)


def _listing(values: Sequence[Any]) -> str:
    values = [str(v) for v in values]
    return ', '.join(values[:12]) + (
        f' and {len(values) - 12} more' if len(values) > 12 else ''
    ) or ('none')


def _events_file(layout: BIDSLayout, bold: BIDSFile) -> Path | None:
    found = layout.get_nearest(
        bold.path, suffix='events', extension='.tsv',
        ignore_strict_entities=['suffix', 'extension', 'datatype', 'echo', 'part'],
    )  # fmt: skip
    return Path(found) if found else None


def _derivative_query(entities: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entities.get(k, Query.NONE) for k in RUN_ENTITIES}


def _plan_run(
    run: _Run,
    layout: BIDSLayout,
    fmriprep: BIDSLayout,
    inputs: InputConfig,
    stim: Stimulus,
    dummy_scans: int | None,
) -> RunPlan:
    name = run.name
    query = _derivative_query(run.entities)
    preproc, res = _preproc_bold(fmriprep, query, inputs, name)
    space_query = {**query, 'space': inputs.space, 'res': res or Query.NONE}
    mask = _one(fmriprep, name, 'brain mask', desc='brain', suffix='mask', extension=NIFTI,
                **space_query)  # fmt: skip
    confounds = _one(fmriprep, name, 'confounds', desc='confounds',
                     suffix=['timeseries', 'regressors'], extension='.tsv', **query)  # fmt: skip

    img = _load_header(preproc, name)
    deriv_meta = _metadata(fmriprep, preproc, name)
    raw_meta = _metadata(layout, Path(run.bold.path), name)
    t_r, tr_warnings = _repetition_time(name, deriv_meta, raw_meta, img)
    n_vols = int(img.shape[3])
    try:
        offset_s, source = acquisition_offset({**raw_meta, **deriv_meta}, t_r)
    except (ValueError, TypeError) as err:
        raise InputDataError(f'{name}: {err}') from err
    nss = _non_steady_state(confounds, n_vols, name)
    warnings = tr_warnings + _check_coverage(stim, n_vols * t_r, name)
    return RunPlan(
        name=name, entities=dict(run.entities), raw_bold=Path(run.bold.path),
        events=run.events, preproc_bold=preproc, mask=mask, confounds=confounds,
        space=inputs.space, res=res, t_r=t_r, n_vols=n_vols, acq_offset_s=offset_s,
        timing_source=source, nss_volumes=nss, dummy_scans=dummy_scans, stimulus=stim,
        warnings=warnings,
    )  # fmt: skip


def _preproc_bold(
    fmriprep: BIDSLayout, query: dict[str, Any], inputs: InputConfig, name: str
) -> tuple[Path, str | None]:
    base = {**query, 'desc': 'preproc', 'suffix': 'bold', 'extension': NIFTI}
    files = fmriprep.get(**base, space=inputs.space)
    if not files:
        spaces = fmriprep.get(**base, return_type='id', target='space')
        if not spaces:
            raise MissingInputError(
                f'{name}: no preprocessed BOLD for this run in {inputs.fmriprep_dir}: run '
                'fMRIPrep on it, or leave it out with --participant-label or --bids-filter-file'
            )
        raise MissingInputError(
            f'{name}: no preprocessed BOLD in space {inputs.space} in {inputs.fmriprep_dir} '
            f'(spaces there: {_listing(sorted(spaces))}): choose one with --space, or run '
            f'fMRIPrep with --output-spaces {inputs.space}'
        )
    by_res: dict[str | None, list[BIDSFile]] = {}
    for file in files:
        res = file.entities.get('res')
        by_res.setdefault(None if res is None else str(res), []).append(file)
    if inputs.res is not None:
        chosen = by_res.get(inputs.res)
        if not chosen:
            present = _listing(sorted(f'res-{r}' if r else '(no res)' for r in by_res))
            raise MissingInputError(
                f'{name}: no preprocessed BOLD at res-{inputs.res} in space {inputs.space} '
                f'(present: {present}): choose one with --res'
            )
        return Path(chosen[0].path), inputs.res
    if len(by_res) > 1:
        present = ', '.join(sorted(f'res-{r}' if r else '(no res)' for r in by_res))
        raise UsageError(
            f'{name}: several resolutions in space {inputs.space} ({present}): choose one with '
            '--res'
        )
    ((res, chosen),) = by_res.items()
    return Path(chosen[0].path), res


def _one(fmriprep: BIDSLayout, name: str, what: str, **query: Any) -> Path:
    files = fmriprep.get(**query)
    if not files:
        raise MissingInputError(
            f'{name}: no fMRIPrep {what} in {fmriprep.root}: rerun fMRIPrep for this run'
        )
    return Path(files[0].path)


def _load_header(path: Path, name: str) -> nb.spatialimages.SpatialImage:
    try:
        img = nb.load(path)
    except Exception as err:  # nibabel raises many kinds for a broken file
        raise InputDataError(
            f'{name}: cannot read {path.name} ({type(err).__name__}: {err}): the file is empty '
            'or corrupt; rerun fMRIPrep for this run'
        ) from err
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise InputDataError(f'{name}: {path.name} is not a 4-D BOLD series (shape {img.shape})')
    return img


def _metadata(layout: BIDSLayout, path: Path, name: str) -> dict[str, Any]:
    try:
        metadata = layout.get_metadata(str(path))
    except (ValueError, TypeError, AttributeError) as err:
        raise InputDataError(f'{name}: cannot read the sidecar of {path.name}: {err}') from err
    if not isinstance(metadata, Mapping):
        raise InputDataError(f'{name}: the sidecar of {path.name} is not a JSON object')
    return dict(metadata)


def _seconds_key(metadata: Mapping[str, Any], key: str, name: str, what: str) -> float | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputDataError(
            f'{name}: {key} of the {what} sidecar is {value!r}: it must be a positive number of '
            'seconds'
        )
    return float(value)


def _repetition_time(
    name: str, deriv_meta: Mapping[str, Any], raw_meta: Mapping[str, Any], img: Any
) -> tuple[float, tuple[str, ...]]:
    """TR (s): the preprocessed sidecar's, else the raw sidecar's, else the NIfTI header's."""
    t_r = _seconds_key(deriv_meta, 'RepetitionTime', name, 'preprocessed BOLD')
    raw_t_r = _seconds_key(raw_meta, 'RepetitionTime', name, 'raw BOLD')
    warnings: tuple[str, ...] = ()
    if t_r is None and raw_t_r is not None:
        t_r = raw_t_r
        warnings = (f'{name}: no RepetitionTime in the preprocessed sidecar: the raw one is used',)
    elif t_r is None:  # last resort: the NIfTI header, often 0 or in ms
        zooms = img.header.get_zooms()
        units = img.header.get_xyzt_units()[1] if hasattr(img.header, 'get_xyzt_units') else 'sec'
        t_r = float(zooms[3]) / (1000.0 if units == 'msec' else 1.0)
        if not 0 < t_r < 100:
            raise InputDataError(
                f'{name}: no RepetitionTime in the BOLD sidecars and none usable in the NIfTI '
                'header: add RepetitionTime (s) to the sidecar'
            )
        warnings = (f'{name}: RepetitionTime {t_r:g} s taken from the NIfTI header',)
    if raw_t_r is not None and abs(raw_t_r - t_r) > TR_TOLERANCE_S:
        raise InputDataError(
            f'{name}: TR mismatch, raw {raw_t_r:g} s vs preprocessed {t_r:g} s: the '
            'derivatives do not belong to this dataset, or a sidecar is wrong'
        )
    return t_r, warnings


def _non_steady_state(confounds: Path, n_vols: int, name: str) -> tuple[int, ...]:
    try:
        table = pd.read_csv(confounds, sep='\t', na_values='n/a')
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputDataError(f'{name}: cannot read {confounds.name}: {err}') from err
    if len(table) != n_vols:
        raise InputDataError(
            f'{name}: {confounds.name} has {len(table)} rows for {n_vols} volumes: confounds and '
            'BOLD come from different fMRIPrep runs'
        )
    columns = [c for c in table.columns if _NSS_COLUMN.match(c)]
    flagged = np.flatnonzero(table[columns].fillna(0).to_numpy().any(axis=1)) if columns else []
    return tuple(int(i) for i in flagged)


def _check_coverage(stim: Stimulus, run_s: float, name: str) -> tuple[str, ...]:
    if stim.onset_s >= run_s:
        raise InputDataError(
            f'{name}: the stimulus onset {stim.onset_s:g} s is after the run, which ends at '
            f'{run_s:g} s: onsets are seconds from the first volume; check '
            f'{stim.origin or "the onset"}'
        )
    if stim.kind != 'movie' or stim.movie is None:
        return ()
    remaining_s = stim.movie.duration_s - stim.start_s
    if remaining_s <= 0:
        raise InputDataError(
            f'{name}: start {stim.start_s:g} s is past the end of {stim.path} '
            f'({stim.movie.duration_s:g} s long): check start in the stimulus map'
        )
    end_s = stim.onset_s + remaining_s
    shown_s = max(0.0, min(end_s, run_s) - max(stim.onset_s, 0.0))
    if shown_s < MIN_MOVIE_COVERAGE * run_s:
        raise InputDataError(
            f'{name}: the movie is on screen for {shown_s:.1f} s of the {run_s:.1f} s run '
            f'(onset {stim.onset_s:g} s, {remaining_s:.1f} s of movie): check the onset, start '
            'and the movie file'
        )
    if end_s < run_s:
        message = (
            f'{name}: the movie ends {run_s - end_s:.1f} s before the run does: modelled as a '
            'blank screen'
        )
        return (message,)
    return ()


def by_subject_and_task(plans: Sequence[RunPlan]) -> dict[tuple[str, str], list[RunPlan]]:
    """Return the runs of each (subject, task), sorted by key, runs in the order given.

    Units are chosen, and runs coupled, per subject and task.
    """
    groups: dict[tuple[str, str], list[RunPlan]] = {}
    for plan in plans:
        key = (str(plan.entities['subject']), str(plan.entities['task']))
        groups.setdefault(key, []).append(plan)
    return dict(sorted(groups.items()))
