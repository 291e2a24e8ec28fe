"""Annotation tables: each unit's map against each reference network (DESIGN.md 2.5 and 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bids_syncact.bids.boldmaps import boldmap_path
from bids_syncact.bids.derivatives import write_table
from bids_syncact.bids.references import ReferenceNetworks
from bids_syncact.core.annotation import LABEL_LEVEL, TOP_FRACTION, Annotation


def annotations_path(
    output_dir: Path, entities: Mapping[str, Any], *, space: str, res: str | None, cnn: str,
    layer: str,
) -> Path:  # fmt: skip
    """Where a subject's annotations of one layer go (the space of the maps they annotate).

    >>> annotations_path(Path('/out'), {'subject': '01', 'task': 'movie'}, space='MNI',
    ...                  res=None, cnn='alexnet', layer='features.1').name
    'sub-01_task-movie_space-MNI_cnn-alexnet_layer-features1_annotations.tsv'
    """
    coef = boldmap_path(output_dir, entities, space=space, res=res, cnn=cnn, layer=layer,
                        stat='coef')  # fmt: skip
    return coef.with_name(coef.name.replace('_stat-coef_boldmap.nii.gz', '_annotations.tsv'))


def write_annotations(
    path: Path, units: Sequence[int], annotations: Sequence[Annotation],
    sidecar: Mapping[str, Any], per_unit: Mapping[str, Sequence[Any]] | None = None,
) -> Path:  # fmt: skip
    """Write one row per unit and network (the unit's label repeated on its rows), atomically.

    ``per_unit`` adds columns of one value per unit (the group's consistency), repeated on the
    unit's rows like its label.
    """
    per_unit = per_unit or {}
    rows = []
    for k, (unit, annotation) in enumerate(zip(units, annotations, strict=True)):
        extra = {column: values[k] for column, values in per_unit.items()}
        rows += [{'unit': unit, 'label': annotation.label, 'n_top': annotation.n_top, **extra,
                  **row} for row in annotation.rows()]  # fmt: skip
    return write_table(path, pd.DataFrame(rows), sidecar)


def annotation_sidecar(common: Mapping[str, Any], reference: ReferenceNetworks,
                       statistic: str) -> dict[str, Any]:  # fmt: skip
    """Return the sidecar of an annotations table."""
    return {
        'Description': (
            f'Each unit\'s map ({statistic}) against each reference network: the top '
            f'{TOP_FRACTION:.0%} |values| within the mask (non-zero only) form F; enrichment = '
            '(|F&N|/|F|)/(|N|/|M|), one-sided hypergeometric p, Bonferroni over networks; label = '
            'the network with the smallest p when its Bonferroni p < '
            f'{LABEL_LEVEL:g}, else none; Dice and '
            'Pearson r for reference. NaN p (n/a) for an empty map. The p-values treat voxels '
            'as independent: spatially smooth maps make them too small, so read labels as '
            'descriptive'
        ),
        **common,
        'ReferenceNetworks': reference.name,
        'ReferenceNetworksDescription': reference.description,
        'ReferenceNetworksSource': reference.source,
        'Columns': {
            'unit': 'channel index (UnitIndices)', 'label': "the unit's label (or none)",
            'n_top': '|F|', 'network': 'reference network', 'size': '|N| within the mask',
            'overlap': '|F&N|', 'enrichment': '(|F&N|/|F|)/(|N|/|M|)',
            'p': 'hypergeometric P(X >= |F&N|)', 'p_bonferroni': 'min(1, p x networks)',
            'dice': '2|F&N|/(|F|+|N|)', 'correlation': 'Pearson r with the network map',
            'is_label': 'whether this network is the label',
        },
    }  # fmt: skip
