"""``sub-<s>.html``: one subject's plan, timing, activations, FBNs and annotations.

Built from the outputs alone (the sidecars record what ran), so ``--reports-only`` rebuilds it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_syncact.bids.participant_outputs import output_layout
from bids_syncact.reports import figures
from bids_syncact.reports.render import b64, fmt, natural_key, render, sidecar

LOGGER = logging.getLogger('bids_syncact.reports')

#: Units whose variance inflation is above this are flagged (a common rule of thumb).
VIF_LIMIT = 10.0
#: FBNs drawn per layer: the units with the largest summed |coefficient|.
N_STRONGEST = 3


def build_subject_report(output_dir: Path, subject: str, layout=None) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` from the subject's outputs; return its path.

    Raises
    ------
    FileNotFoundError
        When the subject has no synchronized activations in OUTPUT_DIR.
    """
    layout = layout or output_layout(output_dir)
    syncs = layout.get(subject=subject, desc='sync', suffix='timeseries', extension='.tsv')
    if not syncs:
        raise FileNotFoundError(f'no outputs of sub-{subject} in {output_dir}')
    coefs = layout.get(subject=subject, stat='coef', suffix='boldmap', extension='.nii.gz')
    warnings: list[str] = []
    runs = _runs(syncs, warnings)
    layers = [_layer(f, output_dir, warnings) for f in sorted(coefs, key=_order)]
    if not layers:
        warnings.insert(0, 'No FBN maps: the coupling did not finish for this subject (the '
                           "crash files are in the work dir's logs/nipype).")  # fmt: skip
    random = sorted({layer['cnn'] for layer in layers if layer['random']})
    if random:
        warnings.insert(0, f'{", ".join(random)} ran with RANDOM weights (--weights none): its '
                           'units say nothing about vision; for tests only.')  # fmt: skip
    nav = [('warnings', 'Warnings'), ('plan', 'Plan'), ('timing', 'Timing'),
           ('carpet', 'Activations'), ('fbns', 'FBNs')]  # fmt: skip
    return render(
        'subject.html', output_dir / f'sub-{subject}.html', title=f'sub-{subject}',
        subtitle=f'bids-syncact participant report: {len(runs)} run(s), {len(layers)} layer(s)',
        nav=nav, warnings=warnings, runs=runs, layers=layers, vif_limit=fmt(VIF_LIMIT),
    )  # fmt: skip


def _order(bids_file) -> tuple:
    meta = sidecar(bids_file.path)
    return (bids_file.entities.get('task', ''), meta.get('CNN', ''),
            natural_key(meta.get('Layer', '')))  # fmt: skip


def _runs(syncs, warnings: list[str]) -> list[dict[str, Any]]:
    """Return one row per run (its first CNN's first layer gives the plan), with figures."""
    first: dict[str, Any] = {}
    for bids_file in sorted(syncs, key=lambda f: (Path(f.path).name.split('_cnn-')[0], _order(f))):
        name = Path(bids_file.path).name.split('_cnn-')[0]
        first.setdefault(name, bids_file)
    runs = []
    for name, bids_file in first.items():
        meta = sidecar(bids_file.path)
        table = pd.read_csv(bids_file.path, sep='\t')
        times = table['acquisition_time'].to_numpy()
        stimulus = meta.get('Stimulus') or {}
        shown = shown_intervals(stimulus)
        t_r = float(meta.get('RepetitionTime', np.median(np.diff(times))))
        run_end = times[-1] + t_r / 2
        stimulus_end = max((end for _, end in shown), default=0.0)
        if stimulus_end < run_end - t_r:
            warnings.append(f'{name}: the stimulus ends at {stimulus_end:.1f} s, before the '
                            f'run ({run_end:.1f} s): the rest of the run sees a blank screen.')  # fmt: skip
        dropped = meta.get('NonSteadyStateVolumes', [])
        activations = table.drop(columns=['acquisition_time']).to_numpy()
        layer = f'{meta.get("CNN")} {meta.get("Layer")}'
        bold = next((s for s in meta.get('Sources', []) if 'desc-preproc_bold' in s), '')
        runs.append({
            'name': name, 't_r': fmt(t_r), 'n_vols': len(times),
            'timing_source': meta.get('TimingSource'), 'offset': fmt(meta.get('AcquisitionOffset')),
            'dropped': ', '.join(map(str, dropped)) or 'none',
            'stimulus': _stimulus_name(stimulus),
            'onset': fmt(shown[0][0] if shown else None),
            'duration': fmt(stimulus_end - shown[0][0] if shown else None),
            'bold': bold.split('/')[-1],
            'timing_png': b64(figures.timing_figure(times, dropped, shown, t_r, title=name)),
            'carpet_png': b64(figures.carpet_figure(
                activations, times, meta.get('UnitColumns', meta['UnitIndices']),
                title=f'{name}: {layer}')),
        })  # fmt: skip
    return runs


def shown_intervals(stimulus: dict[str, Any]) -> list[tuple[float, float]]:
    """Return when the stimulus was on screen, on the scanner clock (s).

    A movie shows its file from ``start_s`` to its end, from ``onset_s`` on; a sequence shows
    each item from its onset for its duration.

    >>> shown_intervals({'kind': 'movie', 'onset_s': 2.0, 'start_s': 10.0, 'duration_s': 25.0})
    [(2.0, 17.0)]
    >>> shown_intervals({'kind': 'sequence', 'items': [{'onset_s': 1.0, 'duration_s': 2.0}]})
    [(1.0, 3.0)]
    """
    if stimulus.get('kind') == 'sequence':
        return [(float(item['onset_s']), float(item['onset_s']) + float(item['duration_s']))
                for item in stimulus.get('items', [])]  # fmt: skip
    if stimulus.get('duration_s') is None:
        return []
    onset = float(stimulus.get('onset_s', 0.0))
    return [(onset, onset + float(stimulus['duration_s']) - float(stimulus.get('start_s', 0.0)))]


