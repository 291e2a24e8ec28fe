"""The group level's input: the participant outputs in OUTPUT_DIR, found with pybids.

Every subject's ``stat-coef`` maps are grouped by task, space, resolution, CNN and layer, and
refused (exit 65) unless every subject was processed the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_syncact.bids.cache import bids_label
from bids_syncact.bids.derivatives import PYBIDS_CONFIG, sidecar_path
from bids_syncact.config import InputConfig
from bids_syncact.core.group import MIN_SUBJECTS
from bids_syncact.errors import InputDataError, MissingInputError

LOGGER = logging.getLogger('bids_syncact.group')

#: Sidecar settings that must be the same for every subject of a group analysis.
SAME_SETTINGS = (
    'CNN', 'Layer', 'UnitIndices', 'Weights', 'AlphaMode', 'FrameRate', 'FrameFit', 'HRF',
    'MaxUnits', 'ConfoundsStrategy', 'HighPass', 'SmoothingFWHM', 'Alpha', 'UnitCorrelation',
    'UnitClusters', 'UnitClusterSigns',
)  # fmt: skip


@dataclass(frozen=True)
class ParticipantMap:
    """One subject's ``stat-coef`` map of one layer, with its sidecar."""

    subject: str
    session: str | None
    task: str
    space: str
    res: str | None
    cnn: str
    layer: str
    """The ``layer-`` label (the module name is the sidecar's ``Layer``)."""
    path: Path
    sidecar: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str | None, str, str]:
        """What a group map pools over subjects: task, space, resolution, CNN and layer."""
        return self.task, self.space, self.res, self.cnn, self.layer


def collect_participant_maps(output_dir: Path, inputs: InputConfig,
                             cnns: Sequence[str] = ()) -> dict[tuple, list[ParticipantMap]]:  # fmt: skip
    """Return the subjects' coefficient maps, grouped by :attr:`ParticipantMap.key`.

    Parameters
    ----------
    output_dir : Path
        OUTPUT_DIR of the participant level.
    inputs : InputConfig
        ``--participant-label``, ``--session-label``, ``-t/--task-id``, ``--space`` and
        ``--res`` select the maps, as at the participant level.
    cnns : sequence of str
        ``--cnn``: only these CNNs (all when empty).

    Raises
    ------
    MissingInputError
        No participant output, a selected subject without any, or fewer than
        :data:`~bids_syncact.core.group.MIN_SUBJECTS` subjects.
    InputDataError
        Subjects processed differently (:func:`check_same_settings`), or a subject with maps
        of several sessions of one task (select one with ``--session-label``).
    """
    from bids.layout import Query  # pybids: imported on demand

    layout = output_layout(output_dir)
    wanted = [s.removeprefix('sub-') for s in inputs.participant_label]
    query: dict[str, Any] = {'space': inputs.space}
    for entity, values in (('subject', wanted), ('task', inputs.task_id),
                           ('cnn', [bids_label(c) for c in cnns])):  # fmt: skip
        if values:
            query[entity] = list(values)
    if inputs.session_label:  # the selected sessions, and subjects without sessions
        query['session'] = [*(s.removeprefix('ses-') for s in inputs.session_label), Query.NONE]
    if inputs.res:
        query['res'] = inputs.res
    files = layout.get(suffix='boldmap', stat='coef', extension='.nii.gz', **query)
    maps = [_participant_map(f) for f in files if f.entities.get('subject')]
    found = sorted({m.subject for m in maps})
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise MissingInputError(
            f'no participant outputs of sub-{missing[0]} in {output_dir} (space {inputs.space}): '
            'run the participant level for it, or leave it out of --participant-label'
        )
    if len(found) < MIN_SUBJECTS:
        raise MissingInputError(
            f'the group level needs at least {MIN_SUBJECTS} subjects with participant outputs; '
            f'{output_dir} has {len(found)} in space {inputs.space} '
            f'({", ".join("sub-" + s for s in found) or "none"}): run the participant level for '
            'more subjects'
        )
    resolutions = sorted({m.res or 'native' for m in maps})
    if len(resolutions) > 1:
        raise InputDataError(
            f'{output_dir} has maps at resolutions {", ".join(resolutions)} of {inputs.space}: '
            'select one with --res'
        )
    groups: dict[tuple, list[ParticipantMap]] = {}
    for item in sorted(maps, key=lambda m: (m.key, m.subject, m.session or '')):
        groups.setdefault(item.key, []).append(item)
    check_same_settings(groups, found)
    return groups


