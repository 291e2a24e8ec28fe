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

from bids_syncact.bids.annotations import annotation_sidecar, write_annotations
from bids_syncact.bids.references import load_reference_networks
from bids_syncact.core.annotation import annotate

#: Keys of the coefficient map's sidecar the annotation table repeats.
_KEPT = ('Sources', 'UnitIndices', 'CNN', 'Layer', 'Weights', 'FrameRate', 'FrameFit', 'HRF',
         'Alpha', 'AlphaMode', 'ConfoundsStrategy', 'HighPass', 'ConditionNumber', 'RandomSeed',
         'SoftwareVersions')  # fmt: skip


class _AnnotateLayerInputSpec(BaseInterfaceInputSpec):
    map_files = traits.List(File(exists=True), mandatory=True, desc='the layer maps (any stats)')
    sidecar_files = traits.List(File(exists=True), mandatory=True, desc='their sidecars')
    stats = traits.List(traits.Str, mandatory=True, desc="each map's stat")
    mask_file = File(exists=True, mandatory=True, desc='the brain mask the maps are on')
    reference_networks = traits.Str('auto', usedefault=True, desc='--reference-networks')
    source = traits.Str(mandatory=True, desc='BIDS URI of the stat-coef map in OUTPUT_DIR')
    out_path = traits.Str(mandatory=True, desc='the annotations TSV in OUTPUT_DIR')


class _AnnotateLayerOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class AnnotateLayer(SimpleInterface):
    """Annotate each unit's coefficient map with the reference networks; write the table.

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
        meta = json.loads(Path(inputs.sidecar_files[coef]).read_text())
        common = {key: meta[key] for key in _KEPT if key in meta}
        common['Sources'] = [inputs.source]
        out = write_annotations(
            Path(inputs.out_path),
            meta['UnitIndices'],
            annotations,
            annotation_sidecar(common, reference, 'stat-coef, the sparse coefficients'),
        )
        self._results['out_file'] = str(out)
        return runtime
