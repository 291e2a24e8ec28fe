"""The group level, in plain Python: group FBNs, their annotation, and brain similarity.

It reads participant outputs only (OUTPUT_DIR). Per task, space, CNN and layer: each subject's
``stat-coef`` map is read once and its in-mask voxels stored in the work dir; per unit the
subjects' maps over the group mask (voxels inside every subject's mask) give a sign-flip group
map with max-|t| FWE, a leave-one-out consistency, the (descriptive) annotation of the group map,
and the group label tested against the group null drawn from the subjects' null annotation
statistics (:mod:`bids_syncact.core.calibration`). Per task: each CNN's brain similarity against
the same draws, in ``similarity.tsv``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_syncact.bids.annotations import NOT_TESTED, annotation_sidecar, write_annotations
from bids_syncact.bids.boldmaps import boldmap_bytes, write_boldmap
from bids_syncact.bids.derivatives import write_table
from bids_syncact.bids.participant_nulls import SubjectNulls, read_subject_nulls
from bids_syncact.bids.participant_outputs import (
    SAME_SETTINGS,
    ParticipantMap,
    collect_participant_maps,
)
from bids_syncact.bids.references import ReferenceNetworks, load_reference_networks
from bids_syncact.bids.unitclusters import CLUSTER_STATS
from bids_syncact.config import Config
from bids_syncact.core.annotation import NO_LABEL, annotate
from bids_syncact.core.calibration import (
    LABEL_LEVEL,
    N_GROUP_DRAWS,
    GroupInference,
    cnn_similarity_null,
    draw_null_indices,
    group_inference,
    subject_inference,
)
from bids_syncact.core.group import (
    N_PERMUTATIONS,
    consistency,
    leave_one_out_consistency,
    sign_flip_group_map,
)
from bids_syncact.core.nulls import FWE_LEVEL
from bids_syncact.core.similarity import correlate_with_accuracy
from bids_syncact.errors import InputDataError, NothingSelectedError
from bids_syncact.reports.render import natural_key

LOGGER = logging.getLogger('bids_syncact.group')


def run_group_level(config: Config) -> int:
    """Run the group level over OUTPUT_DIR's participant outputs.

    Returns
    -------
    int
        The exit code (0); refusals raise :class:`~bids_syncact.errors.SyncActError`.
    """
    groups = select_layers(
        collect_participant_maps(config.output_dir, config.inputs, config.cnn.cnn),
        config.cnn.layers,
    )
    subjects = sorted({m.subject for items in groups.values() for m in items})
    LOGGER.info('Group level over %d subjects: %s', len(subjects), ', '.join(subjects))
    print(f'Group level: {len(subjects)} subjects ({", ".join("sub-" + s for s in subjects)}), '
          f'{len(groups)} layer map(s)')  # fmt: skip
    first = next(iter(groups.values()))[0]
    # read once before any work, so that a bad name, file or TSV is refused at once
    load_reference_networks(config.coupling.reference_networks, nib.load(first.path))
    names = {items[0].sidecar.get('CNN', key[3]) for key, items in groups.items()}
    unknown = sorted(set(config.cnn.cnn_accuracy) - names)
    if unknown:
        LOGGER.warning('--cnn-accuracy names %s, which no participant output has: ignored',
                       ', '.join(unknown))  # fmt: skip
    references: dict[tuple, ReferenceNetworks] = {}
    inferred: dict[str, dict[str, dict[str, GroupInference]]] = {}
    weights: dict[str, dict[str, Any]] = {}
    for key, items in sorted(groups.items(), key=_layer_order):
        task, _, _, cnn, layer = key
        work = config.execution.work_dir / 'group' / '_'.join(str(k) for k in key if k)
        stacked, group_mask, template = stack_subject_maps(items, work)
        grid = (template.shape[:3], np.round(template.affine, 4).tobytes(), group_mask.tobytes())
        if grid not in references:  # once per grid and mask, not per layer
            references[grid] = load_reference_networks(
                config.coupling.reference_networks, template, mask=group_mask
            )
        reference = references[grid]
        nulls = read_subject_nulls(items, reference.name)
        result = group_layer(stacked, reference.in_mask(group_mask), reference.names,
                             seed=config.execution.random_seed)  # fmt: skip
        inference = None
        if nulls is not None:
            indices = draw_null_indices(nulls.n_nulls, seed=config.execution.random_seed)
            inference = group_inference(nulls.statistics, indices)
            result['labels'] = [nulls.networks[b] if ok else NO_LABEL
                                for b, ok in zip(inference.best, inference.labelled, strict=True)]  # fmt: skip
            result['same_label'] = same_subject_label(nulls, inference)
        write_group_layer(
            config.output_dir, items, result, group_mask, template, reference,
            seed=config.execution.random_seed, inference=inference, nulls=nulls,
        )  # fmt: skip
        name = items[0].sidecar.get('CNN', cnn)  # torchvision's name (vgg11_bn, not vgg11bn)
        if inference is not None:
            module = items[0].sidecar.get('Layer', layer)
            inferred.setdefault(task, {}).setdefault(name, {})[module] = inference
        weights[name] = items[0].sidecar.get('Weights', {})
        print(f'  task-{task} cnn-{cnn} layer-{layer}: {group_mask.sum()} voxels, labels '
              f'{_label_counts(result.get("labels"))}')  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    if not inferred:
        LOGGER.warning('The participant level ran with --n-nulls 0: no group labels and no '
                       'brain similarity (both need the subjects\' nulls)')  # fmt: skip
    for task, by_cnn in inferred.items():
        write_similarity(config, task, by_cnn, weights, subjects)
    from bids_syncact.reports.run import group_report

    print(f'Report: {group_report(config.output_dir)}')
    return 0


def select_layers(groups: Mapping[tuple, list[ParticipantMap]],
                  layers: Sequence[tuple[str | None, str]]) -> dict[tuple, list[ParticipantMap]]:  # fmt: skip
    """Keep the layers ``--layers [CNN:]LAYER`` names (all without it).

    Raises
    ------
    NothingSelectedError
        When no participant output has any of them.
    """
    if not layers:
        return dict(groups)
    kept = {
        key: items for key, items in groups.items()
        if any(scope in (None, items[0].sidecar.get('CNN')) and layer == items[0].sidecar.get(
            'Layer') for scope, layer in layers)
    }  # fmt: skip
    if not kept:
        named = ' '.join(f'{scope}:{layer}' if scope else layer for scope, layer in layers)
        raise NothingSelectedError(
            f'--layers {named}: no participant output has these layers; leave --layers out to '
            'take every layer'
        )
    return kept


def stack_subject_maps(
    items: Sequence[ParticipantMap], work: Path
) -> tuple[np.memmap, np.ndarray, nib.Nifti1Image]:
    """Read each subject's 4-D map once; return ``(K, n_subjects, n_group_voxels)`` on disk.

    A subject's mask is where its map is finite in every volume (the participant level writes
    NaN outside the brain mask); the group mask is their intersection.

    Returns
    -------
    stacked : memmap of shape (K, n_subjects, n_voxels)
        In ``work``, float32.
    group_mask : ndarray of bool, shape (X, Y, Z)
    template : Nifti1Image
        The first subject's image (for the grid and header).
    """
    work.mkdir(parents=True, exist_ok=True)
    masks, parts = [], []
    for i, item in enumerate(items):
        img = nib.load(item.path)
        data = np.asarray(img.dataobj, dtype=np.float32)  # the file is read here, once
        if data.ndim == 3:
            data = data[..., None]
        inside = np.isfinite(data).all(axis=3)
        part = work / f'subject{i}.npy'
        np.save(part, np.ascontiguousarray(data[inside].T))  # (K, n_voxels of this subject)
        masks.append(inside)
        parts.append(part)
        del data
    group_mask = np.logical_and.reduce(masks)
    if not group_mask.any():
        raise InputDataError(
            f'the brain masks of {", ".join("sub-" + m.subject for m in items)} share no voxel '
            f'for {items[0].path.name.split("_space-")[0]}: check their fMRIPrep masks'
        )
    n_units = int(np.load(parts[0], mmap_mode='r').shape[0])
    stacked = np.lib.format.open_memmap(
        work / 'stacked.npy', mode='w+', dtype=np.float32,
        shape=(n_units, len(items), int(group_mask.sum())),
    )  # fmt: skip
    for i, (part, inside) in enumerate(zip(parts, masks, strict=True)):
        subject = np.load(part, mmap_mode='r')
        if subject.shape[0] != n_units:
            raise InputDataError(
                f'{items[i].path.name} has {subject.shape[0]} units, {items[0].path.name} '
                f'{n_units}: rerun the participant level of sub-{items[i].subject}'
            )
        stacked[:, i, :] = subject[:, group_mask[inside]]
        del subject
        part.unlink()
    stacked.flush()
    return stacked, group_mask, nib.load(items[0].path)


def group_layer(
    stacked: np.ndarray, networks: np.ndarray, names: Sequence[str], *, seed: int,
    n_permutations: int = N_PERMUTATIONS,
) -> dict[str, Any]:  # fmt: skip
    """Return per unit the group t and FWE maps, the consistency and the group annotation.

    Parameters
    ----------
    stacked : ndarray of shape (K, n_subjects, n_voxels)
    networks : ndarray of shape (n_networks, n_voxels)
        The reference networks over the group mask.
    names : sequence of str
    seed : int
        Seeds the sign flips (the same for every unit).

    Returns
    -------
    dict
        ``t`` and ``logp_fwe`` ``(K, n_voxels)``, ``consistency`` ``(K,)``, ``consistency_n``
        ``(K,)``, ``annotations`` (K descriptive Annotation of the t maps), and the flips
        (``n_flips``, ``exact``, ``smallest_p``).
    """
    n_units, _, n_voxels = stacked.shape
    t = np.empty((n_units, n_voxels), dtype=np.float32)
    logp = np.empty((n_units, n_voxels), dtype=np.float32)
    values, counts, annotations = np.empty(n_units), np.empty(n_units, dtype=int), []
    flips: dict[str, Any] = {'n_flips': 0, 'exact': False, 'smallest_p': float('nan')}
    for k in range(n_units):
        maps = np.asarray(stacked[k])
        group = sign_flip_group_map(maps, n_permutations=n_permutations, seed=seed)
        t[k], logp[k] = group.t, group.logp_fwe
        values[k], counts[k] = consistency(leave_one_out_consistency(maps))
        flips = {'n_flips': len(group.h0_max_t), 'exact': group.exact,
                 'smallest_p': group.smallest_p}  # fmt: skip
        # no t where every subject is zero: no evidence, the same as t = 0 for the top 5%
        annotations.append(annotate(np.nan_to_num(group.t, nan=0.0), networks, names))
    return {'t': t, 'logp_fwe': logp, 'consistency': values, 'consistency_n': counts,
            'annotations': annotations, **flips}  # fmt: skip


def same_subject_label(nulls: SubjectNulls, inference: GroupInference) -> list[int]:
    """Return per cluster how many subjects label it, at their level, with its group network."""
    count = np.zeros(len(inference.best), dtype=int)
    for stats in nulls.statistics:
        subject = subject_inference(stats)
        count += subject.labelled & (subject.best == inference.best)
    return count.tolist()


def write_group_layer(
    output_dir: Path, items: Sequence[ParticipantMap], result: Mapping[str, Any],
    group_mask: np.ndarray, template: nib.Nifti1Image, reference: ReferenceNetworks, *,
    seed: int, inference: GroupInference | None = None, nulls: SubjectNulls | None = None,
) -> None:  # fmt: skip
    """Write the group t and -log10 p(FWE) maps and the group annotations, with sidecars."""
    first = items[0]
    prefix = _group_prefix(first)
    shared = {name: first.sidecar[name] for name in (*SAME_SETTINGS, *CLUSTER_STATS)
              if name in first.sidecar}  # fmt: skip
    sources = [f'bids::{m.path.relative_to(output_dir).as_posix()}' for m in items]
    common = {
        'Sources': sources,
        **shared,
        'Subjects': [m.subject for m in items],
        'GroupMask': 'voxels inside the brain mask of every subject (finite in every map)',
        'GroupMaskVoxels': int(group_mask.sum()),
        'SoftwareVersions': software_versions(),
        'ParticipantSoftwareVersions': first.sidecar.get('SoftwareVersions'),
    }
    test = {
        'Test': (
            "one-sample sign-flip permutation of the subjects' stat-coef maps, two-sided, "
            "max |t| over voxels (as in nilearn's non_parametric_inference); every "
            'distinct flip enumerated when 2^(n-1) <= NumberOfPermutations (exact p), else '
            'seeded random flips with p = (1 + count) / (1 + flips)'
        ),
        'NumberOfPermutations': N_PERMUTATIONS,
        'NumberOfFlips': result['n_flips'],
        'ExactPermutationTest': result['exact'],
        'SmallestPossiblePValue': result['smallest_p'],
        'RandomSeed': seed,
        'FWEReachable': result['smallest_p'] < FWE_LEVEL,
        'FWEReachableDescription': (
            f'with n subjects a sign-flip test has 2^n flips, so its p is at least 1/2^(n-1) '
            f'(two-sided): {FWE_LEVEL:g} cannot be reached below 6 subjects'
        ),
    }
    mask_img = _mask_image(group_mask, template)
    descriptions = {
        't': (
            "one-sample t of the subjects' coefficients, per unit (volume k = unit "
            'UnitIndices[k]); NaN where every subject is zero or outside the group mask'
        ),
        'logp': '-log10 of the family-wise corrected p (max |t| over voxels of each sign flip)',
    }
    for stat, description in descriptions.items():
        sidecar = {'Description': description, **common, **test}
        if stat == 't':
            sidecar |= {
                'Consistency': [_finite(v) for v in result['consistency']],
                'ConsistencyNumberOfSubjects': [int(n) for n in result['consistency_n']],
                'ConsistencyDescription': (
                    "mean over subjects of the Pearson r of a subject's map with the mean map of "
                    "the others, over the group mask; a subject whose map (or the others' mean) "
                    'is constant, as an empty map is, gives NaN and is left out of the mean; '
                    'null when no subject is left'
                ),
            }
        dof = (len(items) - 1,) if stat == 't' else ()
        data = boldmap_bytes(result['t' if stat == 't' else 'logp_fwe'], mask_img, stat, dof)
        write_boldmap(output_dir / f'{prefix}_stat-{stat}_desc-group_boldmap.nii.gz', data,
                      sidecar)  # fmt: skip
    n_nulls = nulls.n_nulls if nulls is not None else []
    annotation_meta = annotation_sidecar(common, reference, 'group t map (stat-t), descriptive',
                                         n_nulls=min(n_nulls, default=0))  # fmt: skip
    annotation_meta['Columns'] |= {
        'consistency': 'leave-one-out consistency of the unit (see the stat-t sidecar)',
        'consistency_n': 'subjects in the consistency',
    }
    per_unit: dict[str, list] = {'consistency': list(result['consistency']),
                                 'consistency_n': [int(n) for n in result['consistency_n']]}  # fmt: skip
    per_network = {}
    if inference is None:
        labels = [NOT_TESTED] * len(result['annotations'])
        annotation_meta['Description'] = (
            "Each cluster's group t map against each reference network, descriptive only: the "
            'participant level ran with --n-nulls 0, so there is no group null and every label '
            'is n/a. ' + annotation_meta['Description'].split('; ', 1)[-1]
        )
    else:
        labels = result['labels']
        per_unit |= {'p': inference.p.tolist(), 'n_subjects_same_label': result['same_label']}
        per_network['statistic_z'] = inference.z
        annotation_meta |= group_null_sidecar(nulls, inference)
        annotation_meta['Columns'] |= {
            'p': '(1 + #{draws >= group statistic}) / (1 + draws): the group null',
            'n_subjects_same_label': 'subjects whose own (subject-level) label is the group '
                                     'label\'s network',
            'statistic_z': "the subjects' standardized statistics of their real maps, averaged",
            'n_top': '|F| of the group t map (descriptive columns from here on)',
        }  # fmt: skip
    write_annotations(
        output_dir / f'{prefix}_desc-group_annotations.tsv', first.sidecar['UnitIndices'],
        result['annotations'], annotation_meta, labels=labels, per_unit=per_unit,
        per_network=per_network, members=first.sidecar['UnitClusters'],
    )  # fmt: skip


def group_null_sidecar(nulls: SubjectNulls, inference: GroupInference) -> dict[str, Any]:
    """Return what the group annotation's sidecar says about its test."""
    return {
        'GroupTest': (
            'Group labels tested against a group null (Stelzer, Chen and Turner 2013, '
            "NeuroImage 65): each subject's statistic of its real map and of each null map, "
            'standardized over its maps per network, is averaged over subjects, max over '
            'networks; each draw picks one null map per subject independently (seeded, the '
            'same draws for every cluster and layer). Label = the network of the group '
            f'statistic when p < {LABEL_LEVEL:g}, else none. This tests the global null (no '
            'subject couples), a fixed-effects question, not population inference (Allefeld, '
            'Gorgen and Haynes 2016, NeuroImage 141): n_subjects_same_label says how many '
            'subjects carry the label themselves. The t-map columns (n_top to correlation) '
            'are descriptive. An empty map counts as the lowest statistic (0) in the averages'
        ),
        'GroupNull': 'one null map per subject per draw, independent across subjects',
        'NumberOfDraws': len(inference.null),
        'NullsPerSubject': nulls.n_nulls,
        'Statistic': nulls.statistic,
        'ReferenceNetworksChecksum': nulls.reference_checksum,
        'BrainSimilarityLayer': float(np.mean(inference.statistic)),
        'BrainSimilarityLayerDescription': (
            'the mean over clusters of their group statistics (before standardization against '
            'the draws; the CNN score in the similarity is)'
        ),
    }


