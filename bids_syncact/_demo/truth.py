"""Planted ground truth of the demo, computed without :mod:`bids_syncact.core`.

Its own forward pass of a seeded AlexNet (weights saved for the app to reuse), its own canonical
HRF and its own sampling at the true acquisition times: a timing bug in the app cannot cancel out
against the same bug here. The constants are fixed by design (issue 3), not tuned to make a later
stage pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import gamma

#: ImageNet normalisation of torchvision's classification weights (written out, not imported).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BLANK_RGB = 128  # the mid-grey screen before and after the movie


@dataclass(frozen=True)
class TruthSpec:
    """The planted effect; fixed constants of the demo."""

    layer: str = 'features.1'
    """AlexNet module whose output (post-ReLU) holds the planted units. In deeper layers of
    this seeded network no six units have identifiable maps (variance inflation above 10)."""
    n_units: int = 6
    candidates: int = 64
    """Units are chosen among the ``candidates`` of largest activation variance: the units the
    app keeps at its default ``--max-units 64``."""
    pair_r: tuple[float, float] = (0.5, 0.8)
    """|r| of the collinear pair of planted units (HRF-convolved, high-passed)."""
    networks: tuple[str, ...] = ('Visual', 'DefaultMode', 'FrontoParietal', 'SomatomotorDorsal',
                                 'CinguloOpercular', 'DorsalAttention')  # fmt: skip
    """Seitzman 2018 network of each planted unit, in order."""
    peak_psc: float = 1.5
    """Effect at a blob centre (% signal change) for a regressor at its peak."""
    noise_psc: float = 1.0
    """White noise (% of the voxel's baseline, standard deviation)."""
    motion_psc: float = 0.5
    wm_psc: float = 0.5
    drift_psc: float = 1.0
    blob_sigma_mm: float | None = None
    """Width (s.d., mm) of each blob; None: the ROI's own radius in the atlas (5 mm)."""
    sample_hz: float = 4.0
    """Frames forwarded per second (the frame on screen at each tick, held until the next)."""
    dt: float = 0.05
    """Fine grid of the HRF convolution (s)."""
    seed: int = 0


def seeded_alexnet(seed: int):
    """AlexNet with torchvision's random initialisation under ``torch.manual_seed(seed)``."""
    import torch
    from torchvision.models import alexnet

    torch.manual_seed(seed)
    return alexnet(weights=None).eval()


def _input_tensor(frames: list[np.ndarray]):
    """Letterbox each frame to a square on mid-grey, resize to 224, normalise: (n, 3, 224, 224)."""
    import torch

    batch = []
    for frame in frames:
        height, width = frame.shape[:2]
        side = max(height, width)
        square = np.full((side, side, 3), BLANK_RGB, dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = frame
        resized = np.asarray(Image.fromarray(square).resize((224, 224), Image.BILINEAR))
        batch.append((resized.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD)
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())


def layer_activations(model, frames: list[np.ndarray], layer: str, batch: int = 32) -> np.ndarray:
    """Spatial mean of every channel of ``layer``'s output: ``(n_frames, n_channels)``."""
    import torch

    captured = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.mean((2, 3))))
    try:
        with torch.inference_mode():
            for start in range(0, len(frames), batch):
                model(_input_tensor(frames[start : start + batch]))
    finally:
        handle.remove()
    return torch.cat(captured).numpy().astype(np.float64)


def spm_hrf(dt: float, length_s: float = 32.0) -> np.ndarray:
    """SPM's canonical HRF (peak 6 s, undershoot 16 s, ratio 1/6), sampled every ``dt`` s."""
    t = np.arange(0, length_s, dt)
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0
    return hrf / hrf.sum()


