"""BIDS-derivative names, the dataset description, and the synchronized activations per run.

Names follow DESIGN.md section 5 (entities in order, labels made alphanumeric from module names,
the original names kept in the sidecars). Every table is written with its sidecar first and the
data last, each through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from filelock import FileLock

from bids_syncact import __version__
from bids_syncact.bids.cache import Features, bids_label
from bids_syncact.bids.io import atomic_write_json, atomic_write_text
from bids_syncact.core.sync import Segment, synchronize_segments
from bids_syncact.core.timing import acquisition_times

if TYPE_CHECKING:
    from bids_syncact.bids.unitclusters import LayerClusters

BIDS_VERSION = '1.10.0'
CODE_URL = 'https://github.com/bids-syncact/bids-syncact'
#: Not BIDS files: the feature cache's locks, and the work files of concurrent writers.
BIDSIGNORE = ('features/*.lock', '.*.tmp', 'logs/', 'sub-*/log/', '*.html')
#: The pybids configuration of our entities (``cnn``, ``layer``, ``stat``, ``stim``, ``hash``):
#: ``BIDSLayout(out, config=['bids', 'derivatives', PYBIDS_CONFIG], validate=False)``.
PYBIDS_CONFIG = Path(__file__).resolve().parents[1] / 'data' / 'pybids_config.json'
TIME_COLUMN = 'acquisition_time'


def unit_column(index: int) -> str:
    """Column name of a unit (channel ``index``) in every table.

    >>> unit_column(9)
    'unit0009'
    """
    return f'unit{index:04d}'


def sidecar_path(path: Path | str) -> Path:
    """Return the JSON sidecar of a data file (``.nii.gz``, ``.nii`` or ``.tsv``).

    >>> sidecar_path('/out/sub-01_stat-coef_boldmap.nii.gz').name
    'sub-01_stat-coef_boldmap.json'
    """
    path = Path(path)
    stem = path.name.removesuffix('.gz').removesuffix('.nii').removesuffix('.tsv')
    return path.with_name(stem + '.json')


def subject_dir(output_dir: Path, entities: Mapping[str, Any]) -> Path:
    """``OUTPUT_DIR/sub-<s>[/ses-<s>]/func``."""
    folder = output_dir / f'sub-{entities["subject"]}'
    if entities.get('session') is not None:
        folder /= f'ses-{entities["session"]}'
    return folder / 'func'


def sync_path(output_dir: Path, run_name: str, entities: Mapping[str, Any], cnn: str,
              layer: str) -> Path:  # fmt: skip
    """Where a run's synchronized activations of one layer go (the ``.tsv``).

    >>> sync_path(Path('/out'), 'sub-01_task-movie_run-1', {'subject': '01'}, 'alexnet',
    ...           'features.1').as_posix()
    '/out/sub-01/func/sub-01_task-movie_run-1_cnn-alexnet_layer-features1_desc-sync_timeseries.tsv'
    """
    name = f'{run_name}_cnn-{bids_label(cnn)}_layer-{bids_label(layer)}_desc-sync_timeseries.tsv'
    return subject_dir(output_dir, entities) / name


def bids_uri(path: Path | str, links: Mapping[str, Path]) -> str:
    """Return a BIDS URI for ``path`` in the innermost linked dataset, else the plain path.

    >>> links = {'raw': Path('/data'), 'fmriprep': Path('/data/derivatives/fmriprep')}
    >>> bids_uri('/data/sub-01/func/x.nii.gz', links)
    'bids:raw:sub-01/func/x.nii.gz'
    >>> bids_uri('/data/derivatives/fmriprep/sub-01/x.nii.gz', links)
    'bids:fmriprep:sub-01/x.nii.gz'
    """
    path = Path(path)
    for name, root in sorted(links.items(), key=lambda item: -len(item[1].parts)):
        if path.is_relative_to(root):
            return f'bids:{name}:{path.relative_to(root).as_posix()}'
    return str(path)


def dataset_links(bids_dir: Path, fmriprep_dir: Path) -> dict[str, Path]:
    """Return the datasets sidecars point into (``bids:<name>:...`` URIs)."""
    return {'raw': bids_dir, 'fmriprep': fmriprep_dir}


def write_dataset_description(output_dir: Path, bids_dir: Path, fmriprep_dir: Path) -> Path:
    """Write ``dataset_description.json`` and ``.bidsignore`` once, under a file lock.

    An existing description is kept (concurrent participant jobs share the folder).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / 'dataset_description.json'
    with FileLock(str(output_dir / '.dataset_description.lock'), timeout=600):
        if not path.exists():
            generated_by: dict[str, Any] = {
                'Name': 'bids-syncact', 'Version': __version__, 'CodeURL': CODE_URL,
            }  # fmt: skip
            # The image sets BIDS_SYNCACT_CONTAINER=docker: its tag is the package's version.
            container = os.environ.get('BIDS_SYNCACT_CONTAINER')
            if container:
                kind, _, tag = container.partition(' ')
                tag = tag or f'localhost/bids-syncact:{__version__}'
                generated_by['Container'] = {'Type': kind, 'Tag': tag}
            links = dataset_links(bids_dir, fmriprep_dir)
            atomic_write_json(path, {
                'Name': 'bids-syncact: CNN units coupled with functional brain networks',
                'BIDSVersion': BIDS_VERSION,
                'DatasetType': 'derivative',
                'GeneratedBy': [generated_by],
                'SourceDatasets': [{'URL': root.as_uri()} for root in links.values()],
                'DatasetLinks': {name: root.as_uri() for name, root in links.items()},
            })  # fmt: skip
        ignore = output_dir / '.bidsignore'
        if not ignore.exists():
            atomic_write_text(ignore, '\n'.join(BIDSIGNORE) + '\n')
    return path


