"""What ``bids-syncact-demo`` prints after the app ran: recovery, group labels, label counts.

The planted units are scored on the map of the unit cluster that holds them (``UnitClusters``
of the map's sidecar), signed by the unit's sign in it (``UnitClusterSigns``): no estimator can
split units whose synchronized activations are near-identical (DESIGN.md section 2.4).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np
import pandas as pd

from bids_syncact._demo import recovery as demo_recovery
from bids_syncact.bids.cache import bids_label

SPACE = 'MNI152NLin2009cAsym'
#: Methods of the recovery table: the app, the reference (the same CV-Lasso on the planted units'
#: own regressors only: what an oracle that knew the units could reach), and two baselines.
METHODS = ('FBN (stat-coef)', 'reference: planted only', 'univariate correlation',
           'OLS, all clusters')  # fmt: skip
#: Targets (issue 19): mean r at least this fraction of the reference's, leakage at most this.
TARGET_R_FRACTION, TARGET_LEAKAGE = 0.9, 0.05
#: A labelled cluster whose regressor correlates with a planted unit's above this (|r|, sub-01's
#: runs stacked) is explained by it.
TWIN_CORRELATION = 0.9


def cluster_of(unit: int, sidecar: dict[str, Any]) -> tuple[int, int]:
    """Return the volume of the cluster that holds ``unit``, and the unit's sign in it.

    >>> cluster_of(7, {'UnitClusters': [[3], [9, 7]], 'UnitClusterSigns': [[1], [1, -1]]})
    (1, -1)
    """
    for k, members in enumerate(sidecar['UnitClusters']):
        if unit in members:
            return k, int(sidecar['UnitClusterSigns'][k][members.index(unit)])
    raise LookupError(f'unit {unit} is in no kept cluster')


def group_labels(out: Path, truth: dict) -> dict[int, tuple[str, str, str]]:
    """Return per planted unit its planted network, its cluster's members and group label."""
    layer = bids_label(truth['Layer'])
    path = next(out.glob(f'task-*cnn-{truth["CNN"]}_layer-{layer}_desc-group_annotations.tsv'))
    table = pd.read_csv(path, sep='\t', dtype={'members': str}).drop_duplicates('unit')
    result = {}
    for unit in truth['Units']:
        row = next(r for r in table.itertuples()
                   if int(unit) in [int(m) for m in str(r.members).split(',')])  # fmt: skip
        result[int(unit)] = (truth['Networks'][str(unit)], str(row.members), str(row.label))
    return result


def group_labels_report(out: Path, truth: dict) -> str:
    """Say which planted units' clusters the group level labels with their planted network."""
    labels = group_labels(out, truth)
    lines = [(f'Group-level labels of the planted units\' clusters ({truth["CNN"]} '
             f'{truth["Layer"]}):')]  # fmt: skip
    lines += [f'{unit:>6} planted {planted:<18} cluster {members:<16} labelled {label}'
              for unit, (planted, members, label) in labels.items()]  # fmt: skip
    n_ok = sum(planted == label for planted, _, label in labels.values())
    lines.append(f"{n_ok} of {len(labels)} planted units' clusters carry their planted network")
    return '\n'.join(lines)


def label_counts(out: Path, truth: dict, subject: str) -> dict[str, tuple[int, int, int]]:
    """Return per group annotation table: clusters, labelled ones, and labelled ones unexplained.

    A labelled cluster is explained when it holds a planted unit or its regressor correlates
    above :data:`TWIN_CORRELATION` (in |r|) with a planted unit's.
    """
    from bids_syncact.bids.unitclusters import read_sync_tables
    from bids_syncact.reports.render import natural_key

    func = out / f'sub-{subject}' / 'func'

    def regressors(layer: str) -> tuple[np.ndarray, np.ndarray, dict]:
        paths = sorted(func.glob(f'*_cnn-{truth["CNN"]}_layer-{bids_label(layer)}'
                                 '_desc-sync_timeseries.tsv'))  # fmt: skip
        runs = [p.name.split('_cnn-')[0] for p in paths]
        tables, members, clusters, _ = read_sync_tables(paths, runs, layer, out)
        return np.concatenate(tables), np.concatenate(members), clusters

    _, planted_members, planted_clusters = regressors(truth['Layer'])
    columns = planted_clusters['UnitColumns']
    planted = planted_members[:, [columns.index(u) for u in truth['Units']]]
    counts = {}
    found = out.glob(f'task-*_cnn-{truth["CNN"]}_layer-*_desc-group_annotations.tsv')
    for path in sorted(found, key=lambda p: natural_key(p.name)):
        meta = json.loads(path.with_suffix('.json').read_text())
        table = pd.read_csv(path, sep='\t', keep_default_na=False).drop_duplicates('unit')
        labelled = [k for k, lab in enumerate(table['label']) if lab not in ('none', 'n/a')]
        unexplained = 0
        if labelled:
            reps, _, _ = regressors(meta['Layer'])
            r = np.corrcoef(reps[:, labelled].T, planted.T)[: len(labelled), len(labelled) :]
            for i, k in enumerate(labelled):
                holds = (meta['Layer'] == truth['Layer']
                         and set(meta['UnitClusters'][k]) & set(truth['Units']))  # fmt: skip
                unexplained += not holds and not (np.abs(r[i]) > TWIN_CORRELATION).any()
        counts[bids_label(meta['Layer'])] = (len(table), len(labelled), unexplained)
    return counts


