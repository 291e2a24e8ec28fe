"""Nipype interfaces of the brain side and the coupling: they only load, call and save.

``BrainMask`` (per subject and task), ``DenoiseBold`` (per run), ``StackRuns`` (per subject and
task) and ``CoupleLayer`` (per subject, task, CNN and layer) work in their node folders of the
work dir, so a rerun finds them done; ``WriteBoldmaps`` copies the maps into OUTPUT_DIR and runs
every time (a copy of identical bytes is skipped).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_syncact.bids.bold import clean_spec_for_run, intersect_run_masks
from bids_syncact.bids.boldmaps import boldmap_bytes, write_boldmap
from bids_syncact.bids.derivatives import sidecar_path, unit_column
from bids_syncact.bids.io import PagedArray
from bids_syncact.bids.references import load_reference_networks
from bids_syncact.bids.runs import clean_bold, load_clean_spec, save_clean_spec, stack_runs
from bids_syncact.bids.unitclusters import read_sync_tables
from bids_syncact.core.coupling import condition_number, variance_inflation
from bids_syncact.core.fbn import LayerFit, clean_dictionary, fit_layer
from bids_syncact.core.nulls import FWE_LEVEL, MIN_SHIFT_S, fwe_minimum_nulls
from bids_syncact.core.threads import limited_threads
from bids_syncact.interfaces.threads import record_threads

LOGGER = logging.getLogger('bids_syncact.coupling')


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    mask_files = traits.List(File(exists=True), mandatory=True, desc="each run's brain mask")


class _BrainMaskOutputSpec(TraitedSpec):
    mask_file = File(exists=True, desc='voxels inside every run mask')


class BrainMask(SimpleInterface):
    """Intersect the brain masks of a subject's runs of one task."""

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        out = Path(runtime.cwd) / 'brain_mask.nii.gz'
        intersect_run_masks([Path(p) for p in self.inputs.mask_files]).to_filename(out)
        self._results['mask_file'] = str(out)
        return runtime


class _DenoiseBoldInputSpec(BaseInterfaceInputSpec):
    run_plan = traits.Dict(mandatory=True, desc="the run's entry of the plan")
    # the files again as File inputs: a changed fMRIPrep output (size or time) reruns the node
    bold_file = File(exists=True, mandatory=True, desc="fMRIPrep's preprocessed BOLD")
    confounds_file = File(exists=True, mandatory=True, desc='its confounds TSV')
    mask_file = File(exists=True, mandatory=True)
    confounds_strategy = traits.Enum('simple', 'scrubbing', 'compcor', 'none', mandatory=True)
    high_pass = traits.Either(None, traits.Float, usedefault=True, desc='cosine high-pass (Hz)')
    smoothing_fwhm = traits.Either(None, traits.Float, usedefault=True, desc='mm FWHM')
    n_threads = traits.Int(1, usedefault=True, nohash=True, desc='BLAS threads')


class _DenoiseBoldOutputSpec(TraitedSpec):
    bold_file = File(exists=True, desc='cleaned in-mask voxels, (n_kept, n_voxels) .npy')
    spec_file = File(exists=True, desc="the run's CleanSpec (.npz), for its D")


class DenoiseBold(SimpleInterface):
    """Read a run's BOLD once, then clean it with its confounds and sample mask."""

    input_spec = _DenoiseBoldInputSpec
    output_spec = _DenoiseBoldOutputSpec

    def _run_interface(self, runtime):
        plan, cwd = self.inputs.run_plan, Path(runtime.cwd)
        bold = Path(self.inputs.bold_file)
        spec = clean_spec_for_run(
            bold, strategy=self.inputs.confounds_strategy, t_r=plan['RepetitionTime'],
            n_vols=plan['n_vols'], drop_volumes=tuple(plan['drop_volumes']),
            high_pass=self.inputs.high_pass,
        )  # fmt: skip
        self._results['spec_file'] = str(save_clean_spec(cwd / 'clean_spec.npz', spec))
        with limited_threads(self.inputs.n_threads) as threads:
            record_threads(cwd, threads)
            clean_bold(bold, nib.load(self.inputs.mask_file), spec, cwd / 'bold_clean.npy',
                       smoothing_fwhm=self.inputs.smoothing_fwhm)  # fmt: skip
        self._results['bold_file'] = str(cwd / 'bold_clean.npy')
        return runtime


