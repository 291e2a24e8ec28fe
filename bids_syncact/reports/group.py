"""``group.html``: group FBNs, consistency, labels per layer, and similarity against accuracy.

Built from the group outputs alone, so ``--reports-only`` rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_syncact.bids.participant_outputs import output_layout
from bids_syncact.reports import figures
from bids_syncact.reports.render import b64, fmt, natural_key, render, sidecar
from bids_syncact.reports.subject import cluster_name

#: Group FBNs drawn per layer: the units with the highest leave-one-out consistency.
N_STRONGEST = 3


def build_group_report(output_dir: Path, layout=None) -> Path:
    """Write ``OUTPUT_DIR/group.html`` from the group outputs; return its path.

    Raises
    ------
    FileNotFoundError
        When OUTPUT_DIR holds no group map (the group level has not run).
    """
    layout = layout or output_layout(output_dir)
    t_maps = layout.get(desc='group', stat='t', suffix='boldmap', extension='.nii.gz')
    if not t_maps:
        raise FileNotFoundError(f'no group maps in {output_dir}: run the group level first')
    metas = {f.path: sidecar(f.path) for f in t_maps}
    t_maps = sorted(t_maps, key=lambda f: (f.entities.get('task', ''), metas[f.path].get('CNN'),
                                           natural_key(metas[f.path].get('Layer', ''))))  # fmt: skip
    layers, counts = [], {}
    for bids_file in t_maps:
        meta = metas[bids_file.path]
        layers.append(_layer(bids_file, meta))
        name = f'{meta.get("CNN")} {meta.get("Layer")}'
        counts.setdefault(bids_file.entities.get('task'), {})[name] = _label_counts(bids_file)
    first = metas[t_maps[0].path]
    subjects = first.get('Subjects', [])
    label_figures = [
        b64(figures.stacked_labels_figure(by_layer, f'task {task}: units per label, per layer'))
        for task, by_layer in counts.items()
    ]  # fmt: skip
    similarities = _similarity(output_dir, layout, t_maps, metas)
    smallest = first.get('SmallestPossiblePValue')
    return render(
        'group.html', output_dir / 'group.html', title='Group',
        subtitle=f'bids-syncact group report: {len(subjects)} subjects, {len(layers)} layer(s)',
        nav=[('subjects', 'Subjects'), ('labels', 'Labels'), ('fbns', 'Group FBNs'),
             ('similarity', 'Similarity')],
        subjects=subjects, smallest_p=fmt(smallest),
        few_subjects=smallest is not None and smallest >= 0.05, layers=layers,
        label_figures=label_figures, similarities=similarities,
    )  # fmt: skip


def _layer(bids_file, meta: dict[str, Any]) -> dict[str, Any]:
    img = nib.load(bids_file.path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    units = meta['UnitIndices']
    members = meta.get('UnitClusters') or [[u] for u in units]
    consistency = np.array([np.nan if c is None else c for c in meta.get('Consistency', [])])
    glass = []
    # the most consistent units: with few subjects the largest |t| is where three maps happen
    # to agree closely at one voxel, not a network
    for k in np.argsort(-np.nan_to_num(consistency, nan=-np.inf), kind='stable')[:N_STRONGEST]:
        if np.isfinite(consistency[k]):
            title = (f'{meta.get("Layer")} {cluster_name(members[k])}: group t '
                     f'(r {consistency[k]:.2f})')  # fmt: skip
            png = figures.glass_brain_figure(nib.Nifti1Image(data[..., k], img.affine), title)
            glass.append({'unit': units[k], 'png': b64(png)})
    consistency_png = b64(figures.bar_figure(
        {str(u): c for u, c in zip(units, consistency, strict=False)},
        f'{meta.get("Layer")}: leave-one-out consistency per unit', 'mean r',
    ))  # fmt: skip
    finite = [c for c in consistency if np.isfinite(c)]
    return {
        'cnn': meta.get('CNN'), 'layer': meta.get('Layer'),
        'task': bids_file.entities.get('task'), 'n_units': len(units),
        'n_voxels': meta.get('GroupMaskVoxels'), 'glass': glass,
        'consistency_png': consistency_png,
        'median_consistency': fmt(float(np.median(finite))) if finite else 'n/a',
    }  # fmt: skip


def _label_counts(t_map) -> dict[str, int]:
    name = Path(t_map.path).name.replace(
        '_stat-t_desc-group_boldmap.nii.gz', '_desc-group_annotations.tsv'
    )
    path = Path(t_map.path).with_name(name)
    if not path.is_file():
        return {}
    labels = pd.read_csv(path, sep='\t').drop_duplicates('unit')['label'].astype(str)
    return labels.value_counts().to_dict()


def _similarity(output_dir: Path, layout, t_maps, metas) -> list[dict[str, Any]]:
    """Per task: each CNN's brain similarity, and with accuracies the scatter and statistics."""
    sections = []
    for task in sorted({f.entities.get('task') for f in t_maps}):
        tables = layout.get(task=task, desc='group', suffix='similarity', extension='.tsv')
        if tables:
            sections.append(_similarity_table(task, Path(tables[0].path)))
            continue
        sections.append({'task': task, 'rows': [], 'png': None, 'descriptive': False,
                         'caption': 'No brain similarity: the participant level ran with '
                                    '--n-nulls 0, and the similarity is tested against the '
                                    "subjects' nulls."})  # fmt: skip
    return sections


def _similarity_table(task: str, path: Path) -> dict[str, Any]:
    table = pd.read_csv(path, sep='\t')
    meta = json.loads(path.with_suffix('.json').read_text())
    rows = [{'cnn': r['cnn'], 'similarity': fmt(r['similarity']),
             'interval': f"{fmt(r['null_low'])} to {fmt(r['null_high'])}",
             'best_layer': r['best_layer'], 'accuracy': fmt(r.get('imagenet_top1')),
             'source': r.get('accuracy_source', 'one CNN: no comparison')}
            for r in table.to_dict('records')]  # fmt: skip
    correlation = meta.get('AccuracyCorrelation')
    scored = table.dropna(subset=['imagenet_top1']) if 'imagenet_top1' in table else table[:0]
    png, caption, descriptive = None, 'Fewer than 3 CNNs with an accuracy: no correlation.', False
    if correlation:
        caption = (
            f'Pearson r {fmt(correlation["PearsonR"])} (permutation p '
            f'{fmt(correlation["PearsonP"])}, {fmt(correlation["ConfidenceLevel"])} CI '
            f'{_ci(correlation["PearsonCI"])}); Spearman r {fmt(correlation["SpearmanR"])} '
            f'(p {fmt(correlation["SpearmanP"])}, CI {_ci(correlation["SpearmanCI"])}); '
            f'{correlation["NumberOfCNNs"]} CNNs'
        )
        descriptive = bool(correlation.get('Descriptive'))
    if len(scored) >= 2:
        png = b64(figures.similarity_figure(
            scored['similarity'].tolist(), scored['imagenet_top1'].tolist(),
            scored['cnn'].tolist(),
        ))  # fmt: skip
    return {'task': task, 'rows': rows, 'png': png, 'caption': caption,
            'descriptive': descriptive}  # fmt: skip


def _ci(interval) -> str:
    if not interval:
        return 'n/a'
    return f'[{fmt(interval[0])}, {fmt(interval[1])}]'