def label_count_report(out: Path, truth: dict, subject: str) -> str:
    """Say how many clusters the group level labels, and how many no planted unit explains."""
    counts = label_counts(out, truth, subject)
    total = sum(c[1] for c in counts.values())
    unexplained = sum(c[2] for c in counts.values())
    lines = [(f'Group-level labels, all layers: {total} of {sum(c[0] for c in counts.values())} '
             f'clusters labelled; {unexplained} of them neither hold a planted unit nor '
             f'correlate above {TWIN_CORRELATION:g} with one')]  # fmt: skip
    lines += [f'  layer {layer}: {n_labelled} of {n} labelled, {n_other} unexplained'
              for layer, (n, n_labelled, n_other) in counts.items()]  # fmt: skip
    return '\n'.join(lines)


def recovery_report(out: Path, root: Path, truth: dict, subjects, task: str) -> str:
    """Score the planted units' clusters' ``stat-coef`` maps against the planted maps.

    Next to them: the reference (the same cross-validated Lasso with a dictionary of only the
    planted units' own regressors) and two baselines on the app's cluster regressors (each
    cluster's correlation map alone; OLS on all clusters), all on the app's cleaned data.
    Numbers are means over subjects (:mod:`bids_syncact._demo.recovery`).
    """
    means, clusters = recovery_table(out, root, truth, subjects, task)
    units, networks = truth['Units'], truth['Networks']
    head = f'{"unit":>6} {"network":<18} {"cluster":<22}' + ''.join(f'| {n:^26}' for n in METHODS)
    lines = [
        (f'Recovery of the planted units ({truth["CNN"]} {truth["Layer"]}) on the map of the '
         f'unit cluster holding each, mean over {len(subjects)} subjects: spatial r, detection '
         'AUC, leakage'),
        (f"  (AUC of |map|: the unit's blob, planted > {demo_recovery.BLOB_LEVEL:g}, against "
         'voxels outside every planted blob; leakage: mean |map| over the other blobs / its own;'
         ' cluster: its members, the named one first, and the smallest |r| between two)'),
        head, f'{"":48}' + '|    r     AUC    leakage   ' * len(METHODS),
    ]  # fmt: skip
    for j, unit in enumerate(units):
        cells = ''.join('| {:6.3f} {:6.3f} {:8.4f}   '.format(*means[n][j]) for n in METHODS)
        lines.append(f'{unit:>6} {networks[str(unit)]:<18} {clusters[j]:<22}' + cells)
    lines.append(f'{"mean":>6} {"":<41}' + ''.join(
        '| {:6.3f} {:6.3f} {:8.4f}   '.format(*means[n].mean(axis=0)) for n in METHODS))  # fmt: skip
    r, leak = means[METHODS[0]][:, 0].mean(), means[METHODS[0]][:, 2].mean()
    reference_r = means[METHODS[1]][:, 0].mean()
    better = all(leak < means[n][:, 2].mean() for n in METHODS[2:])
    met = r >= TARGET_R_FRACTION * reference_r and leak <= TARGET_LEAKAGE and better
    lines.append(
        f"Target: mean r >= {TARGET_R_FRACTION:g} x the reference's, mean leakage <= "
        f'{TARGET_LEAKAGE} and below both baselines: {"met" if met else "NOT met"} (r {r:.3f} '
        f'= {r / reference_r:.3f} x {reference_r:.3f}, leakage {leak:.4f})'
    )
    return '\n'.join(lines)


