"""Nipype interfaces of the stimulus side: features of a stimulus file, and one run synchronized.

They only load, call :mod:`bids_syncact.bids` / :mod:`bids_syncact.core`, and save.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_syncact.bids.cache import Features, read_features
from bids_syncact.bids.derivatives import (
    bids_uri,
    dataset_links,
    sync_path,
    sync_sidecar,
    synchronized_table,
    write_table,
)
from bids_syncact.bids.features import PreparedCNN, stimulus_features
from bids_syncact.bids.unitclusters import layer_clusters
from bids_syncact.core.threads import limited_threads
from bids_syncact.interfaces.threads import record_threads


class _StimulusFeaturesInputSpec(BaseInterfaceInputSpec):
    stimulus = File(exists=True, mandatory=True, desc='movie, clip or image')
    stimulus_sha256 = traits.Str(mandatory=True)
    duration_s = traits.Either(None, traits.Float, usedefault=True, desc='probed length (s)')
    cnn_spec = traits.Dict(mandatory=True, desc='PreparedCNN.to_dict()')
    frame_rate = traits.Either(traits.Float, traits.Enum('native'), mandatory=True)
    frame_fit = traits.Enum('pad', 'crop', 'squash', mandatory=True)
    device = traits.Enum('auto', 'cpu', 'cuda', usedefault=True)
    output_dir = traits.Str(mandatory=True, desc='OUTPUT_DIR (the cache is under features/)')
    n_threads = traits.Int(1, usedefault=True, nohash=True, desc='torch and BLAS threads')


class _StimulusFeaturesOutputSpec(TraitedSpec):
    feature_files = traits.List(File(exists=True), desc='one cached TSV per layer')


class StimulusFeatures(SimpleInterface):
    """Fill (or read) the shared feature cache for one stimulus file and one CNN."""

    input_spec = _StimulusFeaturesInputSpec
    output_spec = _StimulusFeaturesOutputSpec
    # It writes into OUTPUT_DIR, not the work dir: run it every time (a cache hit is a read),
    # so outputs removed since the last run are made again (as niworkflows' DataSink does).
    _always_run = True

    def _run_interface(self, runtime):
        inputs = self.inputs
        with limited_threads(inputs.n_threads) as threads:
            record_threads(Path(runtime.cwd), threads)
            results = stimulus_features(
                PreparedCNN.from_dict(inputs.cnn_spec), Path(inputs.stimulus),
                output_dir=Path(inputs.output_dir), frame_rate=inputs.frame_rate,
                frame_fit=inputs.frame_fit, device=inputs.device,
                stimulus_sha256=inputs.stimulus_sha256, duration_s=inputs.duration_s,
            )  # fmt: skip
        self._results['feature_files'] = [str(path) for _, path in results.values()]
        return runtime


class _SynchronizeRunInputSpec(BaseInterfaceInputSpec):
    run_plan = traits.Dict(mandatory=True, desc="the run's entry of the plan")
    feature_files = traits.List(File(exists=True), mandatory=True,
                                desc='cached features of every stimulus the units are chosen on')  # fmt: skip
    sha256_of = traits.Dict(mandatory=True, desc='sha256 of each stimulus file, by path')
    cnn_spec = traits.Dict(mandatory=True, desc='PreparedCNN.to_dict()')
    max_units = traits.Either(None, traits.Int, usedefault=True, desc='None: all clusters')
    unit_correlation = traits.Float(1.0, usedefault=True, desc='--unit-correlation')
    high_pass = traits.Either(None, traits.Float, usedefault=True, desc='--high-pass (Hz)')
    hrf = traits.Enum('spm', 'glover', mandatory=True)
    sidecar = traits.Dict(desc='settings every sidecar records')
    bids_dir = traits.Str(mandatory=True)
    fmriprep_dir = traits.Str(mandatory=True)
    output_dir = traits.Str(mandatory=True)


class _SynchronizeRunOutputSpec(TraitedSpec):
    sync_files = traits.List(File(exists=True), desc='one desc-sync timeseries TSV per layer')


class SynchronizeRun(SimpleInterface):
    """Cluster the units, put their members on the run's clock, and write the tables."""

    input_spec = _SynchronizeRunInputSpec
    output_spec = _SynchronizeRunOutputSpec
    _always_run = True  # writes into OUTPUT_DIR (see StimulusFeatures)

    def _run_interface(self, runtime):
        inputs, plan = self.inputs, self.inputs.run_plan
        prepared = PreparedCNN.from_dict(inputs.cnn_spec)
        by_layer: dict[str, dict[str, Features]] = defaultdict(dict)
        cache_files: dict[str, dict[str, Path]] = defaultdict(dict)
        for tsv in map(Path, inputs.feature_files):
            meta, features = read_features(tsv)
            by_layer[meta['Layer']][meta['StimulusSha256']] = features
            cache_files[meta['Layer']][meta['StimulusSha256']] = tsv
        output_dir = Path(inputs.output_dir)
        links = dataset_links(Path(inputs.bids_dir), Path(inputs.fmriprep_dir))
        shown = {inputs.sha256_of[p] for p in _stimulus_paths(plan['stimulus'])}
        written = []
        for layer in prepared.layers:
            clusters = layer_clusters(
                by_layer[layer], min_correlation=inputs.unit_correlation,
                max_units=inputs.max_units, hrf=inputs.hrf, high_pass_hz=inputs.high_pass,
            )  # fmt: skip
            table = synchronized_table(plan, by_layer[layer], inputs.sha256_of, clusters.columns,
                                       inputs.hrf)  # fmt: skip
            sources = [bids_uri(plan['files']['preproc_bold'], links),
                       *(f'bids::{cache_files[layer][sha].relative_to(output_dir).as_posix()}'
                         for sha in sorted(shown))]  # fmt: skip
            sidecar = sync_sidecar(plan, cnn=prepared.cnn, layer=layer, clusters=clusters,
                                   sources=sources, settings=dict(inputs.sidecar))  # fmt: skip
            path = sync_path(output_dir, plan['name'], plan['entities'], prepared.cnn, layer)
            written.append(str(write_table(path, table, sidecar)))
        self._results['sync_files'] = written
        return runtime


def _stimulus_paths(stimulus: dict) -> list[str]:
    if stimulus['kind'] == 'movie':
        return [stimulus['path']]
    return [item['path'] for item in stimulus['items']]