def write_similarity(
    config: Config, task: str, inferred: Mapping[str, Mapping[str, GroupInference]],
    weights: Mapping[str, Mapping[str, Any]], subjects: Sequence[str],
) -> None:  # fmt: skip
    """Print and write each CNN's brain similarity (with two or more, their accuracies)."""
    rows = []
    for cnn, layers in inferred.items():
        result = cnn_similarity_null(layers)
        rows.append({'cnn': cnn, 'similarity': result.score, 'null_low': result.null_low,
                     'null_high': result.null_high, 'best_layer': result.best_layer,
                     'n_units': len(next(iter(layers.values())).statistic)})  # fmt: skip
        print(f'  task-{task} cnn-{cnn}: brain similarity {result.score:.2f} (layer '
              f'{result.best_layer}; null 95% interval {result.null_low:.2f} to '
              f'{result.null_high:.2f})')  # fmt: skip
    if len(rows) >= 2:  # the accuracy comparison needs two or more CNNs
        for row in rows:
            row['imagenet_top1'], row['accuracy_source'] = _accuracy(
                row['cnn'], weights[row['cnn']], config.cnn.cnn_accuracy
            )
    table = pd.DataFrame(rows)
    sidecar: dict[str, Any] = {
        'Description': (
            'Brain similarity of each CNN against the group null: per layer the mean over its '
            'clusters of their group statistics; the max over layers, standardized by the mean '
            'and SD of that same max over the group null draws (the same draws for every '
            'cluster and layer), so 0 in expectation without coupling whatever the number of '
            'layers; and its ImageNet top-1 accuracy (%). A fixed-effects score of the subjects '
            'tested, not a population estimate'
        ),
        'Subjects': list(subjects),
        'Columns': {
            'cnn': 'torchvision architecture',
            'similarity': 'brain similarity, in SDs of its null (0: no coupling)',
            'null_low': '2.5% quantile of the standardized null draws',
            'null_high': '97.5% quantile of the standardized null draws',
            'best_layer': 'the layer (module name) of the max',
            'n_units': 'clusters per layer (--max-units)',
            'imagenet_top1': "ImageNet-1K top-1 accuracy (%): torchvision's weights metadata "
                             '(acc@1) or --cnn-accuracy; n/a for random weights',
            'accuracy_source': 'where the accuracy comes from (the weights enum)',
            'descriptive': 'fewer than 5 CNNs: the correlation is descriptive only',
        },
        'NumberOfDraws': N_GROUP_DRAWS,
        'RandomSeed': config.execution.random_seed,
        'SoftwareVersions': software_versions(),
    }  # fmt: skip
    scored = table.dropna(subset=['imagenet_top1']) if len(rows) >= 2 else table[:0]
    if len(scored) >= 3:
        correlation = correlate_with_accuracy(
            scored['similarity'].to_numpy(),
            scored['imagenet_top1'].to_numpy(dtype=float),
            seed=config.execution.random_seed,
        )
        sidecar['AccuracyCorrelation'] = correlation.to_sidecar()
        table['descriptive'] = correlation.descriptive
    write_table(config.output_dir / f'task-{task}_desc-group_similarity.tsv', table, sidecar)


