"""The stimulus side of the participant graph: features once per stimulus, sync per run.

``init_stimulus_wf`` only connects nodes: one :class:`StimulusFeatures` node per distinct
stimulus file (by content) and CNN, shared by every run and subject that showed it; per subject,
task and CNN a merge of the feature files the units are chosen on; per run and CNN one
:class:`SynchronizeRun` node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_syncact import __version__
from bids_syncact.bids.cache import bids_label, file_sha256
from bids_syncact.bids.discovery import RunPlan, by_subject_and_task
from bids_syncact.bids.features import PreparedCNN
from bids_syncact.bids.unitclusters import LINKAGE
from bids_syncact.config import Config
from bids_syncact.interfaces.stimulus import StimulusFeatures, SynchronizeRun
from bids_syncact.workflows.execute import node_threads


def stimulus_hashes(plans: Sequence[RunPlan]) -> dict[str, str]:
    """sha256 of every stimulus file the runs show, by path (each file read once)."""
    hashes: dict[str, str] = {}
    for plan in plans:
        for path in plan.stimulus.files:
            if str(path) not in hashes:
                hashes[str(path)] = file_sha256(path)
    return hashes


def _durations(plans: Sequence[RunPlan]) -> dict[str, float]:
    return {
        str(plan.stimulus.path): plan.stimulus.movie.duration_s
        for plan in plans
        if plan.stimulus.kind == 'movie' and plan.stimulus.movie is not None
    }


def init_stimulus_wf(
    config: Config,
    plans: Sequence[RunPlan],
    prepared: Mapping[str, PreparedCNN],
    sha256_of: Mapping[str, str],
    *,
    name: str = 'syncact_participant_wf',
) -> tuple[pe.Workflow, dict[tuple[str, str, str], list[pe.Node]]]:
    """Connect the feature and synchronization nodes of ``plans`` (features only on request).

    Parameters
    ----------
    config : Config
        The run's configuration.
    plans : sequence of RunPlan
        The runs discovered.
    prepared : mapping
        The CNNs, checked in the parent, by name.
    sha256_of : mapping
        sha256 of each stimulus file, by path (:func:`stimulus_hashes`).
    name : str
        Workflow name (its folder in the work dir).

    Returns
    -------
    workflow : Workflow
    sync_nodes : dict
        The :class:`SynchronizeRun` nodes by (subject, task, CNN), one per run in the order of
        ``plans`` (empty with ``--features-only``).
    """
    workflow = pe.Workflow(name=name, base_dir=str(config.execution.work_dir))
    # --omp-nthreads (at most the pool): torch and BLAS inside the node, and what the
    # scheduler reserves for it
    threads = node_threads(config)
    durations = _durations(plans)
    first_path = {sha: path for path, sha in reversed(list(sha256_of.items()))}
    features: dict[tuple[str, str], pe.Node] = {}
    sync_nodes: dict[tuple[str, str, str], list[pe.Node]] = defaultdict(list)
    for cnn, spec in prepared.items():
        for sha, path in sorted(first_path.items()):
            node = pe.Node(
                StimulusFeatures(
                    stimulus=path, stimulus_sha256=sha, duration_s=durations.get(path),
                    cnn_spec=spec.to_dict(), frame_rate=config.stimulus.frame_rate,
                    frame_fit=config.stimulus.frame_fit, device=config.execution.device,
                    output_dir=str(config.output_dir), n_threads=threads,
                ),
                name=f'features_{bids_label(cnn)}_{sha[:8]}', n_procs=threads,
            )  # fmt: skip
            features[cnn, sha] = node
            workflow.add_nodes([node])
    if config.cnn.features_only:
        return workflow, {}

    for (subject, task), group in by_subject_and_task(plans).items():
        shas = sorted({sha256_of[p] for plan in group for p in _paths(plan)})
        for cnn, spec in prepared.items():
            merge = pe.Node(
                niu.Merge(len(shas), ravel_inputs=True),
                name=f'merge_{bids_label(cnn)}_task{bids_label(task)}{subject_tag(subject)}',
            )
            for index, sha in enumerate(shas, start=1):
                workflow.connect(features[cnn, sha], 'feature_files', merge, f'in{index}')
            for plan in group:
                sync = pe.Node(
                    SynchronizeRun(
                        run_plan=plan.to_dict(),
                        sha256_of={p: sha256_of[p] for p in _paths(plan)},
                        cnn_spec=spec.to_dict(), max_units=config.cnn.max_units,
                        unit_correlation=config.cnn.unit_correlation,
                        high_pass=config.coupling.effective_high_pass,
                        hrf=config.stimulus.hrf, sidecar=sidecar_settings(config, spec),
                        bids_dir=str(config.inputs.bids_dir),
                        fmriprep_dir=str(config.inputs.fmriprep_dir),
                        output_dir=str(config.output_dir),
                    ),
                    name=f'sync_{bids_label(cnn)}_{run_tag(plan)}{subject_tag(subject)}',
                )  # fmt: skip
                workflow.connect(merge, 'out', sync, 'feature_files')
                sync_nodes[subject, task, cnn].append(sync)
    return workflow, dict(sync_nodes)


def subject_tag(subject: str) -> str:
    """Suffix of every per-subject node name: failures are reported by subject from it."""
    return f'__sub{subject}'


def run_tag(plan: RunPlan) -> str:
    """Return the run's name as a node-name part (alphanumeric, without the subject)."""
    return bids_label(plan.name.split('_', 1)[1] if '_' in plan.name else plan.name)


def _paths(plan: RunPlan) -> list[str]:
    return [str(path) for path in plan.stimulus.files]


def sidecar_settings(config: Config, spec: PreparedCNN) -> dict[str, Any]:
    """Return what every sidecar of this CNN records about how its numbers were made."""
    import nilearn
    import numpy
    import torch
    import torchvision

    return {
        'Weights': spec.weights_description,
        'FrameRate': config.stimulus.frame_rate,
        'FrameFit': config.stimulus.frame_fit,
        'HRF': config.stimulus.hrf,
        'MaxUnits': 'all' if config.cnn.max_units is None else config.cnn.max_units,
        'UnitSelection': (
            "clusters whose named member has the largest activation variance over the task's "
            'stimuli, ties by index'
        ),
        'UnitCorrelation': config.cnn.unit_correlation,
        'UnitClustering': (
            'single units'
            if config.cnn.unit_correlation >= 1
            else f"{LINKAGE} linkage on 1 - |r| cut at 1 - UnitCorrelation; r between channels' "
            'activations held at FrameRate, HRF-convolved on a 1 s grid over each stimulus '
            "file's own duration, DCT high-passed, standardized per file, files in sha256 "
            "order; representative: the mean of the members' sign-aligned activations, each "
            'divided by its SD'
        ),
        'FeatureSettings': dict(spec.settings),
        'RandomSeed': config.execution.random_seed,
        'SoftwareVersions': {
            'bids-syncact': __version__,
            'torch': torch.__version__,
            'torchvision': torchvision.__version__,
            'nilearn': nilearn.__version__,
            'numpy': numpy.__version__,
        },
    }