def regressors(
    acts: np.ndarray, blank: np.ndarray, *, tick_hz: float, onset_s: float, acq_times: np.ndarray,
    dt: float,
) -> np.ndarray:  # fmt: skip
    """Hold each tick's activation, blank outside the movie, convolve with the HRF, sample.

    Returns ``(n_vols, n_units)`` at the acquisition times (dummies included).
    """
    grid = np.arange(min(0.0, onset_s) - 32.0, acq_times[-1] + dt, dt)
    movie_t = grid - onset_s
    tick = np.floor(movie_t * tick_hz + 1e-9).astype(int)
    shown = (tick >= 0) & (tick < len(acts))
    neural = np.where(shown[:, None], acts[np.clip(tick, 0, len(acts) - 1)], blank[None, :])
    hrf = spm_hrf(dt)
    conv = np.stack([np.convolve(col, hrf)[: len(grid)] for col in neural.T], axis=1)
    return np.stack([np.interp(acq_times, grid, col) for col in conv.T], axis=1)


def variance_inflation(corr: np.ndarray) -> np.ndarray:
    """VIF of each variable from their correlation matrix: the diagonal of its inverse."""
    return np.diag(np.linalg.inv(corr))


def choose_units(regs: np.ndarray, n_units: int, pair: tuple[float, float]) -> list[int]:
    """Pick planted units among candidates (columns of ``regs``, most variable first).

    Deterministic: the most variable unit; then the first candidate whose regressor correlates
    with it within ``pair`` (|r|), so the dictionary holds collinear planted units; then, one at
    a time, the candidate that keeps the largest variance inflation factor of the chosen smallest,
    so that every planted map stays identifiable.

    Parameters
    ----------
    regs : ndarray of shape (n_vols, n_candidates)
        Regressors as the coupling sees them (HRF-convolved, sampled, high-passed).
    n_units : int
        How many to choose.
    pair : (float, float)
        Range of |r| of the collinear pair.

    Returns
    -------
    list of int
        Column indices into ``regs``.
    """
    corr = np.corrcoef(regs.T)
    chosen = [0]
    partners = [j for j in range(1, len(corr)) if pair[0] <= abs(corr[0, j]) <= pair[1]]
    if not partners:
        raise RuntimeError(f'no candidate correlates with the first within |r| in {pair}')
    chosen.append(partners[0])
    while len(chosen) < n_units:
        rest = [j for j in range(len(corr)) if j not in chosen]
        chosen.append(min(rest, key=lambda j: variance_inflation(
            corr[np.ix_([*chosen, j], [*chosen, j])]).max()))  # fmt: skip
    return chosen


def network_maps(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    networks: tuple[str, ...],
    sigma_mm: float | None = None,
) -> np.ndarray:
    """Gaussian blobs on the Seitzman 2018 ROIs of each network: ``(*shape, n_networks)``.

    Each ROI adds a Gaussian of its own radius (or ``sigma_mm``) centred on it; the sum is clipped
    to 1 and scaled so that the grid voxel nearest an ROI centre carries the full effect.
    """
    from nilearn.datasets import fetch_coords_seitzman_2018

    atlas = fetch_coords_seitzman_2018()
    rois = np.column_stack([atlas.rois['x'], atlas.rois['y'], atlas.rois['z']]).astype(float)
    labels = np.asarray(atlas.networks)
    radii = np.asarray(atlas.radius, dtype=float)
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    maps = np.zeros((*shape, len(networks)))
    for k, network in enumerate(networks):
        centres = rois[labels == network]
        if not len(centres):
            raise ValueError(f'no Seitzman ROI in network {network}')
        sigma = radii[labels == network] if sigma_mm is None else np.full(len(centres), sigma_mm)
        d2 = ((xyz[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        blob = np.exp(-d2 / (2 * sigma[None, :] ** 2)).sum(axis=1)
        blob = np.minimum(blob, 1.0)
        maps[..., k] = (blob / blob.max()).reshape(shape)  # the best voxel carries the peak
    return maps


def standardise(x: np.ndarray) -> np.ndarray:
    """Centre each column and scale its largest excursion to 1."""
    x = x - x.mean(axis=0)
    return x / np.abs(x).max(axis=0)


def save_weights(model, path: Path) -> Path:
    """Save the state_dict (loadable with ``torch.load(..., weights_only=True)``)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