def output_layout(output_dir: Path):
    """Return a pybids layout of OUTPUT_DIR with the shipped config (no metadata indexing).

    Raises
    ------
    MissingInputError
        When OUTPUT_DIR has no ``dataset_description.json`` (nothing ran into it).
    InputDataError
        When pybids cannot read it as a dataset.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer
    from bids.exceptions import BIDSValidationError

    if not (output_dir / 'dataset_description.json').is_file():
        raise MissingInputError(
            f'OUTPUT_DIR {output_dir} holds no participant outputs (no dataset_description.json):'
            ' run the participant level into it first'
        )
    try:
        return BIDSLayout(
            output_dir, config=['bids', 'derivatives', str(PYBIDS_CONFIG)],
            indexer=BIDSLayoutIndexer(validate=False, index_metadata=False),
        )  # fmt: skip
    except BIDSValidationError as err:
        raise InputDataError(
            f'OUTPUT_DIR {output_dir} is not a dataset pybids can read ({err}); give the folder '
            'the participant level wrote'
        ) from None


def _participant_map(bids_file) -> ParticipantMap:
    entities = bids_file.entities
    path = Path(bids_file.path)
    json_path = sidecar_path(path)
    try:
        sidecar = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        raise InputDataError(
            f'{path.name}: cannot read its sidecar {json_path.name} ({err}): rerun the '
            'participant level of this subject'
        ) from err
    return ParticipantMap(
        subject=entities['subject'], session=entities.get('session'), task=entities['task'],
        space=entities.get('space', ''),
        res=entities.get('res'), cnn=entities['cnn'], layer=entities['layer'], path=path,
        sidecar=sidecar,
    )  # fmt: skip


def check_same_settings(groups: dict[tuple, list[ParticipantMap]], subjects: list[str]) -> None:
    """Refuse subjects that differ in what a group map pools: layers, grid or settings.

    Every subject must have a map of every (task, space, CNN, layer) any subject has, on one
    grid (shape and affine), with the same :data:`SAME_SETTINGS`.

    Raises
    ------
    InputDataError
        One line naming the first subject that differs, how, and what to do.
    """
    rerun = 'rerun the participant level of every subject with the same settings'
    for key, items in groups.items():
        name = f'task-{key[0]} space-{key[1]} cnn-{key[3]} layer-{key[4]}'
        have = [m.subject for m in items]
        twice = sorted({s for s in have if have.count(s) > 1})
        if twice:
            sessions = sorted({m.session or 'none' for m in items if m.subject == twice[0]})
            raise InputDataError(
                f'sub-{twice[0]} has {name} maps of sessions {", ".join(sessions)}: the group '
                'test needs one map per subject; select a session with --session-label'
            )
        if set(have) != set(subjects):
            lacking = min(set(subjects) - set(have))
            raise InputDataError(
                f'sub-{lacking} has no {name} map while sub-{items[0].subject} has one: subjects '
                f'differ in space, CNNs or layers; {rerun}, or select subjects with '
                '--participant-label'
            )
        old = next((m for m in items if m.sidecar.get('UnitClusters') is None), None)
        if old is not None:
            raise InputDataError(
                f'{name}: sub-{old.subject} has no UnitClusters (made by an older bids-syncact); '
                f'{rerun}'
            )
        first = items[0]
        grid = _grid(first.path)
        for item in items[1:]:
            for setting in SAME_SETTINGS:
                mine, theirs = _setting(item.sidecar, setting), _setting(first.sidecar, setting)
                if mine != theirs:
                    raise InputDataError(
                        f'{name}: sub-{item.subject} differs from sub-{first.subject} in '
                        f'{setting} ({_first_difference(mine, theirs)}); {rerun}'
                    )
            other = _grid(item.path)
            if other[0] != grid[0] or not np.allclose(other[1], grid[1], atol=1e-4):
                raise InputDataError(
                    f'{name}: sub-{item.subject} is on another grid than sub-{first.subject} '
                    f'(shape {other[0]} vs {grid[0]}); {rerun}'
                )


def _setting(sidecar: dict[str, Any], setting: str) -> Any:
    """Return what must agree: weights by kind, name and checksum (not where the file was)."""
    value = sidecar.get(setting)
    if setting == 'Weights' and isinstance(value, dict):
        return {key: value.get(key) for key in ('Kind', 'Name', 'Sha256', 'Seed')}
    if setting == 'Alpha' and sidecar.get('AlphaMode') != 'fixed':
        return None  # chosen per subject by cross-validation: may differ
    return value


def _first_difference(mine: Any, theirs: Any) -> str:
    """Say where two settings differ: the first differing item of two lists, else both.

    >>> _first_difference([[1, 2], [3]], [[1, 2], [3, 4]])
    'item 1: [3] vs [3, 4]'
    """
    if isinstance(mine, list) and isinstance(theirs, list):
        for k, (a, b) in enumerate(zip(mine, theirs, strict=False)):
            if a != b:
                return f'item {k}: {_short(a)} vs {_short(b)}'
        return f'{len(mine)} vs {len(theirs)} items'
    return f'{_short(mine)} vs {_short(theirs)}'


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    header = nib.load(path).header  # the header only: no voxel is read
    return tuple(int(n) for n in header.get_data_shape()[:3]), header.get_best_affine()


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + '...'