def _stimulus_name(stimulus: dict[str, Any]) -> str:
    if stimulus.get('kind') == 'sequence':
        return f'{len(stimulus.get("items", []))} images or clips'
    return Path(str(stimulus.get('path', ''))).name


def _layer(bids_file, output_dir: Path, warnings: list[str]) -> dict[str, Any]:
    """Return a layer's summary, CV curve, strongest FBNs and annotation table."""
    meta = sidecar(bids_file.path)
    units = meta['UnitIndices']
    members = meta.get('UnitClusters') or [[u] for u in units]
    img = nib.load(bids_file.path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    strength = np.nansum(np.abs(data), axis=(0, 1, 2))
    vif = [np.inf if v is None else v for v in meta.get('VarianceInflation', [])]
    high = [u for u, v in zip(units, vif, strict=False) if v > VIF_LIMIT]
    cnn, layer = meta.get('CNN'), meta.get('Layer')
    if high:
        warnings.append(f'{cnn} {layer}: {len(high)} of {len(units)} unit clusters have a '
                        f'variance inflation above {VIF_LIMIT:g} (their maps depend on which '
                        'other clusters are in the dictionary).')  # fmt: skip
    if meta.get('UnitClusteringNote'):
        warnings.append(f'{cnn} {layer}: {meta["UnitClusteringNote"]}.')
    if meta.get('VoxelsWithoutSignal'):
        warnings.append(f'{cnn} {layer}: {meta["VoxelsWithoutSignal"]} voxels of the brain mask '
                        'had no usable signal (NaN, infinite or constant values) and were left '
                        'out of the maps.')  # fmt: skip
    glass = []
    for k in np.argsort(-strength, kind='stable')[:N_STRONGEST]:
        if strength[k] > 0:
            title = f'{layer} {cluster_name(members[k])}'
            png = figures.glass_brain_figure(nib.Nifti1Image(data[..., k], img.affine), title)
            glass.append({'unit': units[k], 'png': b64(png)})
    selection = meta.get('AlphaSelection')
    alpha_png = None
    if isinstance(selection, dict) and 'grid' in selection:
        alpha_png = b64(figures.alpha_curve_figure(selection['grid'], selection['r2'],
                                                   meta['Alpha'], f'{layer}: alpha by CV'))  # fmt: skip
    annotations = _annotation_rows(bids_file, output_dir, dict(zip(units, vif, strict=False)))
    where = Path(bids_file.path).name.split('_space-')[0].split('_', 1)[-1]  # ses, task, acq
    return {
        'cnn': cnn, 'layer': layer, 'task': where.replace('_', ' '),
        'alpha': fmt(meta.get('Alpha')), 'alpha_mode': meta.get('AlphaMode'),
        'condition': fmt(meta.get('ConditionNumber')), 'n_units': len(units),
        'condition_single': fmt(meta.get('SingleUnitConditionNumber')),
        'n_members': sum(len(m) for m in members),
        'unit_correlation': meta.get('UnitCorrelation', 1.0),
        'n_high_vif': len(high), 'alpha_png': alpha_png, 'glass': glass,
        'annotations': annotations,
        'n_labelled': sum(a['label'] not in ('none', 'n/a') for a in annotations),
        'n_nulls': _n_nulls(bids_file),
        'random': (meta.get('Weights') or {}).get('Kind') == 'none',
    }  # fmt: skip


def cluster_name(members) -> str:
    """Name a unit cluster by its named member and size.

    >>> cluster_name([9, 0, 7]), cluster_name([4])
    ('unit 9 (+2)', 'unit 4')
    """
    extra = len(members) - 1
    return f'unit {members[0]}' + (f' (+{extra})' if extra else '')


def _n_nulls(bids_file) -> int:
    path = Path(bids_file.path.replace('_stat-coef_boldmap.nii.gz', '_annotations.json'))
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text()).get('NumberOfNulls') or 0)


def _annotation_rows(bids_file, output_dir: Path, vif: dict) -> list[dict[str, str]]:
    name = Path(bids_file.path).name.replace('_stat-coef_boldmap.nii.gz', '_annotations.tsv')
    path = Path(bids_file.path).with_name(name)
    if not path.is_file():
        return []
    table = pd.read_csv(path, sep='\t')
    table['label'] = table['label'].astype(object).where(table['label'].notna(), 'n/a')
    rows = []
    for unit, unit_rows in table.groupby('unit', sort=False):
        # the network of largest standardized statistic (the label's, when there is one),
        # else (no nulls) of largest raw statistic
        order = 'statistic_z' if 'statistic_z' in unit_rows else 'statistic'
        best = unit_rows.sort_values(order, ascending=False, kind='stable').iloc[0]
        rows.append({
            'unit': int(unit), 'members': str(best.get('members', unit)),
            'label': str(best['label']), 'best': str(best['network']),
            'p': fmt(best['p']) if 'p' in best else 'n/a', 'enrichment': fmt(best['enrichment']),
            'dice': fmt(best['dice']), 'r': fmt(best['correlation']),
            'vif': fmt(vif.get(int(unit))),
        })  # fmt: skip
    return rows
