"""Unit activations: frames through a CNN in batches, and the units kept (DESIGN.md section 2.1).

A unit is one channel of a layer; its activation for a frame is the spatial mean of the channel's
map. Frames arrive already fitted to the network input (uint8 RGB, see
:func:`bids_syncact.core.video.fitted`); here they are normalised with the DEFAULT weights'
mean and standard deviation and forwarded under :func:`torch.inference_mode`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

import numpy as np
import torch

from bids_syncact.core.cnn import Normalisation, UnitRecorder
from bids_syncact.core.video import BLANK_LEVEL

DEFAULT_BATCH_SIZE = 32


def normalise(images: np.ndarray, norm: Normalisation, device: str | torch.device) -> torch.Tensor:
    """Turn ``(n, size, size, 3)`` uint8 RGB into a normalised ``(n, 3, size, size)`` float batch.

    >>> from bids_syncact.core.cnn import Normalisation
    >>> norm = Normalisation('x', 2, 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    >>> normalise(np.full((1, 2, 2, 3), 255, np.uint8), norm, 'cpu')[0, :, 0, 0].tolist()
    [2.0, 2.0, 2.0]
    """
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    batch = batch.permute(0, 3, 1, 2).float()
    mean = torch.tensor(norm.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(norm.std, device=device).view(1, 3, 1, 1) * 255.0
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def extract_activations(
    frames: Iterable[tuple[float, np.ndarray]],
    recorder: UnitRecorder,
    norm: Normalisation,
    *,
    device: str | torch.device = 'cpu',
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Forward fitted frames in batches and return every unit's activation per frame.

    Parameters
    ----------
    frames : iterable of (float, ndarray)
        ``(time_s, image)`` with images ``(size, size, 3)`` uint8, fitted to the input.
    recorder : UnitRecorder
        Hooks on the model's layers (entered as a context manager here).
    norm : Normalisation
        Mean and standard deviation of the DEFAULT weights' transforms.
    device : str or torch.device
        Where the model is.
    batch_size : int
        Frames per forward pass.
    progress : callable, optional
        Called with the number of frames after each batch (a tqdm bar's ``update``).

    Returns
    -------
    frame_times : ndarray of shape (n_frames,)
        Seconds from the stimulus start.
    acts : dict of str to ndarray of shape (n_frames, n_channels)
        Spatial means of every channel of each layer (float32).
    """
    times: list[float] = []
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in recorder.layers}
    with recorder, torch.inference_mode():
        for batch in _batches(frames, batch_size):
            batch_times, images = zip(*batch, strict=True)
            means = recorder.forward(normalise(np.stack(images), norm, device))
            for layer, values in means.items():
                chunks[layer].append(values.cpu().numpy())
            times.extend(batch_times)
            if progress is not None:
                progress(len(batch))
    if not times:
        raise ValueError('the stimulus gave no frame')
    return np.asarray(times, dtype=float), {
        layer: np.concatenate(parts).astype(np.float32) for layer, parts in chunks.items()
    }


def blank_activations(
    recorder: UnitRecorder, norm: Normalisation, *, device: str | torch.device = 'cpu'
) -> dict[str, np.ndarray]:
    """Activations for a blank screen: a uniform mid-grey input, ``{layer: (n_channels,)}``."""
    grey = np.full((1, norm.crop_size, norm.crop_size, 3), BLANK_LEVEL, dtype=np.uint8)
    _, acts = extract_activations([(0.0, grey[0])], recorder, norm, device=device)
    return {layer: values[0] for layer, values in acts.items()}


def select_units(acts: Sequence[np.ndarray], max_units: int | None) -> np.ndarray:
    """Channel indices of the units with the largest activation variance, ties by index.

    Parameters
    ----------
    acts : sequence of ndarray of shape (n_frames_i, n_channels)
        Activations over every stimulus the units are chosen on (frames pooled).
    max_units : int or None
        How many to keep; None keeps all.

    Returns
    -------
    ndarray of int, ascending

    Examples
    --------
    >>> acts = np.array([[0.0, 5, 1, 1], [2, 5, 3, -1]])  # variances 1, 0, 1, 1
    >>> select_units([acts], 2).tolist(), select_units([acts], None).tolist()
    ([0, 2], [0, 1, 2, 3])
    """
    pooled = np.concatenate([np.asarray(a, dtype=np.float64) for a in acts], axis=0)
    variance = pooled.var(axis=0)
    order = np.lexsort((np.arange(variance.size), -variance))  # largest first, then index
    return np.sort(order if max_units is None else order[:max_units])