def _accuracy(cnn: str, weights: Mapping[str, Any], given: Mapping[str, float]
              ) -> tuple[float | None, str]:  # fmt: skip
    if cnn in given:
        return float(given[cnn]), '--cnn-accuracy'
    kind = weights.get('Kind')
    if kind == 'DEFAULT':
        from bids_syncact.core.cnn import imagenet_top1  # torch: only when needed

        return imagenet_top1(cnn, weights['Name']), f'torchvision {weights["Name"]}'
    if kind == 'path':
        LOGGER.warning('%s ran with weights from a file and no --cnn-accuracy %s=ACC: left out '
                       'of the accuracy correlation', cnn, cnn)  # fmt: skip
        return None, 'weights from a file without --cnn-accuracy: excluded'
    return None, 'random weights (--weights none): excluded'


def software_versions() -> dict[str, str]:
    """Return the versions of what the group level ran with."""
    import nilearn
    import scipy

    from bids_syncact import __version__

    return {'bids-syncact': __version__, 'nilearn': nilearn.__version__,
            'numpy': np.__version__, 'scipy': scipy.__version__}  # fmt: skip


def _group_prefix(item: ParticipantMap) -> str:
    parts = [f'task-{item.task}']
    if item.space:
        parts.append(f'space-{item.space}')
    if item.res:
        parts.append(f'res-{item.res}')
    return '_'.join([*parts, f'cnn-{item.cnn}', f'layer-{item.layer}'])


def _layer_order(entry: tuple[tuple, list[ParticipantMap]]) -> tuple:
    """Order layers by task, CNN and module name with numbers by value (features.4 < .11)."""
    key, items = entry
    return key[0], key[3], natural_key(str(items[0].sidecar.get('Layer', key[4])))


def _mask_image(group_mask: np.ndarray, template: nib.Nifti1Image) -> nib.Nifti1Image:
    header = template.header.copy()
    header.set_data_dtype(np.uint8)
    return nib.Nifti1Image(group_mask.astype(np.uint8), template.affine, header)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _label_counts(labels: Sequence[str] | None) -> str:
    if labels is None:
        return 'n/a (no nulls)'
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return ', '.join(f'{label} {n}' for label, n in sorted(counts.items()))