def recovery_table(
    out: Path, root: Path, truth: dict, subjects, task: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Return per method the ``(n_planted, 3)`` means of r, AUC and leakage, and the clusters.

    The means are over subjects; each planted unit's cluster is text: its members and the
    smallest |r| inside.
    """
    results: dict[str, list] = {name: [] for name in METHODS}
    clusters: list[str] = []
    for sub in subjects:
        maps, planted, clusters = _subject_maps(out, root, truth, sub, task)
        for name, estimate in maps.items():
            results[name].append(demo_recovery.recovery(estimate, planted,
                                                        list(range(len(planted)))))  # fmt: skip
    means = {
        name: np.array([[(x.r, x.auc, x.leakage) for x in sub] for sub in subs]).mean(axis=0)
        for name, subs in results.items()
    }
    return means, clusters


def cleaned_subject(out: Path, root: Path, truth: dict, sub: str, task: str) -> dict[str, Any]:
    """Return a subject's planted-layer data as the app cleaned it.

    Keys: ``meta`` (the stat-coef sidecar), ``coef`` ``(K, V)``, ``S`` ``(T, V)`` the cleaned
    BOLD, runs stacked, ``specs``, ``tables`` (cluster regressors per run), ``members`` (member
    columns per run), ``clusters`` (the sync sidecar's cluster keys), ``planted`` ``(6, V)``.
    """
    from bids_syncact.bids.bold import clean_spec_for_run, intersect_run_masks
    from bids_syncact.bids.runs import clean_bold, stack_runs
    from bids_syncact.bids.unitclusters import read_sync_tables

    layer = bids_label(truth['Layer'])
    func = out / f'sub-{sub}' / 'func'
    coef_path = func / (f'sub-{sub}_task-{task}_space-{SPACE}_cnn-{truth["CNN"]}_layer-{layer}'
                        '_stat-coef_boldmap.nii.gz')  # fmt: skip
    meta = json.loads(coef_path.with_name(coef_path.name[:-7] + '.json').read_text())
    fmriprep = root / 'derivatives' / 'fmriprep' / f'sub-{sub}' / 'func'
    mask = intersect_run_masks(sorted(fmriprep.glob(f'*task-{task}_*_desc-brain_mask.nii.gz')))
    inside = np.asarray(mask.dataobj) > 0
    sync = [func / f'{run}_cnn-{truth["CNN"]}_layer-{layer}_desc-sync_timeseries.tsv'
            for run in meta['Runs']]  # fmt: skip
    tables, members, clusters, _ = read_sync_tables(sync, meta['Runs'], truth['Layer'], out)
    specs = []
    with tempfile.TemporaryDirectory() as tmp:
        for run, path in zip(meta['Runs'], sync, strict=True):
            sync_meta = json.loads(path.with_suffix('.json').read_text())
            bold = next(fmriprep.glob(f'{run}_space-{SPACE}*_desc-preproc_bold.nii.gz'))
            specs.append(clean_spec_for_run(
                bold, strategy=meta['ConfoundsStrategy'], t_r=sync_meta['RepetitionTime'],
                n_vols=len(tables[len(specs)]),
                drop_volumes=tuple(sync_meta['NonSteadyStateVolumes']), high_pass=meta['HighPass'],
            ))  # fmt: skip
            clean_bold(bold, mask, specs[-1], Path(tmp) / f'{run}.npy')
        S = np.array(stack_runs([Path(tmp) / f'{run}.npy' for run in meta['Runs']],
                                Path(tmp) / 'stacked.npy'))  # fmt: skip
    planted_img = root / 'sourcedata' / 'groundtruth' / f'space-{SPACE}_desc-planted_maps.nii.gz'
    return {
        'meta': meta, 'S': S, 'specs': specs, 'tables': tables, 'members': members,
        'clusters': clusters,
        'coef': np.asarray(nb.load(coef_path).dataobj, dtype=np.float64)[inside].T,
        'planted': np.asarray(nb.load(planted_img).dataobj, dtype=np.float64)[inside].T,
    }  # fmt: skip


def reference_maps(data: dict[str, Any], units) -> np.ndarray:
    """Return the reference: the app's CV-Lasso on only ``units``' own regressors ``(n, V)``."""
    from bids_syncact.core.fbn import fit_layer

    own = [data['clusters']['UnitColumns'].index(int(u)) for u in units]
    fit = fit_layer([m[:, own] for m in data['members']], data['specs'],
                    data['S'].astype(np.float32), alpha=None,
                    seed=int(data['meta'].get('RandomSeed', 0)))  # fmt: skip
    return np.asarray(fit.codes, dtype=np.float64)


def _subject_maps(out: Path, root: Path, truth: dict, sub: str, task: str):
    """Return the subject's maps of the planted units by method, the planted maps, the clusters.

    Row j of a map is planted unit j's cluster's, times the unit's sign in it.
    """
    from bids_syncact.core.fbn import clean_dictionary

    data = cleaned_subject(out, root, truth, sub, task)
    meta, S = data['meta'], data['S']
    D = clean_dictionary(data['tables'], data['specs'])
    where = [cluster_of(int(u), meta) for u in truth['Units']]
    rows, signs = [k for k, _ in where], np.array([s for _, s in where], dtype=float)[:, None]
    maps = {
        METHODS[0]: signs * data['coef'][rows],
        METHODS[1]: reference_maps(data, truth['Units']),
        METHODS[2]: signs * demo_recovery.univariate_maps(D, S)[rows],
        METHODS[3]: signs * demo_recovery.ols_maps(D, S)[rows],
    }
    text = [','.join(map(str, meta['UnitClusters'][k])) +
            f' ({meta["UnitClusterMinCorrelation"][k]:.2f})' for k in rows]  # fmt: skip
    return maps, data['planted'], text
