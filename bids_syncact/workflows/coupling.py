"""The brain side of the participant graph and the coupling: only connections.

Per subject and task: the runs' brain masks intersected; per run the BOLD read once and cleaned;
the cleaned runs stacked. Per subject, task, CNN and layer: the FBNs solved (with nulls when
asked) from the runs' synchronized activations, then written to OUTPUT_DIR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_syncact.bids.annotations import annotations_path
from bids_syncact.bids.boldmaps import boldmap_path, common_entities
from bids_syncact.bids.cache import bids_label
from bids_syncact.bids.derivatives import bids_uri, dataset_links
from bids_syncact.bids.discovery import RunPlan, by_subject_and_task
from bids_syncact.bids.features import PreparedCNN
from bids_syncact.config import Config
from bids_syncact.interfaces.annotation import AnnotateLayer
from bids_syncact.interfaces.coupling import (
    BrainMask,
    CoupleLayer,
    DenoiseBold,
    StackRuns,
    WriteBoldmaps,
)
from bids_syncact.workflows.execute import node_threads
from bids_syncact.workflows.stimulus import run_tag, sidecar_settings, subject_tag

#: Bytes per voxel and volume a node holds at most (memmaps counted whole), for Nipype's
#: memory-aware scheduler.
_BYTES_PER_SAMPLE = 4 * 3


def _mask_voxels(plan: RunPlan) -> int:
    """Voxels in the run's brain mask: an upper bound of those in the intersection of runs."""
    return int(np.count_nonzero(np.asarray(nib.load(plan.mask).dataobj)))


