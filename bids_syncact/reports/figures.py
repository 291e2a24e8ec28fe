"""The reports' figures, drawn with matplotlib and nilearn and returned as PNG bytes.

Every function takes arrays (or one image) and returns the bytes of one PNG, so a report can
embed it; nothing is written and no window is opened (the Agg backend).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

#: Figure width (inches) of the full-width figures; at 100 dpi, 1000 pixels.
WIDTH_IN = 10.0
DPI = 100


def _png(fig) -> bytes:
    stream = io.BytesIO()
    fig.savefig(stream, format='png', dpi=DPI, bbox_inches='tight',
                metadata={'Software': None})  # fmt: skip
    plt.close(fig)
    return stream.getvalue()


def timing_figure(
    acq_times_s: np.ndarray, dropped: Sequence[int], shown: Sequence[tuple[float, float]],
    t_r: float, title: str,
) -> bytes:  # fmt: skip
    """Draw the stimulus on the scanner clock against the volume grid.

    Parameters
    ----------
    acq_times_s : ndarray of shape (n_vols,)
        Acquisition time of every stored volume (s).
    dropped : sequence of int
        Volumes dropped after sampling (non-steady state, dummies).
    shown : sequence of (start, end)
        When the stimulus was on screen, on the scanner clock (s): one interval for a movie,
        one per image or clip of a sequence.
    t_r : float
        Repetition time (s).
    """
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.9))
    kept = np.setdiff1d(np.arange(len(acq_times_s)), np.asarray(dropped, dtype=int))
    ax.vlines(acq_times_s[kept], 0.05, 0.45, color='#4a6fa5', lw=0.6, label='volumes (kept)')
    if len(dropped):
        ax.vlines(acq_times_s[list(dropped)], 0.05, 0.45, color='#c0392b', lw=1.2,
                  label='volumes dropped')  # fmt: skip
    for i, (begin, finish) in enumerate(shown):
        ax.barh(0.75, finish - begin, left=begin, height=0.35, color='#f0b429',
                edgecolor='#8d6e00', lw=0.3, label='stimulus' if i == 0 else None)  # fmt: skip
    end = max([acq_times_s[-1] + t_r / 2, *(finish for _, finish in shown)])
    start = min([0.0, *(begin for begin, _ in shown)])
    ax.set_xlim(start - t_r, end + t_r)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.75], ['scanner', 'movie'])
    ax.set_xlabel('time on the scanner clock (s)')
    ax.set_title(title, fontsize=10, loc='left')
    ax.legend(loc='upper right', fontsize=7, ncols=3, frameon=False, bbox_to_anchor=(1, 1.35))
    for side in ('top', 'right'):
        ax.spines[side].set_visible(False)
    return _png(fig)


def carpet_figure(activations: np.ndarray, acq_times_s: np.ndarray, units: Sequence[int],
                  title: str) -> bytes:  # fmt: skip
    """Draw the synchronized activations ``(n_vols, n_units)`` as a carpet (z-scored units)."""
    values = np.asarray(activations, dtype=np.float64)
    sd = values.std(axis=0)
    z = np.divide(values - values.mean(axis=0), sd, out=np.zeros_like(values), where=sd > 0)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.6))
    extent = (acq_times_s[0], acq_times_s[-1], len(units) - 0.5, -0.5)
    image = ax.imshow(z.T, aspect='auto', cmap='RdBu_r', vmin=-3, vmax=3, extent=extent,
                      interpolation='nearest')  # fmt: skip
    ax.set_xlabel('acquisition time (s)')
    ax.set_ylabel(f'{len(units)} units')
    ax.set_yticks([])
    ax.set_title(title, fontsize=10, loc='left')
    fig.colorbar(image, ax=ax, label='z', fraction=0.02, pad=0.01)
    return _png(fig)


def alpha_curve_figure(grid: Sequence[float], r2: Sequence[float], alpha: float,
                       title: str) -> bytes:  # fmt: skip
    """Draw the cross-validated held-out R² against alpha, the chosen alpha marked."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.semilogx(grid, r2, 'o-', color='#4a6fa5', ms=3)
    ax.axvline(alpha, color='#c0392b', lw=1, ls='--', label=f'chosen {alpha:.3g}')
    ax.set_xlabel('alpha')
    ax.set_ylabel('held-out R²')
    ax.set_title(title, fontsize=9, loc='left')
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


def glass_brain_figure(img: nib.Nifti1Image, title: str, *, symmetric: bool = True) -> bytes:
    """Draw a 3-D map as nilearn's glass brain (NaN as 0)."""
    from nilearn.plotting import plot_glass_brain

    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    clean = nib.Nifti1Image(data, img.affine)
    fig = plt.figure(figsize=(WIDTH_IN / 2, 1.9))
    peak = float(np.abs(data).max()) or 1.0
    plot_glass_brain(clean, figure=fig, title=title, colorbar=True, plot_abs=not symmetric,
                     cmap='RdBu_r' if symmetric else 'hot', vmax=peak,
                     vmin=-peak if symmetric else 0, threshold=peak * 0.1)  # fmt: skip
    return _png(fig)


def bar_figure(values: Mapping[str, float], title: str, ylabel: str) -> bytes:
    """Draw one bar per key (consistency per unit), full width; missing values left empty."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.2))
    names = list(values)
    heights = [values[n] if np.isfinite(values[n]) else 0.0 for n in names]
    ax.bar(range(len(names)), heights, color='#4a6fa5')
    step = max(1, int(np.ceil(len(names) / 40)))
    ax.set_xticks(range(0, len(names), step), names[::step], rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9, loc='left')
    for side in ('top', 'right'):
        ax.spines[side].set_visible(False)
    return _png(fig)


def stacked_labels_figure(counts: Mapping[str, Mapping[str, int]], title: str) -> bytes:
    """Draw, per layer, how many units carry each label (stacked bars)."""
    layers = list(counts)
    labels = [*sorted({label for c in counts.values() for label in c} - {'none'}), 'none']
    fig, ax = plt.subplots(figsize=(WIDTH_IN * 0.6, 3.0))
    bottom = np.zeros(len(layers))
    colours = plt.get_cmap('tab20')
    for i, label in enumerate(labels):
        heights = np.array([counts[layer].get(label, 0) for layer in layers], dtype=float)
        colour = '#cccccc' if label == 'none' else colours(i % 20)
        ax.bar(range(len(layers)), heights, bottom=bottom, label=label, color=colour)
        bottom += heights
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('units')
    ax.set_title(title, fontsize=9, loc='left')
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc='upper left')
    return _png(fig)


def similarity_figure(similarity: Sequence[float], accuracy: Sequence[float],
                      names: Sequence[str]) -> bytes:  # fmt: skip
    """Draw brain similarity against ImageNet top-1 accuracy, one labelled point per CNN."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.scatter(accuracy, similarity, color='#4a6fa5')
    for x, y, name in zip(accuracy, similarity, names, strict=True):
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel('ImageNet top-1 accuracy (%)')
    ax.set_ylabel('brain similarity')
    return _png(fig)