class _StackRunsInputSpec(BaseInterfaceInputSpec):
    bold_files = traits.List(File(exists=True), mandatory=True, desc='in run order')


class _StackRunsOutputSpec(TraitedSpec):
    stacked_file = File(exists=True, desc='(T, n_voxels) .npy, unit-norm columns')
    silent_file = File(exists=True, desc='(n_voxels,) bool .npy: all-zero voxels, left out')


class StackRuns(SimpleInterface):
    """Stack a subject's cleaned runs of one task in time."""

    input_spec = _StackRunsInputSpec
    output_spec = _StackRunsOutputSpec

    def _run_interface(self, runtime):
        out, silent = Path(runtime.cwd) / 'bold_stacked.npy', Path(runtime.cwd) / 'silent.npy'
        stack_runs([Path(p) for p in self.inputs.bold_files], out, silent_path=silent)
        self._results['stacked_file'] = str(out)
        self._results['silent_file'] = str(silent)
        return runtime


class _CoupleLayerInputSpec(BaseInterfaceInputSpec):
    sync_files = traits.List(File(exists=True), mandatory=True,
                             desc='desc-sync tables of every run (any layers)')  # fmt: skip
    run_names = traits.List(traits.Str, mandatory=True, desc='runs in stacking order')
    spec_files = traits.List(File(exists=True), mandatory=True, desc='CleanSpec per run')
    stacked_file = File(exists=True, mandatory=True)
    silent_file = File(exists=True, mandatory=True, desc='voxels left out (StackRuns)')
    mask_file = File(exists=True, mandatory=True)
    layer = traits.Str(mandatory=True, desc='module name')
    alpha = traits.Either(None, traits.Float, usedefault=True, desc='None: auto')
    n_nulls = traits.Int(0, usedefault=True)
    seed = traits.Int(0, usedefault=True)
    reference_networks = traits.Str('auto', usedefault=True, desc='--reference-networks')
    # where and how fast it runs, not what it computes: a rerun with more threads resumes
    device = traits.Enum('auto', 'cpu', 'cuda', usedefault=True, nohash=True)
    n_threads = traits.Int(1, usedefault=True, nohash=True, desc='solver threads')
    sidecar = traits.Dict(desc='settings every sidecar records')
    sources = traits.List(traits.Str, desc='BIDS URIs of the BOLD, masks and confounds')
    output_dir = traits.Str(mandatory=True, desc='OUTPUT_DIR, for the URIs of the sync tables')


class _CoupleLayerOutputSpec(TraitedSpec):
    map_files = traits.List(File(exists=True), desc='gzipped NIfTI: coef, then z with nulls')
    sidecar_files = traits.List(File(exists=True), desc='their sidecars (JSON)')
    stats = traits.List(traits.Str, desc="each map's stat")
    network_stats_file = File(exists=True, desc='annotation statistic of the real and null maps')