def add_coupling_nodes(
    workflow: pe.Workflow,
    config: Config,
    plans: Sequence[RunPlan],
    prepared: Mapping[str, PreparedCNN],
    sync_nodes: Mapping[tuple[str, str, str], list[pe.Node]],
    n_nulls: Mapping[tuple[str, str], int],
) -> None:
    """Connect denoising and coupling to the synchronization nodes of ``workflow``.

    Parameters
    ----------
    workflow : Workflow
        The graph of :func:`~bids_syncact.workflows.stimulus.init_stimulus_wf`.
    config : Config
        The run's configuration.
    plans : sequence of RunPlan
        The runs, in the order ``sync_nodes`` lists them.
    prepared : mapping
        The CNNs, by name.
    sync_nodes : mapping
        :class:`SynchronizeRun` nodes by (subject, task, CNN), one per run.
    n_nulls : mapping
        The nulls of each (subject, task): ``--n-nulls``, or the default where the runs allow.
    """
    coupling = config.coupling
    threads = node_threads(config)
    links = dataset_links(config.inputs.bids_dir, config.inputs.fmriprep_dir)
    for (subject, task), group in by_subject_and_task(plans).items():
        tag = f'task{bids_label(task)}{subject_tag(subject)}'
        size_gb = sum(p.n_vols for p in group) * _BYTES_PER_SAMPLE * _mask_voxels(group[0]) / 1e9
        mask = pe.Node(BrainMask(mask_files=[str(p.mask) for p in group]), name=f'mask_{tag}')
        stack = pe.Node(StackRuns(), name=f'stack_{tag}', mem_gb=size_gb)
        bolds = pe.Node(niu.Merge(len(group)), name=f'bolds_{tag}')
        specs = pe.Node(niu.Merge(len(group)), name=f'specs_{tag}')
        for index, plan in enumerate(group, start=1):
            denoise = pe.Node(
                DenoiseBold(
                    run_plan=plan.to_dict(), bold_file=str(plan.preproc_bold),
                    confounds_file=str(plan.confounds), confounds_strategy=coupling.confounds_strategy,
                    high_pass=coupling.effective_high_pass,
                    smoothing_fwhm=coupling.smoothing_fwhm or None, n_threads=threads,
                ),
                name=f'denoise_{run_tag(plan)}{subject_tag(subject)}',
                mem_gb=size_gb / len(group), n_procs=threads,
            )  # fmt: skip
            workflow.connect([
                (mask, denoise, [('mask_file', 'mask_file')]),
                (denoise, bolds, [('bold_file', f'in{index}')]),
                (denoise, specs, [('spec_file', f'in{index}')]),
            ])  # fmt: skip
        workflow.connect(bolds, 'out', stack, 'bold_files')
        sources = [
            bids_uri(path, links)
            for plan in group for path in (plan.preproc_bold, plan.mask, plan.confounds)
        ]  # fmt: skip
        entities = common_entities([plan.entities for plan in group])
        for cnn, spec in prepared.items():
            synced = sync_nodes[subject, task, cnn]
            tables = pe.Node(niu.Merge(len(synced), ravel_inputs=True),
                             name=f'tables_{bids_label(cnn)}_{tag}')  # fmt: skip
            for index, node in enumerate(synced, start=1):
                workflow.connect(node, 'sync_files', tables, f'in{index}')
            settings = {'CNN': spec.cnn, **sidecar_settings(config, spec), **_settings(config)}
            for layer in spec.layers:
                name = f'{bids_label(cnn)}_{bids_label(layer)}_{tag}'
                couple = pe.Node(
                    CoupleLayer(
                        run_names=[p.name for p in group], layer=layer, alpha=coupling.alpha,
                        n_nulls=n_nulls[subject, task], seed=config.execution.random_seed,
                        reference_networks=coupling.reference_networks,
                        device=config.execution.device, n_threads=threads, sidecar=settings,
                        sources=sources, output_dir=str(config.output_dir),
                    ),
                    # with nulls, a batch of null maps (core/_nullsolve) on top: about 1 GB
                    name=f'couple_{name}', n_procs=threads,
                    mem_gb=size_gb + (1.0 if n_nulls[subject, task] else 0.0),
                )  # fmt: skip
                out_paths = {
                    stat: str(boldmap_path(
                        config.output_dir, entities, space=group[0].space, res=group[0].res,
                        cnn=spec.cnn, layer=layer, stat=stat,
                    ))
                    for stat in ('coef', 'z')
                }  # fmt: skip
                write = pe.Node(WriteBoldmaps(out_paths=out_paths), name=f'write_{name}')
                annotate = pe.Node(
                    AnnotateLayer(
                        reference_networks=coupling.reference_networks,
                        source='bids::' + Path(out_paths['coef']).relative_to(
                            config.output_dir).as_posix(),
                        out_path=str(annotations_path(
                            config.output_dir, entities, space=group[0].space,
                            res=group[0].res, cnn=spec.cnn, layer=layer,
                        )),
                    ),
                    name=f'annotate_{name}',
                )  # fmt: skip
                workflow.connect([
                    (tables, couple, [('out', 'sync_files')]),
                    (specs, couple, [('out', 'spec_files')]),
                    (stack, couple, [('stacked_file', 'stacked_file'),
                                     ('silent_file', 'silent_file')]),
                    (mask, couple, [('mask_file', 'mask_file')]),
                    (couple, write, [('map_files', 'map_files'),
                                     ('sidecar_files', 'sidecar_files'), ('stats', 'stats')]),
                    (couple, annotate, [('map_files', 'map_files'),
                                        ('sidecar_files', 'sidecar_files'), ('stats', 'stats'),
                                        ('network_stats_file', 'network_stats_file')]),
                    (mask, annotate, [('mask_file', 'mask_file')]),
                ])  # fmt: skip


def _settings(config: Config) -> dict:
    """Return what every map's sidecar records about denoising and coupling."""
    coupling = config.coupling
    return {
        'ConfoundsStrategy': coupling.confounds_strategy,
        'HighPass': coupling.effective_high_pass,
        'HighPassDescription': (
            "fMRIPrep's cosine regressors (in the confounds)"
            if coupling.effective_high_pass is None
            else 'discrete cosine high-pass (Hz), nilearn signal.clean'
        ),
        'SmoothingFWHM': coupling.smoothing_fwhm or 0.0,
        'AlphaMode': 'auto' if coupling.alpha is None else 'fixed',
        'Detrend': True,
        'Standardization': 'each column centred and scaled to unit L2 norm per run, runs '
        'stacked and scaled to unit norm again',
    }
