"""Nipype interface of the participant-level annotation: it only loads, calls and saves."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_syncact.bids.annotations import (
    NOT_TESTED,
    STATISTIC_NAMES,
    annotation_sidecar,
    null_annotations_path,
    write_annotations,
    write_null_annotations,
)
from bids_syncact.bids.references import load_reference_networks
from bids_syncact.core.annotation import NO_LABEL, TOP_FRACTION, annotate
from bids_syncact.core.calibration import GROUP_STATISTIC, SUBJECT_STATISTIC, subject_inference

#: Keys of the coefficient map's sidecar the annotation table repeats.
_KEPT = ('Sources', 'UnitIndices', 'CNN', 'Layer', 'Weights', 'FrameRate', 'FrameFit', 'HRF',
         'Alpha', 'AlphaMode', 'ConfoundsStrategy', 'HighPass', 'ConditionNumber', 'RandomSeed',
         'SoftwareVersions', 'UnitClusters', 'UnitClusterSigns', 'UnitClusterMinCorrelation',
         'UnitClusterMaxCrossCorrelation', 'UnitCorrelation', 'UnitClusteringNote')  # fmt: skip


class _AnnotateLayerInputSpec(BaseInterfaceInputSpec):
    map_files = traits.List(File(exists=True), mandatory=True, desc='the layer maps (any stats)')
    sidecar_files = traits.List(File(exists=True), mandatory=True, desc='their sidecars')
    stats = traits.List(traits.Str, mandatory=True, desc="each map's stat")
    mask_file = File(exists=True, mandatory=True, desc='the brain mask the maps are on')
    reference_networks = traits.Str('auto', usedefault=True, desc='--reference-networks')
    source = traits.Str(mandatory=True, desc='BIDS URI of the stat-coef map in OUTPUT_DIR')
    out_path = traits.Str(mandatory=True, desc='the annotations TSV in OUTPUT_DIR')
    network_stats_file = File(exists=True, mandatory=True,
                              desc='statistic of the real and null maps (CoupleLayer)')  # fmt: skip


class _AnnotateLayerOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    null_file = File(desc='the null statistics TSV (with nulls)')


class AnnotateLayer(SimpleInterface):
    """Annotate each cluster's map with the reference networks; write the tables.

    The label comes from the statistic of the real map against those of the null maps
    (:func:`~bids_syncact.core.calibration.subject_inference`); without nulls it is ``n/a``.

    It runs every time (OUTPUT_DIR is not the work dir, and a changed reference file must be
    read again); an unchanged table is not rewritten.
    """

    input_spec = _AnnotateLayerInputSpec
    output_spec = _AnnotateLayerOutputSpec
    _always_run = True

    def _run_interface(self, runtime):
        inputs = self.inputs
        coef = inputs.stats.index('coef')
        mask_img = nib.load(inputs.mask_file)
        data = np.asarray(nib.load(inputs.map_files[coef]).dataobj, dtype=np.float32)
        # voxels left out for lack of signal (NaN) are outside, as for the group's mask
        inside = (np.asarray(mask_img.dataobj) > 0) & np.isfinite(data).all(axis=-1)
        maps = data[inside]
        reference = load_reference_networks(inputs.reference_networks, mask_img, mask=inside)
        networks = reference.in_mask(inside)
        annotations = [annotate(maps[:, k], networks, reference.names)
                       for k in range(maps.shape[1])]  # fmt: skip
        saved = np.load(inputs.network_stats_file)
        stats, n_nulls = saved['statistic'], int(saved['n_nulls'])
        subject_stats = saved['subject_statistic']
        if list(saved['networks']) != list(reference.names) or stats.shape[1] != maps.shape[1]:
            raise RuntimeError('the coupling node annotated other networks or clusters')
        meta = json.loads(Path(inputs.sidecar_files[coef]).read_text())
        common = {key: meta[key] for key in _KEPT if key in meta}
        common['Sources'] = [inputs.source]
        sidecar = annotation_sidecar(common, reference, 'stat-coef, the sparse coefficients',
                                     n_nulls=n_nulls)  # fmt: skip
        units = meta['UnitIndices']
        per_network = {'statistic': subject_stats[0]}
        if n_nulls:
            result = subject_inference(subject_stats)
            labels = [reference.names[b] if ok else NO_LABEL
                      for b, ok in zip(result.best, result.labelled, strict=True)]  # fmt: skip
            per_unit = {'p': result.p.tolist(), 'p_fwe': result.p_fwe.tolist()}
            per_network['statistic_z'] = result.z
            sidecar['Columns'] |= COLUMNS
            null_path = null_annotations_path(Path(inputs.out_path))
            write_null_annotations(
                null_path,
                units,
                reference.names,
                stats,
                saved['max_abs_coef'],
                null_sidecar(common, reference, n_nulls, _z_sidecar(inputs)),
                subject_stats,
            )
            self._results['null_file'] = str(null_path)
        else:
            labels, per_unit = [NOT_TESTED] * len(units), {}
            remove_stale(null_annotations_path(Path(inputs.out_path)))
        sidecar['Columns']['statistic'] = (STATISTIC_NAMES[SUBJECT_STATISTIC]
                                           + ' (-inf: empty map)')  # fmt: skip
        out = write_annotations(Path(inputs.out_path), units, annotations, sidecar,
                                labels=labels, per_unit=per_unit, per_network=per_network,
                                members=meta['UnitClusters'])  # fmt: skip
        self._results['out_file'] = str(out)
        return runtime


#: Columns of a table with nulls.
COLUMNS = {
    'p': "the cluster's calibrated p: (1 + #{null max >= real max}) / (1 + N) of the "
         'standardized statistic, max over networks',
    'p_fwe': 'family-wise p over the clusters and networks of the layer: each null\'s max over '
             'clusters and networks against the cluster\'s real max',
    'statistic_z': 'the statistic standardized by its mean and SD over the real and null maps',
}  # fmt: skip


def null_sidecar(common: dict, reference, n_nulls: int, meta: dict) -> dict:
    """Return the sidecar of the null statistics table."""
    return {
        'Description': (
            f"The annotation statistics of the real map (map 0) and of each of the {n_nulls} "
            'null maps (maps 1..N: circularly shifted dictionaries, solved like the real one), '
            f"per cluster and network: the group's ({STATISTIC_NAMES[GROUP_STATISTIC]} of the "
            f'top {TOP_FRACTION:.0%} |values|) and the subject-level label\'s '
            f'({STATISTIC_NAMES[SUBJECT_STATISTIC]}); and the largest |coefficient| over voxels '
            'of each map and cluster. What the group level draws its null from; the null maps '
            'themselves are not kept'
        ),
        **common,
        'ReferenceNetworks': reference.name,
        'ReferenceNetworksChecksum': reference.checksum,
        'Statistic': GROUP_STATISTIC,
        'SubjectStatistic': SUBJECT_STATISTIC,
        'NumberOfNulls': n_nulls,
        'NullShifts': meta.get('NullShifts'),
        'Columns': {
            'map': '0: the real map; 1..N: the null maps, in the order of NullShifts',
            'unit': "channel index of the cluster's named member", 'network': 'reference network',
            'statistic': STATISTIC_NAMES[GROUP_STATISTIC] + ' (-inf: empty map)',
            'subject_statistic': STATISTIC_NAMES[SUBJECT_STATISTIC] + ' (-inf: empty map)',
            'max_abs_coef': 'largest |coefficient| over voxels of the map and cluster',
        },
    }  # fmt: skip


def _z_sidecar(inputs) -> dict:
    if 'z' not in inputs.stats:
        return {}
    return json.loads(Path(inputs.sidecar_files[inputs.stats.index('z')]).read_text())


def remove_stale(path: Path) -> None:
    """Remove a table (and its sidecar) that this run's settings no longer make."""
    for stale in (path, path.with_suffix('.json')):
        stale.unlink(missing_ok=True)