class CoupleLayer(SimpleInterface):
    """Solve one layer's FBNs (and nulls) and save the maps and sidecars in the node folder."""

    input_spec = _CoupleLayerInputSpec
    output_spec = _CoupleLayerOutputSpec

    def _run_interface(self, runtime):
        inputs, cwd = self.inputs, Path(runtime.cwd)
        tables, members, clusters, sync_sources = read_sync_tables(
            [Path(p) for p in inputs.sync_files], inputs.run_names, inputs.layer,
            Path(inputs.output_dir),
        )  # fmt: skip
        specs = [load_clean_spec(Path(p)) for p in inputs.spec_files]
        silent = np.load(inputs.silent_file)
        mask = nib.load(inputs.mask_file)
        # the voxels the annotation counts: in the mask, not left out for lack of signal
        inside = np.asarray(mask.dataobj) > 0
        inside[inside] = ~silent
        reference = load_reference_networks(inputs.reference_networks, mask, mask=inside)
        S = PagedArray(inputs.stacked_file)  # read in voxel chunks, little of it resident
        with limited_threads(inputs.n_threads) as threads:
            record_threads(cwd, threads)
            fit = fit_layer(
                tables, specs, S, alpha=inputs.alpha, n_nulls=inputs.n_nulls, seed=inputs.seed,
                device=_solver_device(inputs.device), n_threads=inputs.n_threads,
                networks=reference.in_mask(inside), annotated=~silent,
            )  # fmt: skip
        del S
        if fit.seconds_per_null is not None:
            LOGGER.info('%s: %d nulls, %.2f s per null', inputs.layer, inputs.n_nulls,
                        fit.seconds_per_null)  # fmt: skip
        units = clusters['UnitIndices']
        sidecar = coef_sidecar(fit, specs, clusters=clusters, layer=inputs.layer,
                               settings=dict(inputs.sidecar),
                               sources=[*inputs.sources, *sync_sources])  # fmt: skip
        sidecar |= single_unit_collinearity(members, specs, clusters['UnitColumns'])
        sidecar['VoxelsWithoutSignal'] = int(silent.sum())
        maps, sidecars, stats = [], [], []
        for stat, data, extra in _stat_maps(fit, specs, inputs.n_nulls):
            maps.append(cwd / f'stat-{stat}.nii.gz')
            data = np.where(silent[None, :], np.float32(np.nan), data)  # left out, as outside
            maps[-1].write_bytes(boldmap_bytes(data, mask, stat))
            sidecars.append(cwd / f'stat-{stat}.json')
            sidecars[-1].write_text(json.dumps(sidecar | extra, indent=2, default=str) + '\n')
            stats.append(stat)
        self._results['map_files'] = [str(p) for p in maps]
        self._results['sidecar_files'] = [str(p) for p in sidecars]
        self._results['stats'] = stats
        self._results['network_stats_file'] = str(save_network_stats(
            cwd / 'network_stats.npz', fit, reference, units=units,
            n_annotated=int((~silent).sum()),
        ))  # fmt: skip
        return runtime


def save_network_stats(path: Path, fit: LayerFit, reference, *, units, n_annotated) -> Path:
    """Save what the annotation node needs of the real and null maps (not the null maps)."""
    n_nulls = 0 if fit.max_null is None else len(fit.max_null)
    max_abs = np.abs(fit.codes).max(axis=1, initial=0.0)[None]
    if n_nulls:
        max_abs = np.concatenate([max_abs, fit.max_null], axis=0)
    np.savez(
        path, statistic=fit.network_stats, subject_statistic=fit.subject_stats,
        max_abs_coef=max_abs, networks=np.array(reference.names),
        units=np.asarray(units), n_nulls=n_nulls, n_annotated=n_annotated,
        reference_checksum=reference.checksum,
    )  # fmt: skip
    return path


class _WriteBoldmapsInputSpec(BaseInterfaceInputSpec):
    map_files = traits.List(File(exists=True), mandatory=True)
    sidecar_files = traits.List(File(exists=True), mandatory=True)
    stats = traits.List(traits.Str, mandatory=True)
    out_paths = traits.Dict(mandatory=True, desc='destination of each stat')


class _WriteBoldmapsOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True))


class WriteBoldmaps(SimpleInterface):
    """Copy a layer's maps and sidecars into OUTPUT_DIR, each whole or not at all."""

    input_spec = _WriteBoldmapsInputSpec
    output_spec = _WriteBoldmapsOutputSpec
    _always_run = True  # OUTPUT_DIR is not the work dir: a removed output is written again

    def _run_interface(self, runtime):
        inputs, written = self.inputs, []
        for data, sidecar, stat in zip(inputs.map_files, inputs.sidecar_files, inputs.stats,
                                       strict=True):  # fmt: skip
            path = Path(inputs.out_paths[stat])
            write_boldmap(path, Path(data).read_bytes(), json.loads(Path(sidecar).read_text()))
            written.append(str(path))
        for stat in set(inputs.out_paths) - set(inputs.stats):
            # a map this run did not make (z without --n-nulls) must not outlive its settings
            stale = Path(inputs.out_paths[stat])
            for path in (stale, sidecar_path(stale)):
                if path.exists():
                    LOGGER.warning('Removing %s: this run made no such map', path.name)
                    path.unlink()
        self._results['out_files'] = written
        return runtime