def run_segments(
    stimulus: Mapping[str, Any],
    features: Mapping[str, Features],
    sha256_of: Mapping[str, str],
    units: np.ndarray,
) -> list[Segment]:
    """Return what a run showed, as segments of the chosen units (movie: one; sequence: one per item).

    Parameters
    ----------
    stimulus : mapping
        The run's ``stimulus`` entry of the plan.
    features : mapping
        Feature sets of one layer by stimulus sha256 (all channels).
    sha256_of : mapping
        sha256 of each stimulus file, by path.
    units : ndarray of int
        Channels kept.
    """

    def of(path: str) -> Features:
        return features[sha256_of[path]]

    if stimulus['kind'] == 'movie':
        movie = of(stimulus['path'])
        return [Segment(movie.acts[:, units], movie.frame_times, onset=stimulus['onset_s'],
                        start=stimulus['start_s'], end=stimulus['duration_s'])]  # fmt: skip
    return [
        Segment(
            of(item['path']).acts[:, units],
            of(item['path']).frame_times,
            onset=item['onset_s'],
            end=item['duration_s'],
        )
        for item in stimulus['items']
    ]


def synchronized_table(
    plan: Mapping[str, Any],
    features: Mapping[str, Features],
    sha256_of: Mapping[str, str],
    units: np.ndarray,
    hrf: str,
) -> pd.DataFrame:
    """Return a run's synchronized activations: one row per stored volume (dummies included).

    The first column is each volume's acquisition time on the scanner clock (s); the volumes
    to drop are listed in the sidecar and removed, after sampling, by the denoising step.
    """
    times = acquisition_times(plan['n_vols'], plan['RepetitionTime'], plan['acq_offset_s'])
    segments = run_segments(plan['stimulus'], features, sha256_of, units)
    blank = next(iter(features.values())).blank[units]
    synced = synchronize_segments(segments, blank, acq_times=times, hrf=hrf)  # type: ignore[arg-type]
    table = pd.DataFrame(synced, columns=[unit_column(int(i)) for i in units])
    table.insert(0, TIME_COLUMN, times)
    return table


def write_table(path: Path, table: pd.DataFrame, sidecar: Mapping[str, Any]) -> Path:
    """Write a TSV (missing values as ``n/a``) and its JSON sidecar, the sidecar first, atomically."""
    atomic_write_json(path.with_suffix('.json'), json.loads(json.dumps(sidecar, default=str)))
    return atomic_write_text(
        path, table.to_csv(sep='\t', index=False, float_format='%.9g', na_rep='n/a')
    )


def sync_sidecar(
    plan: Mapping[str, Any],
    *,
    cnn: str,
    layer: str,
    clusters: LayerClusters,
    sources: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the sidecar of a run's synchronized activations (DESIGN.md section 5)."""
    stimulus = plan['stimulus']
    position = {int(c): j for j, c in enumerate(clusters.columns)}
    return {
        'Description': (
            f'Activations of {cnn} {layer} units over what the run showed, convolved with the '
            "HRF and sampled at each volume's acquisition time; one row per stored volume and "
            "one column per member of a kept unit cluster (UnitColumns); cluster k's regressor "
            'is the sum over its members UnitClusters[k] of UnitClusterWeights[k] times their '
            'columns'
        ),
        'Sources': list(sources),
        'CNN': cnn,
        'Layer': layer,
        'UnitColumns': [int(i) for i in clusters.columns],
        **clusters.to_sidecar(),
        'UnitClusterWeights': [
            [float(clusters.weights[position[int(i)], k]) for i in members]
            for k, members in enumerate(clusters.clusters.members)
        ],
        **settings,
        'RepetitionTime': plan['RepetitionTime'],
        'TimingSource': plan['TimingSource'],
        'AcquisitionOffset': plan['acq_offset_s'],
        'NonSteadyStateVolumes': plan['drop_volumes'],
        'Stimulus': stimulus,
        TIME_COLUMN: {
            'Description': 'acquisition time of the volume on the scanner clock: i * TR + '
            'AcquisitionOffset, i the original volume index',
            'Units': 's',
        },
    }
