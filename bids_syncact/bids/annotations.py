"""Annotation tables: each unit's map against each reference network (DESIGN.md 2.5 and 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_syncact.bids.boldmaps import boldmap_path
from bids_syncact.bids.derivatives import write_table
from bids_syncact.bids.references import ReferenceNetworks
from bids_syncact.core.annotation import TOP_FRACTION, Annotation
from bids_syncact.core.calibration import GROUP_STATISTIC, LABEL_LEVEL, SUBJECT_STATISTIC


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


#: The label of every cluster when there are no nulls to calibrate it (``--n-nulls 0``).
NOT_TESTED = 'n/a'


def write_annotations(
    path: Path, units: Sequence[int], annotations: Sequence[Annotation],
    sidecar: Mapping[str, Any], *, labels: Sequence[str], members: Sequence[Sequence[int]],
    per_unit: Mapping[str, Sequence[Any]] | None = None,
    per_network: Mapping[str, np.ndarray] | None = None,
) -> Path:  # fmt: skip
    """Write one row per cluster and network (the cluster's label repeated on its rows).

    ``labels`` are the calibrated labels (:mod:`bids_syncact.core.calibration`), never the
    descriptive hypergeometric p's. ``per_unit`` adds columns of one value per cluster,
    ``per_network`` columns of one value per cluster and network (``(K, n_networks)``).
    ``members`` are each cluster's channel indices, the named member first (``UnitClusters``).
    """
    per_unit = per_unit or {}
    per_network = per_network or {}
    rows = []
    for k, (unit, annotation) in enumerate(zip(units, annotations, strict=True)):
        extra = {column: values[k] for column, values in per_unit.items()}
        for i, row in enumerate(annotation.rows()):
            rows.append({
                'unit': unit, 'members': ','.join(str(int(i)) for i in members[k]),
                'label': labels[k], **extra, 'n_top': annotation.n_top,
                'network': row['network'],
                **{column: values[k][i] for column, values in per_network.items()},
                'size': row['size'], 'overlap': row['overlap'], 'enrichment': row['enrichment'],
                'p_hypergeometric': row['p'], 'dice': row['dice'],
                'correlation': row['correlation'], 'is_label': row['network'] == labels[k],
            })  # fmt: skip
    return write_table(path, pd.DataFrame(rows), sidecar)


def write_null_annotations(
    path: Path, units: Sequence[int], networks: Sequence[str], statistic: np.ndarray,
    max_abs_coef: np.ndarray, sidecar: Mapping[str, Any], subject_statistic: np.ndarray,
) -> Path:  # fmt: skip
    """Write the statistics of the real (map 0) and every null map, per cluster and network.

    Parameters
    ----------
    statistic : ndarray of shape (1 + N, K, n_networks)
        The group's statistic (:data:`~bids_syncact.core.calibration.GROUP_STATISTIC`).
    max_abs_coef : ndarray of shape (1 + N, K)
        The largest ``|coefficient|`` over voxels of each map and cluster.
    subject_statistic : ndarray of shape (1 + N, K, n_networks)
        The subject-level label's (:data:`~bids_syncact.core.calibration.SUBJECT_STATISTIC`).
    """
    n_maps, n_units, n_networks = statistic.shape
    index = np.indices((n_maps, n_units, n_networks)).reshape(3, -1)
    table = pd.DataFrame({
        'map': index[0], 'unit': np.asarray(units)[index[1]],
        'network': np.asarray(networks, dtype=object)[index[2]],
        'statistic': statistic.reshape(-1),
        'subject_statistic': np.asarray(subject_statistic).reshape(-1),
        'max_abs_coef': np.asarray(max_abs_coef)[index[0], index[1]],
    })  # fmt: skip
    return write_table(path, table, sidecar)


def read_null_annotations(path: Path) -> tuple[np.ndarray, list[int], list[str], np.ndarray]:
    """Return ``statistic`` ``(1 + N, K, n_networks)``, the units, the networks, ``max_abs_coef``.

    The inverse of :func:`write_null_annotations` (``-inf`` for an empty map reads back).
    """
    table = pd.read_csv(path, sep='\t', keep_default_na=False,
                        dtype={'network': str, 'statistic': float})  # fmt: skip
    units = list(dict.fromkeys(int(u) for u in table['unit']))
    networks = list(dict.fromkeys(table['network']))
    n_maps = int(table['map'].max()) + 1
    shape = (n_maps, len(units), len(networks))
    if len(table) != np.prod(shape):
        raise ValueError(f'{path.name}: {len(table)} rows, not {shape} maps x units x networks')
    statistic = table['statistic'].to_numpy(np.float64).reshape(shape)
    max_abs = table['max_abs_coef'].to_numpy(np.float64).reshape(shape)[:, :, 0]
    return statistic, units, networks, max_abs


def null_annotations_path(annotations: Path) -> Path:
    """Where the null statistics of an annotations table go.

    >>> null_annotations_path(Path('sub-01_task-a_cnn-x_layer-y_annotations.tsv')).name
    'sub-01_task-a_cnn-x_layer-y_desc-null_annotations.tsv'
    """
    return annotations.with_name(
        annotations.name.replace('_annotations.tsv', '_desc-null_annotations.tsv')
    )


def annotation_sidecar(common: Mapping[str, Any], reference: ReferenceNetworks,
                       statistic: str, *, n_nulls: int) -> dict[str, Any]:  # fmt: skip
    """Return the sidecar of an annotations table."""
    if n_nulls:
        labelling = (
            f"label = the network of largest standardized statistic when the cluster's "
            f'calibrated p < {LABEL_LEVEL:g}, else none: the {STATISTIC_NAMES[SUBJECT_STATISTIC]} '
            f'is computed against each network on the real map and on each of the '
            f'{n_nulls} null maps (circularly shifted dictionaries, solved like the real one); '
            "each network's statistic is standardized by its mean and SD over all maps; p = "
            '(1 + #{null max >= real max}) / (1 + N), max over networks, ties counted'
        )
    else:
        labelling = (
            'label = n/a for every cluster: the participant level ran with --n-nulls 0, so no '
            'null calibrates the statistic; the hypergeometric p treats voxels as independent '
            'and is anti-conservative for smooth maps, so it labels nothing'
        )
    return {
        'Description': (
            f'Each cluster\'s map ({statistic}) against each reference network: the top '
            f'{TOP_FRACTION:.0%} |values| within the mask (non-zero only) form F; {labelling}. '
            'Enrichment, the hypergeometric p, Dice and Pearson r are descriptive only '
            '(Markello and Misic 2021, NeuroImage 236)'
        ),
        **common,
        'ReferenceNetworks': reference.name,
        'ReferenceNetworksChecksum': reference.checksum,
        'ReferenceNetworksDescription': reference.description,
        'ReferenceNetworksSource': reference.source,
        'Statistic': GROUP_STATISTIC,
        'SubjectStatistic': SUBJECT_STATISTIC,
        'NumberOfNulls': n_nulls,
        'LabelLevel': LABEL_LEVEL,
        'Columns': {
            'unit': 'channel index of the cluster\'s named member (UnitIndices)',
            'members': "the cluster's channel indices, comma-separated, the named member first "
                       '(UnitClusters; signs in UnitClusterSigns)',
            'label': 'the calibrated label: a network, none, or n/a without nulls',
            'n_top': '|F|', 'network': 'reference network', 'size': '|N| within the mask',
            'overlap': '|F&N|', 'enrichment': '(|F&N|/|F|)/(|N|/|M|), descriptive',
            'p_hypergeometric': 'hypergeometric P(X >= |F&N|), descriptive: voxels are not '
                                'independent, so it is far too small for smooth maps',
            'dice': '2|F&N|/(|F|+|N|), descriptive',
            'correlation': 'Pearson r with the network map, descriptive',
            'is_label': 'whether this network is the label',
        },
    }  # fmt: skip


#: How sidecars name each statistic.
STATISTIC_NAMES = {
    'logp': '-log10 one-sided hypergeometric p',
    'enrichment': 'enrichment (|F&N|/|F|)/(|N|/|M|)',
    'contrast': 'mean |coefficient| in the network minus outside it (all voxels of the mask)',
}