def single_unit_collinearity(
    member_tables: list[np.ndarray], specs, columns: list[int]
) -> dict[str, Any]:
    """Condition number and VIF of the kept clusters' members as single units (before)."""
    D = clean_dictionary(member_tables, specs)
    alive = np.linalg.norm(D, axis=0) > 0
    vif = np.full(D.shape[1], np.nan)
    vif[alive] = variance_inflation(D[:, alive])
    number = condition_number(D[:, alive])
    return {
        'SingleUnitConditionNumber': number if np.isfinite(number) else None,
        'SingleUnitVarianceInflation': {
            unit_column(int(c)): None if not np.isfinite(v) else float(v)
            for c, v in zip(columns, vif, strict=True)
        },
        'SingleUnitCollinearityDescription': (
            'condition number and variance inflation of the members of the kept clusters '
            '(UnitColumns) as single units, cleaned like the dictionary: what clustering '
            'started from; ConditionNumber and VarianceInflation are those of the clusters'
        ),
    }


def _solver_device(device: str) -> str:
    if device == 'cpu':
        return 'cpu'
    from bids_syncact.core.cnn import resolve_device

    return 'cuda' if resolve_device(device).type == 'cuda' else 'cpu'


def _stat_maps(fit: LayerFit, specs, n_nulls: int):
    yield 'coef', fit.codes, {}
    if fit.z is None:
        return
    shifts_s = (fit.shifts * np.array([s.t_r for s in specs])[None, :]).round(6)
    yield 'z', fit.z, {
        'Description': (
            'z of the empirical one-sided p-value of each coefficient, p = (1 + #{|null| >= |a|})'
            f' / (1 + N) over {n_nulls} circularly shifted dictionaries ('
            + (f'at least {MIN_SHIFT_S:g} s from zero' if MIN_SHIFT_S > 0 else
               'any non-zero shift, drawn uniformly and independently per run')
            + ', the same shifts for all voxels), each cleaned and '
            'solved like the real one at the same alpha; p = 1 is written as the z of '
            '1 - 1/(2(1+N))'
        ),
        'NumberOfNulls': n_nulls,
        'NullShifts': shifts_s.tolist(),
        'NullShiftsUnits': 's, per null and run',
        'MinimumShift': MIN_SHIFT_S,
        'FWELevel': FWE_LEVEL,
        'FWEThreshold': [None if np.isnan(x) else float(x) for x in fit.fwe_threshold],
        'FWEThresholdDescription': (
            'per unit: |coefficient| (stat-coef) that a voxel must strictly exceed to be '
            f'significant family-wise at {FWE_LEVEL:g}: the floor({FWE_LEVEL:g} (N + 1))-th '
            'largest of the N nulls\' largest |coefficient| over voxels'
            + ('' if n_nulls >= fwe_minimum_nulls() else (
                f'; null: {n_nulls} nulls cannot hold the rate, at least '
                f'{fwe_minimum_nulls()} are needed'))
        ),
    }  # fmt: skip


def coef_sidecar(fit: LayerFit, specs, *, clusters, layer, settings, sources) -> dict:
    """Return the sidecar of a layer's coefficient map (DESIGN.md section 5)."""
    units = clusters['UnitIndices']
    selection = fit.alpha_choice.to_sidecar() if fit.alpha_choice is not None else None
    return {
        'Description': (
            f'Functional brain network of each unit cluster of {layer}: volume k is the sparse '
            'code of every voxel on cluster k (members UnitClusters[k], named by its first, '
            "UnitIndices[k]), a_v = argmin 1/2||s_v - D a||^2 + Alpha ||a||_1, D the clusters' "
            'regressors, cleaned, unit-norm columns, runs stacked'
        ),
        'Sources': list(sources),
        'Layer': layer,
        **clusters,
        **settings,
        'Alpha': fit.alpha,
        'AlphaSelection': selection if selection else 'given (--alpha)',
        'ConditionNumber': fit.condition_number if np.isfinite(fit.condition_number) else None,
        'VarianceInflation': [
            None if not np.isfinite(v) else float(v) for v in fit.variance_inflation
        ],
        'ZeroUnits': [int(u) for u, z in zip(units, fit.zero_units, strict=True) if z],
        'VoxelsWithoutSignalDescription': (
            'voxels of the brain mask left out (NaN in the maps, as outside the mask): NaN, '
            'infinite or constant in the kept volumes of a run, or explained there by its '
            'confounds'
        ),
        'Runs': [s.name for s in specs],
        'NumberOfSamples': int(sum(s.n_kept for s in specs)),
        'SamplesPerRun': [s.n_kept for s in specs],
        'ConfoundsPerRun': [s.n_confounds for s in specs],
    }
