"""The subjects' null annotation statistics, as the group level reads them (DESIGN.md 2.6).

Each subject's ``desc-null_annotations.tsv`` holds the annotation statistic of its real map and
of every null map per cluster and network; the group level draws its null from them. Subjects
must have annotated against the same reference networks (name and checksum), and either all or
none of them ran with nulls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_syncact.bids.annotations import null_annotations_path, read_null_annotations
from bids_syncact.bids.participant_outputs import ParticipantMap
from bids_syncact.errors import InputDataError


@dataclass(frozen=True, eq=False)
class SubjectNulls:
    """The null statistics of one layer's subjects (in the order of the maps)."""

    statistics: list[np.ndarray]
    """Per subject ``(1 + N_s, K, n_networks)``: the real map (index 0) and the null maps."""
    networks: list[str]
    reference: str
    reference_checksum: str
    statistic: str

    @property
    def n_nulls(self) -> list[int]:
        """Each subject's number of nulls."""
        return [len(s) - 1 for s in self.statistics]


def annotations_of(item: ParticipantMap) -> Path:
    """Return the annotations table next to a subject's ``stat-coef`` map."""
    return item.path.with_name(
        item.path.name.replace('_stat-coef_boldmap.nii.gz', '_annotations.tsv')
    )


def read_subject_nulls(
    items: Sequence[ParticipantMap], reference_name: str
) -> SubjectNulls | None:
    """Return the subjects' null statistics of one layer, or None when none of them has nulls.

    Parameters
    ----------
    items : sequence of ParticipantMap
        The subjects' maps of one layer.
    reference_name : str
        The group level's ``--reference-networks`` (as resolved): the subjects must match it.

    Raises
    ------
    InputDataError
        One line: a subject without its annotations, with other reference networks than the
        first (name or checksum) or than the group level's, or without nulls while others
        have them.
    """
    layer = f'cnn-{items[0].cnn} layer-{items[0].layer}'
    metas = []
    for item in items:
        path = annotations_of(item)
        if not path.is_file():
            raise InputDataError(
                f'sub-{item.subject} has no {path.name}: rerun its participant level'
            )
        metas.append(json.loads(path.with_suffix('.json').read_text()))
    first = metas[0]
    for item, meta in zip(items, metas, strict=True):
        name = meta.get('ReferenceNetworks')
        if name != reference_name:
            raise InputDataError(
                f'{layer}: sub-{item.subject} was annotated with --reference-networks {name}, '
                f'the group level asks for {reference_name}; rerun the group level with '
                f'--reference-networks {name}, or the participant level with {reference_name}'
            )
        if (meta.get('ReferenceNetworksChecksum'), meta.get('Statistic')) != (
            first.get('ReferenceNetworksChecksum'),
            first.get('Statistic'),
        ):
            raise InputDataError(
                f'{layer}: sub-{item.subject} and sub-{items[0].subject} used different files '
                f'for the reference networks {name}, or another statistic (checksums or Statistic '
                'differ); rerun their '
                'participant level with the same files'
            )
    without = [m.subject for m, meta in zip(items, metas, strict=True)
               if not meta.get('NumberOfNulls')]  # fmt: skip
    if len(without) == len(items):
        return None
    if without:
        raise InputDataError(
            f'{layer}: sub-{without[0]} ran with --n-nulls 0 while sub-'
            f'{next(m.subject for m in items if m.subject not in without)} has nulls; the group '
            f"labels need every subject's nulls: rerun the participant level of "
            f'{", ".join("sub-" + s for s in without)} without --n-nulls 0'
        )
    statistics, networks = [], None
    for item in items:
        path = null_annotations_path(annotations_of(item))
        if not path.is_file():
            raise InputDataError(
                f'sub-{item.subject} has no {path.name}: rerun its participant level'
            )
        stats, units, names, _ = read_null_annotations(path)
        if units != list(item.sidecar['UnitIndices']):
            raise InputDataError(
                f'{path.name} holds other units than its map: rerun the participant level of '
                f'sub-{item.subject}'
            )
        if networks is not None and names != networks:
            raise InputDataError(
                f'{layer}: sub-{item.subject} has other networks than sub-{items[0].subject}; '
                'rerun their participant level with the same reference networks'
            )
        networks = names
        statistics.append(stats)
    return SubjectNulls(
        statistics=statistics,
        networks=list(networks or []),
        reference=str(first.get('ReferenceNetworks')),
        reference_checksum=str(first.get('ReferenceNetworksChecksum')),
        statistic=str(first.get('Statistic')),
    )
